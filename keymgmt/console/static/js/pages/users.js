// Users: end users found by tag, key or user id, a page at a time, each with its spend against
// its own limits; created, edited and deleted in place.
import { api } from "../api.js";
import { confirmAction, openDialog } from "../dialogs.js";
import { field, h, replace, toast } from "../dom.js";
import { count, keyState, time } from "../format.js";
import { limitGauges } from "../limits.js";
import { navigate, reload } from "../router.js";
import { userForm } from "../userform.js";

export const title = "Users";
const PAGE = 20;

function edit(existing) {
  const dialog = openDialog(existing ? `Edit “${existing.userId}”` : "New user",
    userForm(existing, async (fields) => {
      const saved = existing ? await api.updateUser(existing.id, fields) : await api.createUser(fields);
      dialog.close();
      toast(existing ? "User saved." : `User “${saved.userId}” created.`);
      reload();
    }));
}

async function remove(user) {
  const answer = await confirmAction("Delete user", `Delete “${user.userId}” for good? Its calls are held to their key's limits alone.`,
    { action: "Delete", danger: true, run: () => api.deleteUser(user.id) });
  if (!answer.confirmed) return;
  toast("User deleted.");
  reload();
}

async function spendOf(user) {
  try {
    return await api.userSpend(user.id);
  } catch {
    return null;
  }
}

function row(user, spend) {
  const state = keyState(user);
  return h("tr", {},
    h("td", {}, user.userId),
    h("td", { "data-label": "Name" }, user.name),
    h("td", { class: "tags", "data-label": "Tags" }, user.tags.map((t) => h("span", { class: "tag" }, t))),
    h("td", { "data-label": "Keys" }, count(user.keyIds.length)),
    h("td", { "data-label": "State" }, h("span", { class: `state ${state}` }, state)),
    h("td", { class: "limits" }, limitGauges(user, spend)),
    h("td", { "data-label": "Updated" }, time(user.updatedAt)),
    h("td", { class: "row-actions" },
      h("button", { type: "button", class: "link", onclick: () => edit(user) }, "Edit"),
      h("button", { type: "button", class: "link danger", onclick: () => remove(user) }, "Delete")));
}

export async function render(main, { query }) {
  const filters = {
    tag: query.get("tag") || "", keyId: query.get("keyId") || "", userId: query.get("userId") || "",
    offset: Number(query.get("offset") || 0),
  };
  const go = (changes) => {
    const wanted = { ...filters, ...changes };
    navigate("/users", Object.fromEntries(Object.entries(wanted).filter(([, v]) => v !== "" && v !== 0)));
  };
  const inputs = {
    tag: h("input", { type: "search", name: "searchTag", value: filters.tag }),
    keyId: h("input", { type: "search", name: "searchKeyId", value: filters.keyId }),
    userId: h("input", { type: "search", name: "searchUserId", value: filters.userId }),
  };
  const search = h("form", { class: "filters", role: "search" },
    field("Tag", inputs.tag), field("Key id", inputs.keyId), field("User ID", inputs.userId),
    h("button", { type: "submit", class: "secondary" }, "Search"));
  search.addEventListener("submit", (event) => {
    event.preventDefault();
    go({ ...Object.fromEntries(Object.entries(inputs).map(([name, input]) => [name, input.value.trim()])), offset: 0 });
  });

  const body = h("tbody", {}, h("tr", {}, h("td", { colspan: "8" }, "Loading…")));
  const pager = h("nav", { class: "pager", "aria-label": "Pages of users" });
  replace(main,
    h("div", { class: "page-head" }, h("h1", {}, title),
      h("button", { type: "button", class: "primary", onclick: () => edit(null) }, "New user")),
    search,
    h("div", { class: "table-wrap" }, h("table", { class: "users stack" },
      h("thead", {}, h("tr", {}, ["User ID", "Name", "Tags", "Keys", "State", "Spend and limits", "Updated", ""].map((c) =>
        h("th", { scope: "col" }, c)))),
      body)),
    pager);

  // One more than a page: whether there is a next one (the API gives no count).
  const found = await api.users({
    tags: filters.tag, keyIds: filters.keyId, userIds: filters.userId, offset: filters.offset, limit: PAGE + 1,
  });
  const users = found.slice(0, PAGE);
  const spends = await Promise.all(users.map(spendOf));
  replace(body, users.length ? users.map((u, i) => row(u, spends[i]))
    : h("tr", {}, h("td", { colspan: "8", class: "muted" }, "No users match.")));
  replace(pager,
    h("button", { type: "button", class: "secondary", disabled: filters.offset === 0, onclick: () => go({ offset: Math.max(0, filters.offset - PAGE) }) }, "Previous"),
    h("span", {}, users.length ? `${count(filters.offset + 1)}–${count(filters.offset + users.length)}` : ""),
    h("button", { type: "button", class: "secondary", disabled: found.length <= PAGE, onclick: () => go({ offset: filters.offset + PAGE }) }, "Next"));
}
