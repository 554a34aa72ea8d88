// Routes: every route, created, edited and deleted in place; a route's steps are its fallbacks.
import { api } from "../api.js";
import { confirmAction, openDialog } from "../dialogs.js";
import { h, replace, toast } from "../dom.js";
import { count, time } from "../format.js";
import { reload } from "../router.js";
import { routeForm } from "../routeform.js";

export const title = "Routes";

function edit(existing) {
  const dialog = openDialog(existing ? `Edit “${existing.name}”` : "New route",
    routeForm(existing, async (fields) => {
      const saved = existing ? await api.updateRoute(existing.id, fields) : await api.createRoute(fields);
      dialog.close();
      toast(existing ? "Route saved." : `Route “${saved.name}” created.`);
      reload();
    }));
}

async function remove(route) {
  const answer = await confirmAction("Delete route", `Delete “${route.name}” for good? The proxy stops serving ${route.path}.`,
    { action: "Delete", danger: true, run: () => api.deleteRoute(route.id) });
  if (!answer.confirmed) return;
  toast("Route deleted.");
  reload();
}

function row(route) {
  const { cacheConfig: cache } = route;
  return h("tr", {},
    h("td", {}, route.name),
    h("td", { "data-label": "Path" }, h("code", {}, route.path)),
    h("td", { class: "tags", "data-label": "Steps" },
      route.steps.map((s) => h("span", { class: "tag" }, `${s.provider} ${s.model}`))),
    h("td", { "data-label": "Retries" }, route.retryStrategy),
    h("td", { "data-label": "Cache" }, cache.enabled ? `on, ${cache.ttl}` : h("span", { class: "muted" }, "off")),
    h("td", { "data-label": "Keys" }, count(route.keyIds.length)),
    h("td", { "data-label": "Updated" }, time(route.updatedAt)),
    h("td", { class: "row-actions" },
      h("button", { type: "button", class: "link", onclick: () => edit(route) }, "Edit"),
      h("button", { type: "button", class: "link danger", onclick: () => remove(route) }, "Delete")));
}

export async function render(main) {
  const body = h("tbody", {}, h("tr", {}, h("td", { colspan: "8" }, "Loading…")));
  replace(main,
    h("div", { class: "page-head" }, h("h1", {}, title),
      h("button", { type: "button", class: "primary", onclick: () => edit(null) }, "New route")),
    h("div", { class: "table-wrap" }, h("table", { class: "routes stack" },
      h("thead", {}, h("tr", {}, ["Name", "Path", "Steps", "Retries", "Cache", "Keys", "Updated", ""].map((c) =>
        h("th", { scope: "col" }, c)))),
      body)));
  const routes = await api.routes();
  replace(body, routes.length ? routes.map(row)
    : h("tr", {}, h("td", { colspan: "8", class: "muted" }, "No routes yet.")));
}
