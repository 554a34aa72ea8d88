// Create, edit, revoke and delete a key, shared by the keys page and a key's page.
import { api } from "./api.js";
import { confirmAction, openDialog } from "./dialogs.js";
import { toast } from "./dom.js";
import { keyForm } from "./keyform.js";

// What a key may be given: provider settings and policies.
async function choices() {
  const [settings, policies] = await Promise.all([api.settings(), api.policies()]);
  return { settings, policies };
}

export async function createKey(onDone) {
  const offered = await choices();
  const dialog = openDialog("New key", keyForm(null, async (fields) => {
    const key = await api.createKey(fields);
    dialog.close();
    toast(`Key “${key.name}” created.`);
    onDone(key);
  }, offered));
}

export async function editKey(key, onDone) {
  const offered = await choices();
  const dialog = openDialog(`Edit “${key.name}”`, keyForm(key, async (fields) => {
    const updated = await api.updateKey(key.keyId, fields);
    dialog.close();
    toast("Key saved.");
    onDone(updated);
  }, offered));
}

export async function revokeKey(key, onDone) {
  const answer = await confirmAction("Revoke key", `Revoke “${key.name}”? The proxy refuses it from now on.`,
    { action: "Revoke", danger: true, reason: true,
      run: ({ reason }) => api.updateKey(key.keyId, { revoked: true, revokedReason: reason || "" }) });
  if (!answer.confirmed) return;
  toast("Key revoked.");
  onDone();
}

export async function deleteKey(key, onDone) {
  const answer = await confirmAction("Delete key", `Delete “${key.name}” for good? This cannot be undone.`,
    { action: "Delete", danger: true, run: () => api.deleteKey(key.keyId) });
  if (!answer.confirmed) return;
  toast("Key deleted.");
  onDone();
}
