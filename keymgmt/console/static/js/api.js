// The admin API, called with the signed-in pass in X-API-KEY.
//
// The pass lives in sessionStorage: it survives a reload of this tab but no other tab sees it,
// and it is gone when the tab closes. It is never put in localStorage (kept on disk until
// removed) nor in a URL (kept in history and server logs).
const PASS = "gateway.pass";
const LAST_ACTIVE = "gateway.lastActive";
const IDLE_LIMIT_MS = 15 * 60 * 1000;

// One line for a problem answer: its detail, or each field's messages.
function describe(status, problem) {
  const detail = problem && problem.detail;
  if (typeof detail === "string") return detail;
  if (detail) {
    return Object.entries(detail).map(([name, messages]) => `${name}: ${[].concat(messages).join(" ")}`).join("; ");
  }
  return (problem && problem.title) || `HTTP ${status}`;
}

export class ApiError extends Error {
  constructor(status, problem) {
    super(describe(status, problem));
    this.status = status;
    this.detail = problem && problem.detail;
  }

  // The API's messages by field: {"costLimitInUsd": ["Must be ..."]}.
  get fieldErrors() {
    return this.detail && typeof this.detail === "object" ? this.detail : {};
  }
}

export const session = {
  passRequired: true,
  get pass() { return sessionStorage.getItem(PASS); },
  get signedIn() { return !this.passRequired || this.pass !== null; },
  signIn(pass) {
    sessionStorage.setItem(PASS, pass);
    this.touch();
  },
  signOut() {
    sessionStorage.removeItem(PASS);
    sessionStorage.removeItem(LAST_ACTIVE);
  },
  touch() { sessionStorage.setItem(LAST_ACTIVE, String(Date.now())); },
  idle() {
    const last = Number(sessionStorage.getItem(LAST_ACTIVE) || 0);
    return Date.now() - last > IDLE_LIMIT_MS;
  },
};

export async function call(method, path, body, pass = session.pass) {
  const headers = { Accept: "application/json" };
  if (pass !== null && pass !== undefined) headers["X-API-KEY"] = pass;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store", credentials: "omit",
  });
  if (response.status === 401 && pass === session.pass) {
    window.dispatchEvent(new Event("gateway:unauthorized"));
  }
  const text = await response.text();
  const payload = text ? JSON.parse(text) : null;
  if (!response.ok) throw new ApiError(response.status, payload);
  return payload;
}

const one = (collection, id) => `${collection}/${encodeURIComponent(id)}`;

// A query string with each list's values repeated (tags=a&tags=b); empty values left out.
function queryOf(params) {
  const query = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    for (const each of [].concat(value)) if (each !== "" && each !== undefined) query.append(name, each);
  }
  return query;
}

export const api = {
  config: () => fetch("config.json", { cache: "no-store" }).then((r) => r.json()),
  searchKeys: (query) => call("POST", "/api/v2/key-management/keys", query),
  key: (id) => call("GET", `/api/key-management/keys/${encodeURIComponent(id)}`),
  createKey: (fields) => call("PUT", "/api/key-management/keys", fields),
  updateKey: (id, fields) =>
    call("PATCH", `/api/key-management/keys/${encodeURIComponent(id)}`, fields),
  deleteKey: (id) => call("DELETE", `/api/key-management/keys/${encodeURIComponent(id)}`),
  spend: (id) => call("GET", `/api/reporting/keys/${encodeURIComponent(id)}`),
  usage: (id, params) =>
    call("GET", `/api/reporting/keys/${encodeURIComponent(id)}/usage?${new URLSearchParams(params)}`),
  keyEvents: (id, params) =>
    call("GET", `/api/reporting/keys/${encodeURIComponent(id)}/events?${new URLSearchParams(params)}`),
  topKeys: (params) => call("GET", `/api/reporting/top-keys?${new URLSearchParams(params)}`),
  searchEvents: (query) => call("POST", "/api/v2/events", query),
  settings: () => call("GET", "/api/provider-settings"),
  createSetting: (fields) => call("PUT", "/api/provider-settings", fields),
  updateSetting: (id, fields) => call("PATCH", `/api/provider-settings/${encodeURIComponent(id)}`, fields),
  deleteSetting: (id) => call("DELETE", `/api/provider-settings/${encodeURIComponent(id)}`),
  routes: () => call("GET", "/api/routes"),
  createRoute: (fields) => call("POST", "/api/routes", fields),
  updateRoute: (id, fields) => call("PATCH", one("/api/routes", id), fields),
  deleteRoute: (id) => call("DELETE", one("/api/routes", id)),
  policies: (tags = []) => call("GET", `/api/policies?${queryOf({ tags })}`),
  createPolicy: (fields) => call("POST", "/api/policies", fields),
  updatePolicy: (id, fields) => call("PATCH", one("/api/policies", id), fields),
  deletePolicy: (id) => call("DELETE", one("/api/policies", id)),
  users: (params) => call("GET", `/api/users?${queryOf(params)}`),
  createUser: (fields) => call("POST", "/api/users", fields),
  updateUser: (id, fields) => call("PATCH", one("/api/users", id), fields),
  deleteUser: (id) => call("DELETE", one("/api/users", id)),
  userSpend: (id) => call("GET", one("/api/reporting/users", id)),
};
