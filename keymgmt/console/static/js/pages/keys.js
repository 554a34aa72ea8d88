// Keys: search by name and tag, a page at a time, with spend against each limit.
import { api } from "../api.js";
import { field, h, replace } from "../dom.js";
import { count as formatCount, keyState, time } from "../format.js";
import { createKey, deleteKey, editKey, revokeKey } from "../keyactions.js";
import { limitGauges } from "../limits.js";
import { href, navigate, reload } from "../router.js";

export const title = "Keys";
const PAGE = 20;

async function spendOf(key) {
  try {
    return await api.spend(key.keyId);
  } catch {
    return null;
  }
}

function row(key, spend, reload) {
  const state = keyState(key);
  return h("tr", {},
    h("td", {}, h("a", { href: href(`/keys/${key.keyId}`) }, key.name || "(no name)")),
    h("td", { class: "tags", "data-label": "Tags" }, key.tags.map((t) => h("span", { class: "tag" }, t))),
    h("td", { "data-label": "State" }, h("span", { class: `state ${state}` }, state)),
    h("td", { class: "limits" }, limitGauges(key, spend)),
    h("td", { "data-label": "Created" }, time(key.createdAt)),
    h("td", { class: "row-actions" },
      h("button", { type: "button", class: "link", onclick: () => editKey(key, reload) }, "Edit"),
      !key.revoked && h("button", { type: "button", class: "link", onclick: () => revokeKey(key, reload) }, "Revoke"),
      h("button", { type: "button", class: "link danger", onclick: () => deleteKey(key, reload) }, "Delete")));
}

export async function render(main, { query }) {
  const filters = {
    name: query.get("name") || "", tag: query.get("tag") || "",
    state: query.get("state") || "", offset: Number(query.get("offset") || 0),
  };
  const go = (changes) => { navigate("/keys", clean({ ...filters, ...changes })); };

  const name = h("input", { type: "search", name: "searchName", value: filters.name });
  const tag = h("input", { type: "search", name: "searchTag", value: filters.tag });
  const state = h("select", { name: "searchState" },
    [["", "any"], ["active", "not revoked"], ["revoked", "revoked"]].map(([value, label]) =>
      h("option", { value, selected: value === filters.state }, label)));
  const search = h("form", { class: "filters", role: "search" },
    field("Name contains", name), field("Tag", tag), field("State", state),
    h("button", { type: "submit", class: "secondary" }, "Search"));
  search.addEventListener("submit", (event) => {
    event.preventDefault();
    go({ name: name.value.trim(), tag: tag.value.trim(), state: state.value, offset: 0 });
  });

  const body = h("tbody", {}, h("tr", {}, h("td", { colspan: "6" }, "Loading…")));
  const pager = h("nav", { class: "pager", "aria-label": "Pages of keys" });
  replace(main,
    h("div", { class: "page-head" }, h("h1", {}, "Keys"),
      h("button", { type: "button", class: "primary", onclick: () => createKey(reload) }, "New key")),
    search,
    h("div", { class: "table-wrap" }, h("table", { class: "keys stack" },
      h("thead", {}, h("tr", {}, ["Name", "Tags", "State", "Spend and limits", "Created", ""].map((c) =>
        h("th", { scope: "col" }, c)))),
      body)),
    pager);

  const request = { limit: PAGE, offset: filters.offset, order: "desc", returnCount: true };
  if (filters.name) request.name = filters.name;
  if (filters.tag) request.tags = [filters.tag];
  if (filters.state) request.revoked = filters.state === "revoked";
  const { keys, count } = await api.searchKeys(request);
  const spends = await Promise.all(keys.map(spendOf));
  replace(body, keys.length ? keys.map((k, i) => row(k, spends[i], reload))
    : h("tr", {}, h("td", { colspan: "6", class: "muted" }, "No keys match.")));
  const first = count ? filters.offset + 1 : 0;
  replace(pager,
    h("button", { type: "button", class: "secondary", disabled: filters.offset === 0, onclick: () => go({ offset: Math.max(0, filters.offset - PAGE) }) }, "Previous"),
    h("span", {}, `${formatCount(first)}–${formatCount(filters.offset + keys.length)} of ${formatCount(count)}`),
    h("button", { type: "button", class: "secondary", disabled: filters.offset + keys.length >= count, onclick: () => go({ offset: filters.offset + PAGE }) }, "Next"));
}

function clean(filters) {
  return Object.fromEntries(Object.entries(filters).filter(([, v]) => v !== "" && v !== 0));
}
