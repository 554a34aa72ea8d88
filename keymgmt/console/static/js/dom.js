// A tiny element builder: h("a", {href: "#/keys"}, "Keys"). Text is always set as text, never
// parsed as HTML, so nothing from the API can inject markup.
export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "class") node.className = value;
    else if (name in node && typeof value !== "string") node[name] = value;
    else node.setAttribute(name, value === true ? "" : value);
  }
  append(node, children);
  return node;
}

export function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

export function replace(node, ...children) {
  node.replaceChildren();
  return append(node, children);
}

let toastTimer;
export function toast(message) {
  const box = document.getElementById("toast");
  box.textContent = message;
  box.classList.add("shown");
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => box.classList.remove("shown"), 4000);
}

export function textInput(name, value, attrs = {}) {
  return h("input", { type: "text", name, value: value ?? "", autocomplete: "off", spellcheck: "false", ...attrs });
}

export function textArea(name, value, attrs = {}) {
  const node = h("textarea", { name, autocomplete: "off", spellcheck: "false", rows: "3", ...attrs });
  node.value = value ?? ""; // a textarea has no value attribute
  return node;
}

// A labelled checkbox, its label after it.
export function checkbox(name, label, checked) {
  const input = h("input", { type: "checkbox", name, id: `f-${name}`, checked: Boolean(checked) });
  return h("div", { class: "field check", "data-field": name }, input, h("label", { for: input.id }, label));
}

// "a, b ,, c" → ["a", "b", "c"]
export const commaList = (value) => value.split(",").map((v) => v.trim()).filter(Boolean);

// A labelled field; `errors` later shows the API's messages for it under the input.
export function field(label, input, hint) {
  const id = input.id || `f-${input.name}`;
  input.id = id;
  const error = h("p", { class: "field-error", id: `${id}-error` });
  const help = hint ? h("p", { class: "hint", id: `${id}-hint` }, hint) : null;
  input.setAttribute("aria-describedby", [help && help.id, error.id].filter(Boolean).join(" "));
  return h("div", { class: "field", "data-field": input.name },
    h("label", { for: id }, label), input, help, error);
}
