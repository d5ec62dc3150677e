// The registered action types, and a form per type that requests an action of it.

import { api, paths } from "./api.js";
import { fill, h, notice } from "./dom.js";
import { schemaForm } from "./schema_form.js";

const COLUMNS = ["Type", "Name", "Description", "Mode", "Category", "Version"];

// What every request may carry besides its params (ActionRequestBody in karma/api/app.py).
const REQUEST_SCHEMA = {
  properties: {
    idempotency_key: {
      type: "string",
      title: "Idempotency key",
      description: "The same key again answers with the existing action: it never runs twice.",
    },
    entity_id: { type: "string", title: "Entity", description: "What the action acts on." },
    tenant: { type: "string", title: "Tenant" },
    correlation_id: {
      type: "string",
      title: "Correlation id",
      description: "Ties actions of one operation together.",
    },
  },
};

const typeHref = (type) => `#/registry/${encodeURIComponent(type)}`;

export function registryPage(main) {
  const status = notice("registry-status");
  const rows = h("tbody", { testid: "type-rows" });
  main.append(
    h("h1", {}, "Registry"),
    status.element,
    h(
      "table",
      { class: "list", testid: "type-list" },
      h("thead", {}, h("tr", {}, COLUMNS.map((c) => h("th", { scope: "col" }, c)))),
      rows,
    ),
  );
  api
    .get(paths.actionTypes)
    .then((types) =>
      fill(
        rows,
        types.map((t) =>
          h(
            "tr",
            { testid: "type-row", "data-type": t.type },
            h(
              "td",
              {},
              h("a", { href: typeHref(t.type), testid: "type-link", "data-type": t.type }, t.type),
            ),
            h("td", {}, t.name),
            h("td", {}, t.description),
            h("td", {}, t.mode),
            h("td", {}, t.category),
            h("td", {}, t.version),
          ),
        ),
      ),
    )
    .catch((error) => status.problem(error));
  return null;
}

export function typePage(main, context, route) {
  const type = route.parts[1];
  const status = notice("request-status");
  main.append(
    h("p", { class: "crumbs" }, h("a", { href: "#/registry" }, "Registry"), " / ", type),
    status.element,
  );
  let stopped = false;
  api
    .get(paths.actionType(type))
    .then((actionType) => {
      if (!stopped) main.append(requestForm(actionType, context));
    })
    .catch((error) => status.problem(error));
  return () => {
    stopped = true;
  };
}

function requestForm(actionType, context) {
  const status = notice("request-problem");
  const params = schemaForm(actionType.params_schema, { prefix: "param", errorPrefix: "params." });
  const request = schemaForm(REQUEST_SCHEMA, { prefix: "request" });
  const tenant = request.element.querySelector("#request-tenant");
  if (context.session && context.session.tenant) {
    tenant.value = context.session.tenant; // the key is bound to it: no other is allowed
    tenant.readOnly = true;
  }
  const submit = h(
    "button",
    { type: "submit", class: "primary", testid: "request-submit" },
    "Request action",
  );
  const form = h(
    "form",
    { class: "request", testid: "request-form", novalidate: true, "aria-labelledby": "type-title" },
    h("h1", { id: "type-title", testid: "type-title" }, actionType.name),
    h("p", {}, actionType.description),
    h(
      "p",
      { class: "meta" },
      h("code", {}, actionType.type),
      ` · ${actionType.mode} · ${actionType.category || "no category"}`,
      ` · version ${actionType.version}`,
    ),
    h("fieldset", {}, h("legend", {}, "Params"), params.element),
    h("fieldset", {}, h("legend", {}, "Request"), request.element),
    status.element,
    h("p", { class: "buttons" }, submit),
  );

  // Every reason in the problem box, and each field's beside it too.
  function refuse(error) {
    params.clearErrors();
    request.clearErrors();
    request.showErrors(params.showErrors(error.errors));
    status.problem(error);
    if (!params.focusFirstError()) request.focusFirstError();
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    status.clear();
    params.clearErrors();
    request.clearErrors();
    const p = params.values();
    const r = request.values();
    const errors = [...p.errors, ...r.errors];
    if (errors.length) {
      refuse({ title: "Check the form", detail: "", errors });
      return;
    }
    submit.disabled = true;
    try {
      const body = { type: actionType.type, params: p.values, ...r.values };
      const created = await api.post(paths.actions, body);
      context.navigate(`#/actions/${encodeURIComponent(created.action_id)}`);
    } catch (error) {
      refuse(error);
      submit.disabled = false;
    }
  });
  return form;
}
