// The keys that spent most over a range.
import { api } from "../api.js";
import { field, h, replace } from "../dom.js";
import { count, usd } from "../format.js";
import { rangeControls, rangeOf } from "../range.js";
import { href, navigate } from "../router.js";

export const title = "Top keys";

export async function render(main, { query }) {
  const range = rangeOf(query, "30d");
  const limit = query.get("limit") || "10";
  const go = (changes) => { navigate("/top-keys", { ...range.hash, limit, ...changes }); };
  const size = h("select", { name: "limit" }, ["10", "25", "100"].map((n) => h("option", { value: n, selected: n === limit }, n)));
  size.addEventListener("change", () => go({ limit: size.value }));
  const rows = await api.topKeys({ start: range.start, end: range.end, limit });
  const top = rows.length ? rows[0].costInUsd : 0;
  replace(main,
    h("div", { class: "page-head" }, h("h1", {}, "Top keys by spend"),
      h("div", { class: "filters inline" }, rangeControls(range, (chosen) => navigate("/top-keys", { ...chosen, limit })), field("Show", size))),
    h("div", { class: "table-wrap" }, h("table", { class: "top-keys" },
      h("thead", {}, h("tr", {}, ["#", "Key", "Spend", "Requests", "Share of top"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, rows.length ? rows.map((r, i) => h("tr", {},
        h("td", {}, count(i + 1)),
        h("td", {}, h("a", { href: href(`/keys/${r.keyId}`) }, r.name || r.keyId)),
        h("td", {}, usd(r.costInUsd)),
        h("td", {}, count(r.requests)),
        h("td", {}, h("meter", { min: "0", max: String(top || 1), value: String(r.costInUsd), "aria-label": `${usd(r.costInUsd)} of ${usd(top)}` }))))
        : h("tr", {}, h("td", { colspan: "5", class: "muted" }, "No spend in this range."))))));
}
