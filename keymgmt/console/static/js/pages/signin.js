// Sign-in: the pass is checked with one admin API call before it is kept.
import { ApiError, call, session } from "../api.js";
import { field, h, replace } from "../dom.js";

export const title = "Sign in";

export function render(main, onSignedIn) {
  const pass = h("input", { type: "password", name: "pass", autocomplete: "current-password", required: true });
  const error = h("p", { class: "field-error", id: "signin-error", role: "alert" });
  const form = h("form", { class: "card signin", novalidate: true },
    h("h1", {}, "Sign in"),
    h("p", { class: "hint" }, "Enter the gateway's ADMIN_PASS."),
    field("Admin pass", pass), error,
    h("button", { type: "submit", class: "primary" }, "Sign in"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    try {
      await call("POST", "/api/v2/key-management/keys", { limit: 1 }, pass.value);
    } catch (failure) {
      error.textContent = failure instanceof ApiError && failure.status === 401
        ? "Wrong pass." : `Sign-in failed: ${failure.message}`;
      pass.select();
      return;
    }
    session.signIn(pass.value);
    onSignedIn();
  });
  document.title = "Sign in · Gateway console";
  replace(main, form);
  pass.focus();
}
