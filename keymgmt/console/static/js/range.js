// A time range picked from presets, with the bucket size that suits it.
import { field, h } from "./dom.js";

export const RANGES = {
  "24h": { label: "Last 24 hours", seconds: 86400, granularity: "hour" },
  "7d": { label: "Last 7 days", seconds: 7 * 86400, granularity: "hour" },
  "30d": { label: "Last 30 days", seconds: 30 * 86400, granularity: "day" },
  "90d": { label: "Last 90 days", seconds: 90 * 86400, granularity: "day" },
};

export function rangeOf(name) {
  const range = RANGES[name] || RANGES["24h"];
  const end = Math.ceil(Date.now() / 1000) + 1;
  return { ...range, start: end - range.seconds, end };
}

export function rangeSelect(current, onChange, name = "range") {
  const select = h("select", { name },
    Object.entries(RANGES).map(([value, r]) => h("option", { value, selected: value === current }, r.label)));
  select.addEventListener("change", () => onChange(select.value));
  return field("Range", select);
}
