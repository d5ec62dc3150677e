// The actions list: filters (kept in the address, so a filtered list can be shared), a table
// newest first, pages by the server's token, refreshed while the page is open.

import { api, paths, withQuery } from "./api.js";
import { fill, h, notice, timeElement } from "./dom.js";
import { STATES, stateBadge } from "./lifecycle.js";

const REFRESH_MS = 3000;
const PAGE_SIZE = 25;
const COLUMNS = ["Action", "Type", "State", "Tenant", "Entity", "Started", "Ended"];
const FILTERS = [
  { name: "type", label: "Type" },
  { name: "state", label: "State" },
  { name: "tenant", label: "Tenant" },
  { name: "entity", label: "Entity" },
  { name: "correlation", label: "Correlation" },
  // Local times in the address and the form; sent to the API as UTC instants.
  { name: "started_after", label: "Started after", time: true },
  { name: "started_before", label: "Started before", time: true },
];

function apiFilters(filters) {
  const out = { ...filters };
  for (const { name, time } of FILTERS) {
    if (time && out[name]) {
      const instant = new Date(out[name]);
      out[name] = Number.isNaN(instant.getTime()) ? out[name] : instant.toISOString();
    }
  }
  return out;
}

function filterField({ name, label, time }, value, types) {
  const id = `filter-${name}`;
  let input;
  if (name === "state") {
    input = h(
      "select",
      { id, name, testid: id },
      h("option", { value: "" }, "any"),
      STATES.map((s) => h("option", { value: s, selected: s === value }, s)),
    );
  } else if (time) {
    input = h("input", { id, name, value, testid: id, type: "datetime-local", step: 1 });
  } else {
    const list = name === "type" ? "known-types" : null;
    input = h("input", { id, name, value, testid: id, list });
  }
  return h("div", { class: "field" }, h("label", { for: id }, label), input, types);
}

function actionRow(action) {
  const href = `#/actions/${encodeURIComponent(action.action_id)}`;
  const link = h("a", { href, testid: "action-link" }, action.action_id);
  return h(
    "tr",
    { testid: "action-row", "data-action-id": action.action_id },
    h("td", { class: "id" }, link),
    h("td", {}, action.action_type),
    h("td", {}, stateBadge(action.state, "action-row-state")),
    h("td", {}, action.tenant),
    h("td", {}, action.entity_id),
    h("td", {}, timeElement(action.started_at)),
    h("td", {}, timeElement(action.closed_at)),
  );
}

export function actionsPage(main, context, route) {
  const filters = Object.fromEntries(FILTERS.map((f) => [f.name, route.query.get(f.name) || ""]));
  const types = h("datalist", { id: "known-types" });
  const form = h(
    "form",
    { class: "filters", testid: "actions-filters", role: "search", "aria-label": "Filter actions" },
    FILTERS.map((f) => filterField(f, filters[f.name], f.name === "type" ? types : null)),
    h(
      "div",
      { class: "field buttons" },
      h("button", { type: "submit", class: "primary", testid: "filter-apply" }, "Filter"),
      h("a", { href: "#/actions", class: "button", testid: "filter-clear" }, "Clear"),
    ),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const data = Object.fromEntries(new FormData(form));
    context.navigate(`#${withQuery("/actions", data)}`);
  });

  const status = notice("actions-status");
  const rows = h("tbody", { testid: "actions-rows" });
  const table = h(
    "table",
    { class: "list", testid: "actions-table" },
    h("caption", { class: "visually-hidden" }, "Actions, newest first"),
    h(
      "thead",
      {},
      h("tr", {}, COLUMNS.map((c) => h("th", { scope: "col" }, c))),
    ),
    rows,
  );
  const button = (testid, text) => h("button", { type: "button", testid, disabled: true }, text);
  const previous = button("prev-page", "← Newer");
  const next = button("next-page", "Older →");
  const where = h("span", { class: "page-number", testid: "page-number" });
  const refreshed = h("span", { class: "help", testid: "refreshed", "aria-live": "off" });
  main.append(
    h("h1", {}, "Actions"),
    form,
    status.element,
    table,
    h("nav", { class: "pager", "aria-label": "Pages" }, previous, where, next, refreshed),
  );

  const tokens = [null]; // the page token of each page seen; the last is the current page
  let nextToken = null;
  let loading = false;
  let again = false; // asked for while loading: load once more after
  let stopped = false;

  async function load() {
    if (stopped) return;
    if (loading) {
      again = true;
      return;
    }
    loading = true;
    try {
      const query = { ...apiFilters(filters), page_size: PAGE_SIZE, page_token: tokens.at(-1) };
      const page = await api.get(withQuery(paths.actions, query));
      if (stopped) return;
      nextToken = page.next_page_token;
      const none = h("tr", {}, h("td", { colspan: 7, class: "empty" }, "No actions."));
      fill(rows, page.actions.length ? page.actions.map(actionRow) : none);
      status.clear();
      refreshed.textContent = `refreshed ${new Date().toLocaleTimeString()}`;
    } catch (error) {
      if (!stopped) status.problem(error);
    } finally {
      loading = false;
      previous.disabled = tokens.length === 1;
      next.disabled = !nextToken;
      where.textContent = `page ${tokens.length}`;
      if (again) {
        again = false;
        load();
      }
    }
  }

  previous.addEventListener("click", () => {
    if (tokens.length > 1) tokens.pop();
    load();
  });
  next.addEventListener("click", () => {
    if (nextToken) tokens.push(nextToken);
    load();
  });

  api
    .get(paths.actionTypes)
    .then((list) => fill(types, list.map((t) => h("option", { value: t.type }, t.name))))
    .catch(() => {}); // the list shows its own problem; suggestions are a nicety
  load();
  const timer = setInterval(load, REFRESH_MS);
  return () => {
    stopped = true;
    clearInterval(timer);
  };
}
