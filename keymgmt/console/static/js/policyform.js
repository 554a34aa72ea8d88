// The create and edit form of a policy: an action for each entity (a table), patterns of one's
// own (rows of definition and action, each named by its place in the list, so that the API's
// message for a pattern shows under its row), and whether redacted values are restored.
import { checkbox, commaList, field, h, replace, textInput as text } from "./dom.js";
import { submitWith } from "./formerrors.js";

// shared/models.py ENTITIES, ALL_ENTITIES and ACTIONS (strongest first).
export const ENTITIES = [
  "email", "phone", "credit_debit_number", "ssn", "ip_address",
  "international_bank_account_number", "url", "mac_address", "aws_access_key",
  "aws_secret_key", "api_key", "private_key", "jwt", "all",
];
export const ACTIONS = ["block", "allow_but_redact", "allow_but_warn", "allow"];
const NOTES = { all: "every entity without a rule of its own", api_key: "OpenAI, Anthropic, GitHub, Slack, Stripe, Google" };

function actionSelect(name, value, { none = false } = {}) {
  return h("select", { name },
    none && h("option", { value: "" }, "no rule"),
    ACTIONS.map((action) => h("option", { value: action, selected: action === value }, action)));
}

function entityTable(rules) {
  return h("div", { class: "table-wrap" }, h("table", { class: "entity-rules" },
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Entity"), h("th", { scope: "col" }, "Action"))),
    h("tbody", {}, ENTITIES.map((entity) => {
      const select = actionSelect(`config.rules.${entity}`, rules[entity], { none: true });
      select.id = `f-rule-${entity}`;
      return h("tr", {},
        h("td", {}, h("label", { for: select.id }, entity), NOTES[entity] && h("span", { class: "hint" }, ` ${NOTES[entity]}`)),
        h("td", {}, select, h("p", { class: "field-error", id: `${select.id}-error` })));
    }))));
}

export function policyForm(existing, onSubmit) {
  const creating = !existing;
  const p = existing || { tags: [], config: { rules: {} }, regexConfig: { rules: [] }, restore: false };
  const patterns = h("div", { class: "regex-rows" });
  const formError = h("p", { class: "field-error", role: "alert" });

  const rowName = (i, part) => `regexConfig.rules.${i}.${part}`;
  const currentPatterns = () => Array.from(patterns.querySelectorAll(".regex-row"), (row, i) => ({
    definition: row.querySelector(`[name="${rowName(i, "definition")}"]`).value,
    action: row.querySelector(`[name="${rowName(i, "action")}"]`).value,
  }));
  // Rows are drawn again after each addition or removal, so that a row's names are its index.
  function drawPatterns(rules) {
    replace(patterns, rules.length ? rules.map((rule, i) => h("div", { class: "regex-row" },
      field("Pattern (RE2)", text(rowName(i, "definition"), rule.definition, { class: "code" })),
      field("Action", actionSelect(rowName(i, "action"), rule.action)),
      h("button", { type: "button", class: "link danger", "aria-label": `Remove pattern ${i + 1}`,
        onclick: () => drawPatterns(currentPatterns().filter((_, j) => j !== i)) }, "Remove")))
      : h("p", { class: "muted" }, "No patterns."));
  }
  drawPatterns(p.regexConfig.rules);

  const form = h("form", { class: "policy-form", novalidate: true },
    field("Name", text("name", p.name)),
    field("Tags", text("tags", p.tags.join(", ")), "Comma-separated"),
    h("fieldset", {}, h("legend", {}, "Entities"), entityTable(p.config.rules)),
    h("fieldset", {}, h("legend", {}, "Patterns of your own"), patterns,
      h("div", {}, h("button", { type: "button", class: "secondary",
        onclick: () => drawPatterns([...currentPatterns(), { definition: "", action: "allow_but_redact" }]) }, "Add pattern"))),
    checkbox("restore", "Put redacted values back into the answer (never secrets)", p.restore),
    formError,
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, creating ? "Create policy" : "Save")));

  function values() {
    const rules = {};
    for (const entity of ENTITIES) {
      const action = form.elements.namedItem(`config.rules.${entity}`).value;
      if (action) rules[entity] = action;
    }
    return {
      name: form.elements.namedItem("name").value.trim(),
      tags: commaList(form.elements.namedItem("tags").value),
      config: { rules },
      regexConfig: { rules: currentPatterns() },
      restore: form.elements.namedItem("restore").checked,
    };
  }

  submitWith(form, formError, values, onSubmit);
  return form;
}
