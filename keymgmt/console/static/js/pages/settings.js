// Provider settings: every setting, created, edited and deleted in place; secrets never shown
// (the API returns only "****" and the last 4 characters).
import { api } from "../api.js";
import { confirmAction, openDialog } from "../dialogs.js";
import { h, replace, toast } from "../dom.js";
import { time } from "../format.js";
import { reload } from "../router.js";
import { settingForm } from "../settingform.js";

export const title = "Provider settings";

// The setting's own upstream; "default" where the provider's is used.
const where = (s) => s.setting.baseUrl || s.setting.url || s.setting.endpoint || s.setting.resourceName || "default";

function edit(existing) {
  const dialog = openDialog(existing ? `Edit “${existing.name}”` : "New provider setting",
    settingForm(existing, async (fields) => {
      const saved = existing ? await api.updateSetting(existing.id, fields) : await api.createSetting(fields);
      dialog.close();
      toast(existing ? "Setting saved." : `Setting “${saved.name}” created.`);
      reload();
    }));
}

async function remove(setting) {
  // A refusal (409: keys or routes still use it) is shown in the dialog.
  const answer = await confirmAction("Delete setting", `Delete “${setting.name}” for good? Keys must not use it.`,
    { action: "Delete", danger: true, run: () => api.deleteSetting(setting.id) });
  if (!answer.confirmed) return;
  toast("Setting deleted.");
  reload();
}

function row(setting) {
  return h("tr", {},
    h("td", {}, setting.name),
    h("td", { "data-label": "Provider" }, setting.provider),
    h("td", { "data-label": "Upstream", class: "muted" }, where(setting)),
    h("td", { "data-label": "API key" }, setting.setting.apikey || "none"),
    h("td", { class: "tags", "data-label": "Models" },
      setting.allowedModels.length ? setting.allowedModels.map((m) => h("span", { class: "tag" }, m)) : h("span", { class: "muted" }, "all")),
    h("td", { "data-label": "Updated" }, time(setting.updatedAt)),
    h("td", { class: "row-actions" },
      h("button", { type: "button", class: "link", onclick: () => edit(setting) }, "Edit"),
      h("button", { type: "button", class: "link danger", onclick: () => remove(setting) }, "Delete")));
}

export async function render(main) {
  const body = h("tbody", {}, h("tr", {}, h("td", { colspan: "7" }, "Loading…")));
  replace(main,
    h("div", { class: "page-head" }, h("h1", {}, title),
      h("button", { type: "button", class: "primary", onclick: () => edit(null) }, "New setting")),
    h("div", { class: "table-wrap" }, h("table", { class: "settings stack" },
      h("thead", {}, h("tr", {}, ["Name", "Provider", "Upstream", "API key", "Models", "Updated", ""].map((c) =>
        h("th", { scope: "col" }, c)))),
      body)));
  const settings = await api.settings();
  replace(body, settings.length ? settings.map(row)
    : h("tr", {}, h("td", { colspan: "7", class: "muted" }, "No provider settings yet.")));
}
