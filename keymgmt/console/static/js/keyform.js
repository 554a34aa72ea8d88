// The create and edit form of a key, every field of the contract; the API's validation
// messages are shown under the field they name.
import { checkbox, commaList, field, h, textInput as text } from "./dom.js";
import { submitWith } from "./formerrors.js";
import { accessFields, accessValues, limitFields, limitValues, revokeFields, revokeValues } from "./limitfields.js";

function randomKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(24));
  return `sk-gw-${Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("")}`;
}

const windowsText = (windows) => (windows || []).map((w) => `${w.overTime}/${w.unit}`).join(", ");

// "100/m, 5000/d" → [{overTime: 100, unit: "m"}, ...]; a part not so shaped goes as typed.
function parseWindows(value) {
  return value.split(",").map((part) => part.trim()).filter(Boolean).map((part) => {
    const [overTime, unit] = part.split("/").map((p) => p.trim());
    const count = overTime !== "" && Number.isInteger(Number(overTime)) ? Number(overTime) : overTime;
    return unit === undefined ? { overTime: count } : { overTime: count, unit };
  });
}

// `settings` and `policies`: those a key may be given (GET /api/provider-settings, /api/policies).
export function keyForm(existing, onSubmit, { settings = [], policies = [] } = {}) {
  const creating = !existing;
  const k = existing || {};
  const chosen = new Set(k.settingIds || []);
  const settingSelect = h("select", { name: "settingIds", multiple: true, size: String(Math.min(6, Math.max(2, settings.length))) },
    settings.map((s) => h("option", { value: s.id, selected: chosen.has(s.id) }, `${s.name} (${s.provider})`)));
  const policySelect = h("select", { name: "policyId" },
    h("option", { value: "" }, "none"),
    policies.map((p) => h("option", { value: p.id, selected: p.id === k.policyId }, p.name)));
  const keyInput = creating ? text("key", "") : null;
  const formError = h("p", { class: "field-error", role: "alert" });
  const form = h("form", { class: "key-form", novalidate: true },
    field("Name", text("name", k.name)),
    creating && h("div", { class: "with-button" },
      field("Key", keyInput, "The secret clients send. Shown only now: copy it before saving."),
      h("button", { type: "button", class: "secondary", onclick: () => { keyInput.value = randomKey(); keyInput.select(); } }, "Generate")),
    field("Tags", text("tags", (k.tags || []).join(", ")), "Comma-separated"),
    limitFields(k),
    field("More rate windows", text("rateLimits", windowsText(k.rateLimits)), "Each held like the rate limit, e.g. 100/m, 5000/d"),
    h("fieldset", {}, h("legend", {}, "Provider settings"),
      field("Settings", settingSelect, settings.length ? "Upstream credentials the key may use; none: OPENAI_API_KEY on the OpenAI path" : "No provider settings yet"),
      checkbox("rotationEnabled", "Rotate among the settings of one provider", k.rotationEnabled)),
    field("Policy", policySelect, policies.length ? "What the proxy does with personal data and secrets in its requests" : "No policies yet"),
    accessFields(k),
    h("fieldset", {}, h("legend", {}, "Logging (bodies stored with each call's event, after redaction)"),
      checkbox("shouldLogRequest", "Store request bodies", k.shouldLogRequest),
      checkbox("shouldLogResponse", "Store response bodies", k.shouldLogResponse)),
    !creating && revokeFields(k),
    formError,
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, creating ? "Create key" : "Save")));

  const checked = (name) => form.elements.namedItem(name).checked;
  function values() {
    const body = {
      name: form.elements.namedItem("name").value.trim(),
      tags: commaList(form.elements.namedItem("tags").value),
      ...limitValues(form, creating),
      rateLimits: parseWindows(form.elements.namedItem("rateLimits").value),
      ...accessValues(form),
    };
    if (creating) body.key = keyInput.value.trim();
    else Object.assign(body, revokeValues(form));
    const settingIds = Array.from(settingSelect.selectedOptions, (o) => o.value);
    // On create only what is chosen is sent; an edit states every choice.
    const choices = {
      settingIds, policyId: policySelect.value, rotationEnabled: checked("rotationEnabled"),
      shouldLogRequest: checked("shouldLogRequest"), shouldLogResponse: checked("shouldLogResponse"),
    };
    for (const [name, value] of Object.entries(choices)) {
      if (!creating || (Array.isArray(value) ? value.length : value)) body[name] = value;
    }
    return body;
  }

  submitWith(form, formError, values, onSubmit);
  return form;
}
