// A key: its limits and spend, its usage over a chosen range as charts, its recent events.
import { api } from "../api.js";
import { timeChart } from "../chart.js";
import { field, h, replace } from "../dom.js";
import { eventsTable } from "../eventdetail.js";
import { count, keyState, ms, time, unitName, usd } from "../format.js";
import { deleteKey, editKey, revokeKey } from "../keyactions.js";
import { limitGauges } from "../limits.js";
import { rangeControls, rangeOf } from "../range.js";
import { href, navigate, reload } from "../router.js";

export const title = "Key";
const STEP = { hour: 3600, day: 86400 };

// Every bucket of the range, empty ones as zero, so that the charts show quiet hours too.
function series(buckets, start, end, granularity) {
  const step = STEP[granularity];
  const byStart = new Map(buckets.map((b) => [b.start, b]));
  const rows = [];
  for (let t = Math.floor(start / step) * step; t < end; t += step) rows.push(byStart.get(t) || { start: t });
  const column = (name, empty = 0) => rows.map((r) => r[name] ?? empty);
  return {
    x: column("start"), requests: column("requests"), errors: column("errors"),
    cost: column("costInUsd"), prompt: column("promptTokens"), completion: column("completionTokens"),
    p50: column("latencyP50Ms", null), p99: column("latencyP99Ms", null),
  };
}

function describe(key) {
  const limit = (n, unit) => (n ? `${n} per ${unitName(unit)}` : "none");
  const rows = [
    ["Id", h("code", {}, key.keyId)],
    ["State", h("span", { class: `state ${keyState(key)}` }, keyState(key))],
    key.revokedReason && ["Revoked because", key.revokedReason],
    ["Tags", key.tags.length ? key.tags.map((t) => h("span", { class: "tag" }, t)) : "none"],
    ["Lifetime cost limit", key.costLimitInUsd ? usd(key.costLimitInUsd) : "none"],
    ["Cost limit per window", key.costLimitInUsdOverTime ? `${usd(key.costLimitInUsdOverTime)} per ${unitName(key.costLimitInUsdUnit)}` : "none"],
    ["Rate limit", limit(key.rateLimitOverTime, key.rateLimitUnit)],
    ["Created", time(key.createdAt)],
    ["Updated", time(key.updatedAt)],
    ["Expires", key.expiresAt ? time(key.expiresAt) : "never"],
  ].filter(Boolean);
  return h("dl", { class: "details" }, rows.map(([n, v]) => [h("dt", {}, n), h("dd", {}, v)]));
}

function totals(data) {
  const sum = (values) => values.reduce((a, b) => a + (b || 0), 0);
  const stat = (id, label, value) => h("div", { class: "stat" }, h("span", { class: "stat-label" }, label), h("strong", { id }, value));
  return h("div", { class: "stats" },
    stat("range-requests", "Requests", count(sum(data.requests))),
    stat("range-errors", "Errors", count(sum(data.errors))),
    stat("range-cost", "Cost", usd(sum(data.cost))),
    stat("range-tokens", "Tokens", count(sum(data.prompt) + sum(data.completion))));
}

export async function render(main, { params, query }) {
  const [keyId] = params;
  const range = rangeOf(query, "24h");
  const granularity = query.get("granularity") || range.granularity;
  const go = (changes) => {
    navigate(`/keys/${keyId}`, { ...range.hash, granularity, ...changes });
  };
  const [key, spend] = await Promise.all([api.key(keyId), api.spend(keyId).catch(() => null)]);
  const [usage, page] = await Promise.all([
    api.usage(keyId, { granularity, start: range.start, end: range.end }),
    api.keyEvents(keyId, { start: range.start, end: range.end, limit: 25 }),
  ]);
  const data = series(usage.buckets, range.start, range.end, granularity);

  const bucket = h("select", { name: "granularity" },
    ["hour", "day"].map((g) => h("option", { value: g, selected: g === granularity }, `by ${g}`)));
  bucket.addEventListener("change", () => go({ granularity: bucket.value }));
  const charts = h("div", { class: "charts" });
  replace(main,
    h("p", { class: "crumbs" }, h("a", { href: "#/keys" }, "Keys"), " / ", key.name),
    h("div", { class: "page-head" }, h("h1", {}, key.name || "(no name)"),
      h("div", { class: "buttons" },
        h("button", { type: "button", class: "secondary", onclick: reload }, "Refresh"),
        h("button", { type: "button", class: "secondary", onclick: () => editKey(key, reload) }, "Edit"),
        !key.revoked && h("button", { type: "button", class: "secondary", onclick: () => revokeKey(key, reload) }, "Revoke"),
        h("button", { type: "button", class: "danger", onclick: () => deleteKey(key, () => navigate("/keys")) }, "Delete"))),
    h("div", { class: "columns" },
      h("section", { class: "card", "aria-labelledby": "h-config" }, h("h2", { id: "h-config" }, "Configuration"), describe(key)),
      h("section", { class: "card", "aria-labelledby": "h-spend" }, h("h2", { id: "h-spend" }, "Spend now"),
        limitGauges(key, spend),
        spend && h("p", { class: "hint" }, `Lifetime ${usd(spend.costInUsd)}; in the current window ${usd(spend.costInUsdOverTime)}; ${count(spend.requestsInWindow)} requests in the current rate window.`))),
    h("section", { "aria-labelledby": "h-usage" },
      h("div", { class: "page-head" }, h("h2", { id: "h-usage" }, "Usage"),
        h("div", { class: "filters inline" }, rangeControls(range, (chosen) => navigate(`/keys/${keyId}`, chosen)), field("Buckets", bucket))),
      totals(data), charts),
    h("section", { "aria-labelledby": "h-events" },
      h("div", { class: "page-head" }, h("h2", { id: "h-events" }, "Events in this range"),
        h("a", { href: href("/events", { keyId }) }, "All events of this key")),
      eventsTable(page.events, { withKey: false }),
      page.next && h("p", { class: "hint" }, "First 25 shown; the events page has the rest.")));

  timeChart(charts, "Requests and errors", data.x, [{ label: "requests", values: data.requests }, { label: "errors", values: data.errors }], count, { whole: true });
  timeChart(charts, "Cost", data.x, [{ label: "cost", values: data.cost }], usd);
  timeChart(charts, "Tokens", data.x, [{ label: "prompt", values: data.prompt }, { label: "completion", values: data.completion }], count, { whole: true });
  timeChart(charts, "Latency", data.x, [{ label: "p50", values: data.p50 }, { label: "p99", values: data.p99 }], ms, { sparse: true });
}
