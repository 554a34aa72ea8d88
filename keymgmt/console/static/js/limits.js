// Spend against a limit, as a <meter> with its numbers beside it.
import { h } from "./dom.js";
import { count, unitName, usd } from "./format.js";

function gauge(label, used, limit, show) {
  if (!limit) return h("div", { class: "gauge" }, h("span", { class: "gauge-label" }, label), h("span", {}, `${show(used)} · no limit`));
  return h("div", { class: "gauge" },
    h("span", { class: "gauge-label" }, label),
    h("meter", { min: "0", max: String(limit), low: String(limit * 0.8), high: String(limit * 0.95), optimum: "0", value: String(Math.min(used, limit)), "aria-label": `${label}: ${show(used)} of ${show(limit)}` }),
    h("span", {}, `${show(used)} / ${show(limit)}`));
}

// The three limits of a key; `spend` is GET /api/reporting/keys/{id}, null when unreadable.
export function limitGauges(key, spend) {
  if (!spend) return h("div", { class: "gauges muted" }, "spend unavailable");
  const windowed = key.costLimitInUsdUnit ? ` per ${unitName(key.costLimitInUsdUnit)}` : " in window";
  const rate = key.rateLimitUnit ? ` per ${unitName(key.rateLimitUnit)}` : "";
  return h("div", { class: "gauges" },
    gauge("Lifetime", spend.costInUsd, key.costLimitInUsd, usd),
    key.costLimitInUsdOverTime ? gauge(`Spend${windowed}`, spend.costInUsdOverTime, key.costLimitInUsdOverTime, usd) : null,
    key.rateLimitOverTime ? gauge(`Requests${rate}`, spend.requestsInWindow, key.rateLimitOverTime, count) : null);
}
