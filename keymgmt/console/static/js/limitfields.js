// The fields keys and users share: cost and rate limits, time to live, what they may call, and
// revocation. Each `…Values(form, creating)` reads them back as the API takes them.
import { checkbox, commaList, field, h, textArea, textInput } from "./dom.js";

const UNITS = [["", "none"], ["s", "second"], ["m", "minute"], ["h", "hour"], ["d", "day"]];
const LIMITS = ["costLimitInUsd", "costLimitInUsdOverTime", "costLimitInUsdUnit", "rateLimitOverTime", "rateLimitUnit", "ttl"];

export function unitSelect(name, value) {
  return h("select", { name },
    UNITS.map(([unit, label]) => h("option", { value: unit, selected: unit === (value || "") }, label)));
}

const amount = (n) => (n ? String(n) : "");

export function limitFields(holder) {
  return [
    h("fieldset", {}, h("legend", {}, "Cost limits (USD)"),
      field("Lifetime", textInput("costLimitInUsd", amount(holder.costLimitInUsd), { inputmode: "decimal" })),
      h("div", { class: "pair" },
        field("Per window", textInput("costLimitInUsdOverTime", amount(holder.costLimitInUsdOverTime), { inputmode: "decimal" })),
        field("Window", unitSelect("costLimitInUsdUnit", holder.costLimitInUsdUnit)))),
    h("fieldset", {}, h("legend", {}, "Rate limit"),
      h("div", { class: "pair" },
        field("Requests", textInput("rateLimitOverTime", amount(holder.rateLimitOverTime), { inputmode: "numeric" })),
        field("Per", unitSelect("rateLimitUnit", holder.rateLimitUnit)))),
    field("Time to live", textInput("ttl", holder.ttl), "From creation, e.g. 30d or 12h; empty: no expiry"),
  ];
}

// Empty means "not given" on create and "no limit" on edit; the API validates the rest.
export function limitValues(form, creating) {
  const body = {};
  for (const name of LIMITS) {
    const value = form.elements.namedItem(name).value.trim();
    if (value !== "") body[name] = value;
    else if (!creating) body[name] = null;
  }
  return body;
}

const pathsText = (paths) => (paths || []).map((p) => `${p.method} ${p.path}`).join("\n");

// "POST /api/providers/openai/v1/chat/completions", one a line → [{method, path}]; a line
// without a method is passed on without one, for the API to name.
function parsePaths(value) {
  return value.split("\n").map((line) => line.trim()).filter(Boolean).map((line) => {
    const [first, ...rest] = line.split(/\s+/);
    return first.startsWith("/") ? { path: line } : { method: first.toUpperCase(), path: rest.join(" ") };
  });
}

export function accessFields(holder) {
  return h("fieldset", {}, h("legend", {}, "Access"),
    field("Allowed paths", textArea("allowedPaths", pathsText(holder.allowedPaths)),
      "One METHOD /path a line, the whole proxy path, e.g. POST /api/providers/openai/v1/chat/completions; empty: every path"),
    field("Allowed models", textInput("allowedModels", (holder.allowedModels || []).join(", ")), "Comma-separated; empty: every model"));
}

export function accessValues(form) {
  return {
    allowedPaths: parsePaths(form.elements.namedItem("allowedPaths").value),
    allowedModels: commaList(form.elements.namedItem("allowedModels").value),
  };
}

export function revokeFields(holder) {
  return [
    checkbox("revoked", "Revoked", holder.revoked),
    field("Revoked reason", textInput("revokedReason", holder.revokedReason)),
  ];
}

export function revokeValues(form) {
  return {
    revoked: form.elements.namedItem("revoked").checked,
    revokedReason: form.elements.namedItem("revokedReason").value.trim(),
  };
}
