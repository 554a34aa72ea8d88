// The create and edit form of a key, every field of the contract; the API's validation
// messages are shown under the field they name.
import { ApiError } from "./api.js";
import { field, h } from "./dom.js";

const UNITS = [["", "none"], ["s", "second"], ["m", "minute"], ["h", "hour"], ["d", "day"]];
const TEXT_FIELDS = ["name", "key", "costLimitInUsd", "costLimitInUsdOverTime", "rateLimitOverTime", "ttl", "revokedReason"];
const UNIT_FIELDS = ["costLimitInUsdUnit", "rateLimitUnit"];

function text(name, value, attrs = {}) {
  return h("input", { type: "text", name, value: value ?? "", autocomplete: "off", ...attrs });
}

function unitSelect(name, value) {
  return h("select", { name },
    UNITS.map(([unit, label]) => h("option", { value: unit, selected: unit === (value || "") }, label)));
}

function randomKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(24));
  return `sk-gw-${Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("")}`;
}

const amount = (n) => (n ? String(n) : "");

export function keyForm(existing, onSubmit) {
  const creating = !existing;
  const k = existing || {};
  const keyInput = creating ? text("key", "", { spellcheck: "false" }) : null;
  const revoked = creating ? null : h("input", { type: "checkbox", name: "revoked", checked: k.revoked });
  const formError = h("p", { class: "field-error", role: "alert" });
  const form = h("form", { class: "key-form", novalidate: true },
    field("Name", text("name", k.name)),
    creating && h("div", { class: "with-button" },
      field("Key", keyInput, "The secret clients send. Shown only now: copy it before saving."),
      h("button", { type: "button", class: "secondary", onclick: () => { keyInput.value = randomKey(); keyInput.select(); } }, "Generate")),
    field("Tags", text("tags", (k.tags || []).join(", ")), "Comma-separated"),
    h("fieldset", {}, h("legend", {}, "Cost limits (USD)"),
      field("Lifetime", text("costLimitInUsd", amount(k.costLimitInUsd), { inputmode: "decimal" })),
      h("div", { class: "pair" },
        field("Per window", text("costLimitInUsdOverTime", amount(k.costLimitInUsdOverTime), { inputmode: "decimal" })),
        field("Window", unitSelect("costLimitInUsdUnit", k.costLimitInUsdUnit)))),
    h("fieldset", {}, h("legend", {}, "Rate limit"),
      h("div", { class: "pair" },
        field("Requests", text("rateLimitOverTime", amount(k.rateLimitOverTime), { inputmode: "numeric" })),
        field("Per", unitSelect("rateLimitUnit", k.rateLimitUnit)))),
    field("Time to live", text("ttl", k.ttl), "From creation, e.g. 30d or 12h; empty: no expiry"),
    !creating && h("div", { class: "field check" }, revoked, h("label", { for: "f-revoked" }, "Revoked")),
    !creating && field("Revoked reason", text("revokedReason", k.revokedReason)),
    formError,
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, creating ? "Create key" : "Save")));
  if (revoked) revoked.id = "f-revoked";

  function values() {
    const data = new FormData(form);
    const body = {};
    // Empty means "not given" on create and "no limit" on edit; the API validates the rest.
    const blank = creating ? undefined : null;
    for (const name of [...TEXT_FIELDS, ...UNIT_FIELDS]) {
      if (!data.has(name)) continue;
      const value = String(data.get(name)).trim();
      body[name] = value === "" && name !== "name" && name !== "key" ? blank : value;
    }
    if (!creating) body.revokedReason = String(data.get("revokedReason") ?? "");
    const tags = String(data.get("tags")).split(",").map((t) => t.trim()).filter(Boolean);
    body.tags = tags;
    if (revoked) body.revoked = revoked.checked;
    for (const name of Object.keys(body)) if (body[name] === undefined) delete body[name];
    return body;
  }

  function showErrors(error) {
    for (const node of form.querySelectorAll(".field-error")) node.textContent = "";
    for (const node of form.querySelectorAll("[aria-invalid]")) node.removeAttribute("aria-invalid");
    const unplaced = [];
    const messages = error instanceof ApiError ? error.fieldErrors : {};
    for (const [name, list] of Object.entries(messages)) {
      const text = [].concat(list).map((m) => (typeof m === "string" ? m : JSON.stringify(m))).join(" ");
      const input = form.elements.namedItem(name);
      const slot = input && form.querySelector(`#${input.id}-error`);
      if (slot) {
        slot.textContent = text;
        input.setAttribute("aria-invalid", "true");
      } else unplaced.push(name === "_schema" ? text : `${name}: ${text}`);
    }
    if (!Object.keys(messages).length) unplaced.push(error.message);
    formError.textContent = unplaced.join(" ");
    const first = form.querySelector("[aria-invalid]");
    if (first) first.focus();
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      await onSubmit(values());
    } catch (error) {
      showErrors(error);
    } finally {
      button.disabled = false;
    }
  });
  return form;
}
