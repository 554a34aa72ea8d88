// Modal dialogs on <dialog>: focus stays inside, Escape closes, the opener gets focus back.
import { h } from "./dom.js";

export function openDialog(title, body, { onClose } = {}) {
  const opener = document.activeElement;
  const closeButton = h("button", { type: "button", class: "link close", "aria-label": "Close" }, "×");
  const dialog = h("dialog", { "aria-labelledby": "dialog-title" },
    h("div", { class: "dialog-head" }, h("h2", { id: "dialog-title" }, title), closeButton),
    body);
  closeButton.addEventListener("click", () => dialog.close());
  dialog.addEventListener("close", () => {
    dialog.remove();
    if (onClose) onClose();
    if (opener && opener.isConnected) opener.focus();
  });
  document.body.append(dialog);
  dialog.showModal();
  return dialog;
}

// Resolves true when the action is confirmed, with the reason typed when one is asked for.
// With `run`, confirming runs it with the dialog open: it closes once `run` succeeds, and a
// refusal (a 409, say) is shown in it.
export function confirmAction(title, message, { action, danger = false, reason = false, run = null }) {
  return new Promise((resolve) => {
    let result = { confirmed: false };
    const reasonInput = reason ? h("input", { type: "text", name: "reason", id: "confirm-reason", maxlength: "1024" }) : null;
    const error = h("p", { class: "field-error", id: "confirm-error", role: "alert" });
    const confirm = h("button", { type: "submit", value: "ok", class: danger ? "danger" : "primary" }, action);
    const form = h("form", { method: "dialog", class: "confirm" },
      h("p", {}, message),
      reasonInput && h("div", { class: "field" }, h("label", { for: "confirm-reason" }, "Reason (optional)"), reasonInput),
      error,
      h("div", { class: "actions" },
        h("button", { type: "submit", value: "cancel", class: "secondary" }, "Cancel"),
        confirm));
    form.addEventListener("submit", async (event) => {
      if (!event.submitter || event.submitter.value !== "ok") return;
      const answer = { confirmed: true, reason: reasonInput ? reasonInput.value : undefined };
      if (!run) {
        result = answer;
        return;
      }
      event.preventDefault();
      confirm.disabled = true;
      try {
        await run(answer);
        result = answer;
        dialog.close();
      } catch (refused) {
        error.textContent = refused.message;
      } finally {
        confirm.disabled = false;
      }
    });
    const dialog = openDialog(title, form, { onClose: () => resolve(result) });
    (reasonInput || dialog.querySelector("button.secondary")).focus();
  });
}
