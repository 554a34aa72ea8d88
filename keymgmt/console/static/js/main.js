// Start-up: learn whether a pass is needed, sign in, then render the page the hash names.
import { api, session } from "./api.js";
import { h, replace } from "./dom.js";
import { match, parse } from "./router.js";
import * as keys from "./pages/keys.js";
import * as key from "./pages/key.js";
import * as topKeys from "./pages/topkeys.js";
import * as events from "./pages/events.js";
import * as providerSettings from "./pages/settings.js";
import * as routes from "./pages/routes.js";
import * as policies from "./pages/policies.js";
import * as users from "./pages/users.js";
import * as signin from "./pages/signin.js";

// Every page: the paths it answers, its module, and, for those in the header, a label and link
// (`under`: the header link a page belongs to).
const PAGES = [
  { pattern: /^\/keys$/, module: keys, nav: ["Keys", "/keys"] },
  { pattern: /^\/keys\/([^/]+)$/, module: key, under: "/keys" },
  { pattern: /^\/top-keys$/, module: topKeys, nav: ["Top keys", "/top-keys"] },
  { pattern: /^\/events$/, module: events, nav: ["Events", "/events"] },
  { pattern: /^\/settings$/, module: providerSettings, nav: ["Provider settings", "/settings"] },
  { pattern: /^\/routes$/, module: routes, nav: ["Routes", "/routes"] },
  { pattern: /^\/policies$/, module: policies, nav: ["Policies", "/policies"] },
  { pattern: /^\/users$/, module: users, nav: ["Users", "/users"] },
];

const main = document.getElementById("main");
const signOutButton = document.getElementById("signout");

function renderNav(current) {
  const links = PAGES.filter((p) => p.nav).map((p) => {
    const [label, path] = p.nav;
    const active = current && (current.page === p || current.page.under === path);
    return h("a", { href: `#${path}`, "aria-current": active ? "page" : null }, label);
  });
  replace(document.getElementById("nav"), links);
}

async function route() {
  if (!session.signedIn || (session.passRequired && session.idle())) {
    session.signOut();
    signOutButton.hidden = true;
    replace(document.getElementById("nav"));
    signin.render(main, () => route());
    return;
  }
  session.touch();
  signOutButton.hidden = !session.passRequired;
  const { path, query } = parse();
  const found = match(PAGES, path);
  renderNav(found);
  if (!found) {
    replace(main, h("h1", {}, "Not found"), h("p", {}, h("a", { href: "#/keys" }, "Back to keys")));
    return;
  }
  const { module } = found.page;
  document.title = `${module.title} · Gateway console`;
  main.setAttribute("aria-busy", "true");
  try {
    await module.render(main, { params: found.params, query });
  } catch (error) {
    replace(main, h("h1", {}, module.title), h("p", { class: "error", role: "alert" }, error.message));
  } finally {
    main.removeAttribute("aria-busy");
    main.dataset.renders = String(Number(main.dataset.renders || 0) + 1);
  }
}

function signOut() {
  session.signOut();
  route();
}

// Inactivity ends the session: any key or pointer use counts as activity, but the first one
// after the idle limit does not revive a session already over it.
function watchIdle() {
  const expired = () => session.passRequired && session.pass !== null && session.idle();
  for (const kind of ["keydown", "pointerdown"]) {
    document.addEventListener(kind, () => {
      if (expired()) signOut();
      else if (session.signedIn) session.touch();
    }, { capture: true, passive: true });
  }
  setInterval(() => { if (expired()) signOut(); }, 30 * 1000);
}

async function start() {
  const config = await api.config();
  session.passRequired = config.adminPassRequired;
  document.getElementById("mode").textContent = config.adminPassRequired ? "" : "open: ADMIN_PASS unset";
  signOutButton.addEventListener("click", signOut);
  window.addEventListener("hashchange", route);
  window.addEventListener("gateway:unauthorized", signOut);
  watchIdle();
  await route();
}

start();
