// The API's validation messages shown under the fields they name. Messages may nest
// ({"setting": {"url": [...]}}, {"costMap": {"promptCostPerModel": {...}}}): each goes under the
// deepest name on its path that is a field of the form. The rest go in `formError`.
import { ApiError } from "./api.js";

function flatten(messages, path = [], into = []) {
  for (const [name, list] of Object.entries(messages)) {
    if (list && typeof list === "object" && !Array.isArray(list)) flatten(list, [...path, name], into);
    else into.push([[...path, name], [].concat(list).map((m) => (typeof m === "string" ? m : JSON.stringify(m))).join(" ")]);
  }
  return into;
}

function slotFor(form, path) {
  for (const name of [...path].reverse()) {
    const input = form.elements.namedItem(name);
    const slot = input && input.id && form.querySelector(`#${input.id}-error`);
    if (slot) return { input, slot };
  }
  return null;
}

export function showErrors(form, formError, error) {
  for (const node of form.querySelectorAll(".field-error")) node.textContent = "";
  for (const node of form.querySelectorAll("[aria-invalid]")) node.removeAttribute("aria-invalid");
  const unplaced = [];
  const messages = error instanceof ApiError ? error.fieldErrors : {};
  for (const [path, text] of flatten(messages)) {
    const found = slotFor(form, path);
    if (found) {
      found.slot.textContent = [found.slot.textContent, text].filter(Boolean).join(" ");
      found.input.setAttribute("aria-invalid", "true");
    } else unplaced.push(path.join(".") === "_schema" ? text : `${path.join(".")}: ${text}`);
  }
  if (!Object.keys(messages).length) unplaced.push(error.message);
  formError.textContent = unplaced.join(" ");
  const first = form.querySelector("[aria-invalid]");
  if (first) first.focus();
}
