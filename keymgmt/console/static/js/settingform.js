// The create and edit form of a provider setting. Only the chosen provider's fields show. The
// secret is never shown nor pre-filled: on edit an empty API key field keeps the stored one.
import { commaList, field, h, textInput as text } from "./dom.js";
import { submitWith } from "./formerrors.js";

export const PROVIDERS = ["openai", "anthropic", "azure", "vllm", "deepinfra", "openai_compatible"];
// Which `setting` fields each provider takes (keymgmt's shared/setting_schemas.py SHAPES).
const FIELDS = {
  openai: ["apikey", "baseUrl", "organization", "project"],
  anthropic: ["apikey", "baseUrl"],
  azure: ["apikey", "resourceName", "endpoint", "apiVersion"],
  vllm: ["apikey", "url"],
  deepinfra: ["apikey"],
  openai_compatible: ["apikey", "baseUrl"],
};
const LABELS = {
  apikey: ["API key", "Stored encrypted; never shown again."],
  baseUrl: ["Base URL", "With the version prefix, e.g. https://api.groq.com/openai/v1 (Anthropic: the root)"],
  url: ["Server URL", "The vLLM server's root; /v1 is added"],
  resourceName: ["Resource name", "https://NAME.openai.azure.com; or give an endpoint"],
  endpoint: ["Endpoint", "The Azure resource root; or give a resource name"],
  apiVersion: ["API version", "Used when the client sends none, e.g. 2024-10-21"],
  organization: ["Organization", ""],
  project: ["Project", ""],
};
const PRICES = [
  ["promptCostPerModel", "Prompt prices"],
  ["completionCostPerModel", "Completion prices"],
  ["embeddingsCostPerModel", "Embeddings prices"],
];

const pricesText = (prices) => Object.entries(prices || {}).map(([m, p]) => `${m}=${p}`).join(", ");

// "gpt-4o=0.0025, gpt-4o-mini=0.00015" → {"gpt-4o": 0.0025, ...}; a price that is no number is
// passed on as typed, for the API to name.
function parsePrices(value) {
  const prices = {};
  for (const part of value.split(",").map((p) => p.trim()).filter(Boolean)) {
    const at = part.lastIndexOf("=");
    const model = at < 0 ? part : part.slice(0, at).trim();
    const price = at < 0 ? "" : part.slice(at + 1).trim();
    prices[model] = price !== "" && Number.isFinite(Number(price)) ? Number(price) : price;
  }
  return prices;
}

export function settingForm(existing, onSubmit) {
  const creating = !existing;
  const s = existing || { provider: "openai", setting: {}, allowedModels: [], costMap: {} };
  const provider = h("select", { name: "provider", disabled: !creating },
    PROVIDERS.map((p) => h("option", { value: p, selected: p === s.provider }, p)));
  const inputs = {};
  const fields = Object.entries(LABELS).map(([name, [label, hint]]) => {
    const secret = name === "apikey";
    inputs[name] = secret
      ? h("input", { type: "password", name, autocomplete: "new-password",
        placeholder: creating ? "" : (s.setting.apikey ? `${s.setting.apikey} (empty: unchanged)` : "none") })
      : text(name, s.setting[name]);
    return field(label, inputs[name], hint);
  });
  const showFields = () => {
    const shown = FIELDS[provider.value];
    for (const node of fields) node.hidden = !shown.includes(node.dataset.field);
  };
  provider.addEventListener("change", showFields);
  const formError = h("p", { class: "field-error", role: "alert" });
  const form = h("form", { class: "setting-form", novalidate: true },
    field("Provider", provider, creating ? "" : "A setting's provider cannot change"),
    field("Name", text("name", s.name), "A-Z a-z 0-9 . _ - (an OpenAI-compatible setting is called by it)"),
    h("fieldset", {}, h("legend", {}, "Connection"), fields),
    field("Allowed models", text("allowedModels", (s.allowedModels || []).join(", ")), "Comma-separated; empty: every model"),
    h("fieldset", {}, h("legend", {}, "Prices (USD per 1,000 tokens)"),
      PRICES.map(([name, label]) => field(label, text(name, pricesText((s.costMap || {})[name])), "model=price, comma-separated"))),
    formError,
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, creating ? "Create setting" : "Save")));
  showFields();

  function values() {
    const setting = {};
    for (const name of FIELDS[provider.value]) {
      const value = inputs[name].value.trim();
      if (value) setting[name] = value;
      else if (!creating && name !== "apikey" && s.setting[name] !== undefined) setting[name] = null;
    }
    const body = {
      name: form.elements.namedItem("name").value.trim(),
      setting,
      allowedModels: commaList(form.elements.namedItem("allowedModels").value),
      costMap: Object.fromEntries(PRICES.map(([name]) => [name, parsePrices(form.elements.namedItem(name).value)])),
    };
    if (creating) body.provider = provider.value;
    return body;
  }

  submitWith(form, formError, values, async (fields) => {
    await onSubmit(fields);
    for (const input of form.querySelectorAll("input[type=password]")) input.value = "";
  });
  return form;
}
