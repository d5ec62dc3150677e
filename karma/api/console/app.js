// The console: who is logged in, the top navigation and the hash router. Each page is a
// function `(main, context, route) → cleanup` (cleanup stops its timers and streams).

import { ApiError, api, onUnauthorized, paths } from "./api.js";
import { fill, h, problemBox } from "./dom.js";
import { loginPage } from "./page_login.js";
import { actionsPage } from "./page_actions.js";
import { actionPage } from "./page_action.js";
import { dlqPage } from "./page_dlq.js";
import { registryPage, typePage } from "./page_registry.js";

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const sessionName = document.querySelector("[data-testid=session-name]");
const logoutButton = document.querySelector("[data-testid=logout]");

const context = {
  info: { temporal_ui: null, namespace: "default", auth: false },
  session: null, // {key_id, name, scopes, tenant}; null before login
  navigate: (hash) => {
    if (location.hash === hash) route();
    else location.hash = hash;
  },
};

let cleanup = null;
let loggingIn = false;

function leavePage() {
  if (cleanup) cleanup();
  cleanup = null;
}

/** `#/actions/act_1?state=WAITING` → {parts: ["actions", "act_1"], query}. */
function parseHash() {
  const [path, query = ""] = location.hash.replace(/^#\/?/, "").split("?", 2);
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { parts, query: new URLSearchParams(query) };
}

function pageFor(parts) {
  const [first, second] = parts;
  if (first === "actions" && second) return actionPage;
  if (first === "registry" && second) return typePage;
  if (first === "registry") return registryPage;
  if (first === "dlq") return dlqPage;
  return actionsPage;
}

function markNav(parts) {
  const current = ["registry", "dlq"].includes(parts[0]) ? parts[0] : "actions";
  for (const link of nav.querySelectorAll("a[data-page]")) {
    if (link.dataset.page === current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

function route() {
  if (loggingIn) return;
  leavePage();
  const current = parseHash();
  if (!current.parts.length) {
    location.replace("#/actions");
    return;
  }
  markNav(current.parts);
  const page = pageFor(current.parts);
  main.replaceChildren();
  cleanup = page(main, context, current) || null;
  main.focus({ preventScroll: true });
}

function showSession(session) {
  context.session = session;
  nav.hidden = false;
  sessionName.textContent = session ? session.name : "";
  logoutButton.hidden = !context.info.auth;
}

function askForKey() {
  leavePage();
  loggingIn = true;
  nav.hidden = true;
  context.session = null;
  cleanup = loginPage(main, async (session) => {
    loggingIn = false;
    showSession(session);
    route();
  });
}

async function logout() {
  try {
    await api.delete(paths.session);
  } catch (error) {
    fill(main, problemBox(error));
    return;
  }
  askForKey();
}

async function start() {
  onUnauthorized(() => {
    if (!loggingIn) askForKey();
  });
  logoutButton.addEventListener("click", logout);
  window.addEventListener("hashchange", route);
  try {
    context.info = await api.get(paths.info);
  } catch (error) {
    fill(main, problemBox(error));
    return;
  }
  let session = null;
  try {
    session = await api.get(paths.session);
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    if (error.status === 401) return; // the login form is up (onUnauthorized)
    if (error.status !== 404) {
      fill(main, problemBox(error));
      return;
    }
    // 404: this API has no sessions (no keys): the console runs without login
  }
  showSession(session);
  route();
}

start().catch((error) => fill(main, problemBox(error), h("p", {}, "Reload the page to retry.")));
