// The create and edit form of a route. Steps are edited as JSON (the API's own shape): text that
// is no JSON is refused here, anything else is the API's to judge, and its messages name the
// step ("[1].timeout: ...").
import { checkbox, commaList, field, h, textArea, textInput as text } from "./dom.js";
import { InputError, submitWith } from "./formerrors.js";

const STRATEGIES = [["constant", "constant: each retry waits the step's retryInterval"], ["exponential", "exponential: the wait doubles with each retry"]];
const FIRST_STEPS = [{ provider: "openai", model: "gpt-4o-mini", retries: 1 }];

function parseSteps(value) {
  try {
    return JSON.parse(value);
  } catch (error) {
    throw new InputError({ steps: [`not JSON: ${error.message}`] });
  }
}

export function routeForm(existing, onSubmit) {
  const creating = !existing;
  const r = existing || { keyIds: [], steps: FIRST_STEPS, retryStrategy: "constant", cacheConfig: {}, coolDown: {} };
  const strategy = h("select", { name: "retryStrategy" },
    STRATEGIES.map(([value, label]) => h("option", { value, selected: value === r.retryStrategy }, label)));
  const formError = h("p", { class: "field-error", role: "alert" });
  const form = h("form", { class: "route-form", novalidate: true },
    field("Name", text("name", r.name)),
    field("Path", text("path", r.path, { placeholder: "/team-a/chat/completions" }),
      "Clients call POST /api/routes{path} on the proxy"),
    field("Keys", text("keyIds", r.keyIds.join(", ")), "Ids of the keys that may call it, comma-separated"),
    field("Steps", textArea("steps", JSON.stringify(r.steps, null, 2), { rows: "10", class: "code" }),
      "A JSON list, tried in order: provider, model, settingId, retries, retryInterval, timeout, params (azure), requestParams. Messages number the steps from 0."),
    field("Retry strategy", strategy),
    h("fieldset", {}, h("legend", {}, "Cache"),
      checkbox("cacheConfig.enabled", "Cache answers to calls with temperature 0 or a seed", r.cacheConfig.enabled),
      field("Time to live", text("cacheConfig.ttl", r.cacheConfig.ttl, { placeholder: "1h" }), "1s to 7d; empty: 1h")),
    h("fieldset", {}, h("legend", {}, "Cool-down"),
      h("div", { class: "pair" },
        field("Failures in a row", text("coolDown.failures", r.coolDown.failures, { inputmode: "numeric", placeholder: "3" }), "0: never"),
        field("Skipped for", text("coolDown.period", r.coolDown.period, { placeholder: "30s" })))),
    formError,
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, creating ? "Create route" : "Save")));

  const value = (name) => form.elements.namedItem(name).value.trim();
  // An empty optional field is left out: the default on create, unchanged on edit.
  const given = (fields) => Object.fromEntries(Object.entries(fields).filter(([, v]) => v !== ""));
  function values() {
    const failures = value("coolDown.failures");
    return {
      name: value("name"),
      path: value("path"),
      keyIds: commaList(value("keyIds")),
      steps: parseSteps(value("steps")),
      retryStrategy: strategy.value,
      cacheConfig: given({ enabled: form.elements.namedItem("cacheConfig.enabled").checked, ttl: value("cacheConfig.ttl") }),
      coolDown: given({ failures: /^\d+$/.test(failures) ? Number(failures) : failures, period: value("coolDown.period") }),
    };
  }

  submitWith(form, formError, values, onSubmit);
  return form;
}
