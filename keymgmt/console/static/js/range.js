// A time range: a preset ("Last 7 days") or custom from/to in local time, kept in the hash
// as range=7d or range=custom&from=…&to=…, with the bucket size that suits it.
import { field, h } from "./dom.js";
import { fromLocalInput, toLocalInput } from "./format.js";

const DAY = 86400;
export const RANGES = {
  "24h": { label: "Last 24 hours", seconds: DAY },
  "7d": { label: "Last 7 days", seconds: 7 * DAY },
  "30d": { label: "Last 30 days", seconds: 30 * DAY },
  "90d": { label: "Last 90 days", seconds: 90 * DAY },
};
const CUSTOM = "custom";

// The inputs hold minutes; "to" includes its whole minute.
export const endOfMinute = (value) => (value ? fromLocalInput(value) + 60 : undefined);

// Hours up to a week, days beyond, so that a chart never has thousands of points.
const granularityFor = (start, end) => (end - start > 7 * DAY ? "day" : "hour");

export function rangeOf(query, fallback) {
  const name = query.get("range") || fallback;
  const start = fromLocalInput(query.get("from"));
  const end = endOfMinute(query.get("to"));
  if (name === CUSTOM && start && end && start < end) {
    return { name, start, end, granularity: granularityFor(start, end), hash: { range: name, from: query.get("from"), to: query.get("to") } };
  }
  const preset = RANGES[name] ? name : fallback;
  const now = Math.ceil(Date.now() / 1000) + 1;
  const begin = now - RANGES[preset].seconds;
  return { name: preset, start: begin, end: now, granularity: granularityFor(begin, now), hash: { range: preset } };
}

// The range picker; `go` receives the hash fields of the range chosen.
export function rangeControls(range, go) {
  const select = h("select", { name: "range" },
    [...Object.entries(RANGES).map(([value, r]) => [value, r.label]), [CUSTOM, "Custom…"]]
      .map(([value, label]) => h("option", { value, selected: value === range.name }, label)));
  const from = h("input", { type: "datetime-local", name: "from", value: toLocalInput(range.start) });
  const to = h("input", { type: "datetime-local", name: "to", value: toLocalInput(range.end - 1) });
  const custom = () => go({ range: CUSTOM, from: from.value, to: to.value });
  select.addEventListener("change", () => (select.value === CUSTOM ? custom() : go({ range: select.value })));
  if (range.name !== CUSTOM) return [field("Range", select)];
  return [field("Range", select), field("From", from), field("To", to),
    h("button", { type: "button", class: "secondary", onclick: custom }, "Apply")];
}
