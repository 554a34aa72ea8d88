// One call's usage event, every field, in a dialog.
import { openDialog } from "./dialogs.js";
import { h } from "./dom.js";
import { count, ms, time, usd } from "./format.js";
import { href } from "./router.js";

const yesNo = (b) => (b ? "yes" : "no");

export function showEvent(event) {
  const rows = [
    ["Time", time(event.createdAt)],
    ["Key", h("a", { href: href(`/keys/${event.keyId}`) }, event.keyName || event.keyId)],
    ["Status", String(event.status)],
    ["Model", event.model],
    ["Path", event.path],
    ["Prompt tokens", count(event.promptTokens)],
    ["Cached prompt tokens", count(event.cachedTokens)],
    ["Completion tokens", count(event.completionTokens)],
    ["Cost", usd(event.costInUsd)],
    ["Latency", ms(event.latencyMs)],
    ["Upstream time", ms(event.upstreamMs)],
    ["Streamed", yesNo(event.streamed)],
    ["Request id", h("code", {}, event.requestId)],
    ["Event id", h("code", {}, event.eventId)],
  ];
  const list = h("dl", { class: "details" }, rows.map(([name, value]) => [h("dt", {}, name), h("dd", {}, value)]));
  const dialog = openDialog("Call", list);
  dialog.querySelector("a").addEventListener("click", () => dialog.close());
}

// The events table used by the events page and a key's page.
export function eventsTable(events, { withKey = true } = {}) {
  const head = ["Time", withKey && "Key", "Status", "Model", "Tokens", "Cost", "Latency", ""].filter((c) => c !== false);
  return h("div", { class: "table-wrap" }, h("table", { class: "events stack" },
    h("thead", {}, h("tr", {}, head.map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, events.length ? events.map((e) => h("tr", { class: e.status >= 400 ? "failed" : null },
      h("td", { "data-label": "Time" }, time(e.createdAt)),
      withKey && h("td", { "data-label": "Key" }, h("a", { href: href(`/keys/${e.keyId}`) }, e.keyName || e.keyId.slice(0, 8))),
      h("td", { "data-label": "Status" }, String(e.status)),
      h("td", { "data-label": "Model" }, e.model),
      h("td", { "data-label": "Tokens" }, count(e.promptTokens + e.completionTokens)),
      h("td", { "data-label": "Cost" }, usd(e.costInUsd)),
      h("td", { "data-label": "Latency" }, ms(e.latencyMs)),
      h("td", {}, h("button", { type: "button", class: "link", onclick: () => showEvent(e) }, "Details"))))
      : h("tr", {}, h("td", { colspan: String(head.length), class: "muted" }, "No events.")))));
}
