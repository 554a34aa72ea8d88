// Policies (PII detection and masking): every policy or those with a tag, created, edited and
// deleted in place; one a key still names cannot be deleted, and the dialog says so.
import { api } from "../api.js";
import { confirmAction, openDialog } from "../dialogs.js";
import { field, h, replace, toast } from "../dom.js";
import { time } from "../format.js";
import { policyForm } from "../policyform.js";
import { navigate, reload } from "../router.js";

export const title = "Policies";

function edit(existing) {
  const dialog = openDialog(existing ? `Edit “${existing.name}”` : "New policy",
    policyForm(existing, async (fields) => {
      const saved = existing ? await api.updatePolicy(existing.id, fields) : await api.createPolicy(fields);
      dialog.close();
      toast(existing ? "Policy saved." : `Policy “${saved.name}” created.`);
      reload();
    }));
}

async function remove(policy) {
  const answer = await confirmAction("Delete policy", `Delete “${policy.name}” for good? Keys must not name it.`,
    { action: "Delete", danger: true, run: () => api.deletePolicy(policy.id) });
  if (!answer.confirmed) return;
  toast("Policy deleted.");
  reload();
}

const tags = (list, empty) => (list.length ? list.map((t) => h("span", { class: "tag" }, t)) : h("span", { class: "muted" }, empty));

function row(policy) {
  const rules = Object.entries(policy.config.rules).map(([entity, action]) => `${entity}: ${action}`);
  const patterns = policy.regexConfig.rules.map((r) => `${r.definition}: ${r.action}`);
  return h("tr", {},
    h("td", {}, policy.name),
    h("td", { class: "tags", "data-label": "Tags" }, tags(policy.tags, "")),
    h("td", { class: "tags", "data-label": "Entities" }, tags(rules, "none")),
    h("td", { class: "tags", "data-label": "Patterns" }, tags(patterns, "none")),
    h("td", { "data-label": "Restore" }, policy.restore ? "yes" : "no"),
    h("td", { "data-label": "Updated" }, time(policy.updatedAt)),
    h("td", { class: "row-actions" },
      h("button", { type: "button", class: "link", onclick: () => edit(policy) }, "Edit"),
      h("button", { type: "button", class: "link danger", onclick: () => remove(policy) }, "Delete")));
}

export async function render(main, { query }) {
  const tag = query.get("tag") || "";
  const tagInput = h("input", { type: "search", name: "searchTag", value: tag });
  const search = h("form", { class: "filters", role: "search" },
    field("Tag", tagInput), h("button", { type: "submit", class: "secondary" }, "Search"));
  search.addEventListener("submit", (event) => {
    event.preventDefault();
    const wanted = tagInput.value.trim();
    navigate("/policies", wanted ? { tag: wanted } : undefined);
  });
  const body = h("tbody", {}, h("tr", {}, h("td", { colspan: "7" }, "Loading…")));
  replace(main,
    h("div", { class: "page-head" }, h("h1", {}, title),
      h("button", { type: "button", class: "primary", onclick: () => edit(null) }, "New policy")),
    search,
    h("div", { class: "table-wrap" }, h("table", { class: "policies stack" },
      h("thead", {}, h("tr", {}, ["Name", "Tags", "Entities", "Patterns", "Restore", "Updated", ""].map((c) =>
        h("th", { scope: "col" }, c)))),
      body)));
  const policies = await api.policies(tag ? [tag] : []);
  replace(body, policies.length ? policies.map(row)
    : h("tr", {}, h("td", { colspan: "7", class: "muted" }, tag ? "No policies with this tag." : "No policies yet.")));
}
