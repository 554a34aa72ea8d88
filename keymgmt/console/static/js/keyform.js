// The create and edit form of a key, every field of the contract; the API's validation
// messages are shown under the field they name.
import { field, h } from "./dom.js";
import { showErrors } from "./formerrors.js";

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

// `settings`: the provider settings a key may be given (GET /api/provider-settings).
export function keyForm(existing, onSubmit, settings = []) {
  const creating = !existing;
  const k = existing || {};
  const chosen = new Set(k.settingIds || []);
  const settingSelect = h("select", { name: "settingIds", multiple: true, size: String(Math.min(6, Math.max(2, settings.length))) },
    settings.map((s) => h("option", { value: s.id, selected: chosen.has(s.id) }, `${s.name} (${s.provider})`)));
  const rotation = h("input", { type: "checkbox", name: "rotationEnabled", id: "f-rotationEnabled", checked: Boolean(k.rotationEnabled) });
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
    h("fieldset", {}, h("legend", {}, "Provider settings"),
      field("Settings", settingSelect, settings.length ? "Upstream credentials the key may use; none: OPENAI_API_KEY on the OpenAI path" : "No provider settings yet"),
      h("div", { class: "field check" }, rotation, h("label", { for: "f-rotationEnabled" }, "Rotate among the settings of one provider"))),
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
    const settingIds = Array.from(settingSelect.selectedOptions, (o) => o.value);
    if (!creating || settingIds.length) body.settingIds = settingIds;
    if (!creating || rotation.checked) body.rotationEnabled = rotation.checked;
    for (const name of Object.keys(body)) if (body[name] === undefined) delete body[name];
    return body;
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      await onSubmit(values());
    } catch (error) {
      showErrors(form, formError, error);
    } finally {
      button.disabled = false;
    }
  });
  return form;
}
