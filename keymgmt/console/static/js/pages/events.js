// Events across keys, filtered, newest first (or by cost), a page at a time.
import { api } from "../api.js";
import { field, h, replace } from "../dom.js";
import { eventsTable } from "../eventdetail.js";
import { count, fromLocalInput } from "../format.js";
import { endOfMinute } from "../range.js";
import { href, navigate } from "../router.js";

export const title = "Events";
const PAGE = 50;
const ORDERS = { newest: { dateOrder: "desc" }, oldest: { dateOrder: "asc" }, dearest: { costOrder: "desc" }, cheapest: { costOrder: "asc" } };
const FILTERS = ["keyId", "tag", "status", "from", "to", "order"];

function request(filters, offset) {
  const body = { limit: PAGE, offset, returnCount: true, ...(ORDERS[filters.order] || ORDERS.newest) };
  if (filters.keyId) body.keyIds = [filters.keyId];
  if (filters.tag) body.tags = [filters.tag];
  if (filters.status) body.status = Number(filters.status);
  if (filters.from) body.start = fromLocalInput(filters.from);
  if (filters.to) body.end = endOfMinute(filters.to);
  return body;
}

export async function render(main, { query }) {
  const filters = Object.fromEntries(FILTERS.map((name) => [name, query.get(name) || ""]));
  const offset = Number(query.get("offset") || 0);
  const go = (changes) => {
    const next = { ...filters, offset, ...changes };
    navigate("/events", Object.fromEntries(Object.entries(next).filter(([, v]) => v !== "" && v !== 0)));
  };
  const input = (name, attrs) => h("input", { name, value: filters[name], ...attrs });
  const order = h("select", { name: "order" }, Object.keys(ORDERS).map((o) => h("option", { value: o, selected: o === (filters.order || "newest") }, `${o} first`)));
  const form = h("form", { class: "filters", role: "search" },
    field("Key id", input("keyId", { type: "search", spellcheck: "false" })),
    field("Tag", input("tag", { type: "search" })),
    field("Status", input("status", { type: "text", inputmode: "numeric", size: "4" })),
    field("From", input("from", { type: "datetime-local" })),
    field("To", input("to", { type: "datetime-local" })),
    field("Order", order),
    h("button", { type: "submit", class: "secondary" }, "Filter"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const data = new FormData(form);
    go({ ...Object.fromEntries(FILTERS.map((n) => [n, String(data.get(n) || "").trim()])), offset: 0 });
  });
  const results = h("div", {}, h("p", {}, "Loading…"));
  replace(main, h("div", { class: "page-head" }, h("h1", {}, "Events")), form, results);

  let page;
  try {
    page = await api.searchEvents(request(filters, offset));
  } catch (error) {
    replace(results, h("p", { class: "error", role: "alert" }, error.message));
    return;
  }
  const { events, count: total } = page;
  replace(results, eventsTable(events),
    h("nav", { class: "pager", "aria-label": "Pages of events" },
      h("button", { type: "button", class: "secondary", disabled: offset === 0, onclick: () => go({ offset: Math.max(0, offset - PAGE) }) }, "Previous"),
      h("span", {}, `${count(total ? offset + 1 : 0)}–${count(offset + events.length)} of ${count(total)}`),
      h("button", { type: "button", class: "secondary", disabled: offset + events.length >= total, onclick: () => go({ offset: offset + PAGE }) }, "Next")));
}
