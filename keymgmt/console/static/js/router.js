// Hash routes: "#/keys/ID?x=1" → the page whose pattern matches "/keys/ID", given its
// captures and the query. A page is a module with `title` and `render(main, route)`; adding
// one is one line in PAGES (main.js).
export function parse(hash = location.hash) {
  const [path, query = ""] = hash.replace(/^#/, "").split("?");
  return { path: path || "/keys", query: new URLSearchParams(query) };
}

export function href(path, query) {
  const text = query ? new URLSearchParams(query).toString() : "";
  return `#${path}${text ? `?${text}` : ""}`;
}

export function match(pages, path) {
  for (const page of pages) {
    const found = page.pattern.exec(path);
    if (found) return { page, params: found.slice(1).map(decodeURIComponent) };
  }
  return null;
}

// Render the current page again, as a change of hash would.
export const reload = () => window.dispatchEvent(new HashChangeEvent("hashchange"));

// Go to a page; going to the page already shown renders it again.
export function navigate(path, query) {
  const target = href(path, query);
  if (target === location.hash) reload();
  else location.hash = target;
}
