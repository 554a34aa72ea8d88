// The create and edit form of an end user: who it is (the userId its application sends), the keys
// it may call through (by id or a shared tag), and limits and access of its own.
import { commaList, field, h, textInput as text } from "./dom.js";
import { submitWith } from "./formerrors.js";
import { accessFields, accessValues, limitFields, limitValues, revokeFields, revokeValues } from "./limitfields.js";

export function userForm(existing, onSubmit) {
  const creating = !existing;
  const u = existing || { tags: [], keyIds: [] };
  const formError = h("p", { class: "field-error", role: "alert" });
  const form = h("form", { class: "user-form", novalidate: true },
    field("User ID", text("userId", u.userId), "As the application sends it: OpenAI's user, Anthropic's metadata.user_id"),
    field("Name", text("name", u.name)),
    field("Tags", text("tags", u.tags.join(", ")), "Comma-separated; a key sharing a tag is the user's too"),
    field("Keys", text("keyIds", u.keyIds.join(", ")), "Ids of the keys the user calls through, comma-separated"),
    limitFields(u),
    accessFields(u),
    !creating && revokeFields(u),
    formError,
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, creating ? "Create user" : "Save")));

  const value = (name) => form.elements.namedItem(name).value.trim();
  function values() {
    const body = {
      userId: value("userId"),
      name: value("name"),
      tags: commaList(value("tags")),
      keyIds: commaList(value("keyIds")),
      ...limitValues(form, creating),
      ...accessValues(form),
    };
    return creating ? body : { ...body, ...revokeValues(form) };
  }

  submitWith(form, formError, values, onSubmit);
  return form;
}
