// The API's validation messages shown under the fields they name. Messages may nest
// ({"setting": {"url": [...]}}, {"steps": {"0": {"model": [...]}}}): each goes under the
// deepest name on its path that is a field of the form, whether a field is named by one name
// ("url") or by its whole path ("regexConfig.rules.1.definition"); the rest of the path leads
// the message ("[0].model: ..."). What no field takes goes in `formError`.
import { ApiError } from "./api.js";

// Input the form refuses before any call, shaped like the API's messages by field.
export class InputError extends Error {
  constructor(fieldErrors) {
    super(Object.values(fieldErrors).flat().join(" "));
    this.fieldErrors = fieldErrors;
  }
}

function flatten(messages, path = [], into = []) {
  for (const [name, list] of Object.entries(messages)) {
    if (list && typeof list === "object" && !Array.isArray(list)) flatten(list, [...path, name], into);
    else into.push([[...path, name], [].concat(list).map((m) => (typeof m === "string" ? m : JSON.stringify(m))).join(" ")]);
  }
  return into;
}

const described = (rest) => rest.map((s, i) => (/^\d+$/.test(s) ? `[${s}]` : i ? `.${s}` : s)).join("");

function slotFor(form, path) {
  for (let end = path.length; end > 0; end -= 1) {
    for (const name of [path.slice(0, end).join("."), path[end - 1]]) {
      const input = form.elements.namedItem(name);
      const slot = input && input.id && form.querySelector(`#${CSS.escape(`${input.id}-error`)}`);
      if (slot) return { input, slot, rest: path.slice(end) };
    }
  }
  return null;
}

export function showErrors(form, formError, error) {
  for (const node of form.querySelectorAll(".field-error")) node.textContent = "";
  for (const node of form.querySelectorAll("[aria-invalid]")) node.removeAttribute("aria-invalid");
  const unplaced = [];
  const messages = error instanceof ApiError || error instanceof InputError ? error.fieldErrors : {};
  for (const [path, text] of flatten(messages)) {
    const found = slotFor(form, path);
    if (found) {
      const message = found.rest.length ? `${described(found.rest)}: ${text}` : text;
      found.slot.textContent = [found.slot.textContent, message].filter(Boolean).join(" ");
      found.input.setAttribute("aria-invalid", "true");
    } else unplaced.push(path.join(".") === "_schema" ? text : `${path.join(".")}: ${text}`);
  }
  if (!Object.keys(messages).length) unplaced.push(error.message);
  formError.textContent = unplaced.join(" ");
  const first = form.querySelector("[aria-invalid]");
  if (first) first.focus();
}

// Submits `values()` to `onSubmit`, the button disabled meanwhile; a refusal is shown in the form.
export function submitWith(form, formError, values, onSubmit) {
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
}
