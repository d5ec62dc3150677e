// Form fields generated from a JSON Schema object (what karma/params.py emits): a select per
// enum, checkboxes for booleans and multiselects, number inputs, password inputs for secrets
// (writeOnly), a JSON textarea for objects, arrays and untyped values (a password input for
// a secret one). Values come back
// converted to what the schema says; empty optional fields are left out (server defaults).

import { asText, h } from "./dom.js";

const INPUT_FORMATS = { uri: "url", email: "email", date: "date" };

function kindOf(p) {
  if (Array.isArray(p.enum)) return "select";
  if (p.type === "array" && p.items && Array.isArray(p.items.enum)) return "multi";
  if (p.type === "boolean") return "checkbox";
  if (p.type === "number" || p.type === "integer") return "number";
  if (p.type === "string") return p.writeOnly ? "password" : "text";
  return p.writeOnly ? "secret-json" : "json"; // a secret's JSON is typed unseen, on one line
}

function control(kind, id, p, describedBy) {
  const common = { id, name: id, testid: id, "aria-describedby": describedBy };
  const has = p.default !== undefined;
  switch (kind) {
    case "select":
      return h(
        "select",
        common,
        h("option", { value: "" }, "—"),
        p.enum.map((v, i) =>
          h("option", { value: i, selected: has && v === p.default }, asText(v)),
        ),
      );
    case "multi":
      return h(
        "div",
        { ...common, role: "group", class: "choices" },
        p.items.enum.map((v, i) =>
          h(
            "label",
            { class: "choice" },
            h("input", {
              type: "checkbox",
              value: i,
              testid: `${id}-${i}`,
              checked: has && Array.isArray(p.default) && p.default.includes(v),
            }),
            " ",
            asText(v),
          ),
        ),
      );
    case "checkbox":
      return h("input", { ...common, type: "checkbox", checked: p.default === true });
    case "number":
      return h("input", {
        ...common,
        type: "number",
        step: p.type === "integer" ? 1 : "any",
        min: p.minimum,
        max: p.maximum,
        value: has ? p.default : null,
      });
    case "password":
      return h("input", {
        ...common,
        type: "password",
        autocomplete: "new-password",
        value: has ? p.default : null,
      });
    case "secret-json":
      return h("input", {
        ...common,
        type: "password",
        autocomplete: "new-password",
        value: has ? JSON.stringify(p.default) : null,
      });
    case "text":
      return h("input", {
        ...common,
        type: INPUT_FORMATS[p.format] || "text",
        value: has ? p.default : null,
        // A reference whose resolver can list its objects: offered, any other still typed.
        list: Array.isArray(p["x-karma-choices"]) ? `${id}-choices` : null,
      });
    default:
      return h(
        "textarea",
        { ...common, rows: 4, class: "json" },
        has ? JSON.stringify(p.default, null, 2) : "",
      );
  }
}

/** The objects a reference's resolver listed, as the options of its input (or null). */
function choices(id, p) {
  const listed = p["x-karma-choices"];
  if (!Array.isArray(listed)) return null;
  return h(
    "datalist",
    { id: `${id}-choices`, testid: `${id}-choices` },
    listed.map((c) => h("option", { value: asText(c.id) }, asText(c.label || c.id))),
  );
}

/** The value of one field: {value} (absent: no key) or {error}. */
function read(kind, input, p) {
  switch (kind) {
    case "select":
      return input.value === "" ? {} : { value: p.enum[Number(input.value)] };
    case "multi": {
      const boxes = [...input.querySelectorAll("input:checked")];
      const chosen = boxes.map((box) => p.items.enum[Number(box.value)]);
      return chosen.length ? { value: chosen } : {};
    }
    case "checkbox":
      return { value: input.checked };
    case "number": {
      const text = input.value.trim();
      if (text === "") return input.validity.badInput ? { error: "must be a number" } : {};
      const number = Number(text);
      if (!Number.isFinite(number)) return { error: "must be a number" };
      if (p.type === "integer" && !Number.isInteger(number)) {
        return { error: "must be a whole number" };
      }
      return { value: number };
    }
    case "json":
    case "secret-json": {
      const text = input.value.trim();
      if (text === "") return {};
      let value;
      try {
        value = JSON.parse(text);
      } catch (exc) {
        return { error: `not valid JSON (${exc.message})` };
      }
      const isObject = typeof value === "object" && value !== null && !Array.isArray(value);
      if (p.type === "object" && !isObject) {
        return { error: "must be a JSON object" };
      }
      if (p.type === "array" && !Array.isArray(value)) return { error: "must be a JSON array" };
      return { value };
    }
    default:
      return input.value === "" ? {} : { value: input.value };
  }
}

/**
 * Fields of `schema.properties`. `prefix` makes the element ids (`${prefix}-${name}`);
 * `errorPrefix` is how the server names these fields in its problems (`params.`).
 */
export function schemaForm(schema, { prefix, errorPrefix = "" }) {
  const required = new Set(schema.required || []);
  const fields = new Map(); // name → {kind, input, error, p}
  const element = h("div", { class: "fields" });
  for (const [name, p] of Object.entries(schema.properties || {})) {
    const id = `${prefix}-${name}`;
    const kind = kindOf(p);
    const help = p.description
      ? h("small", { id: `${id}-help`, class: "help" }, p.description)
      : null;
    const error = h("p", {
      id: `${id}-error`,
      class: "field-error",
      testid: `${id}-error`,
      hidden: true,
    });
    const described = [help ? `${id}-help` : null, `${id}-error`].filter(Boolean).join(" ");
    const input = control(kind, id, p, described);
    if (required.has(name)) input.setAttribute("aria-required", "true");
    const mark = required.has(name)
      ? h("span", { class: "required", title: "required" }, " *")
      : null;
    const label = p.title || name;
    element.append(
      h(
        "div",
        { class: `field kind-${kind}`, "data-field": name },
        kind === "multi"
          ? h("span", { class: "label", id: `${id}-label` }, label, mark)
          : h("label", { for: id }, label, mark),
        input,
        choices(id, p),
        help,
        error,
      ),
    );
    if (kind === "multi") input.setAttribute("aria-labelledby", `${id}-label`);
    fields.set(name, { kind, input, error, p });
  }

  function setError(name, reason) {
    const field = fields.get(name);
    field.error.textContent = reason;
    field.error.hidden = false;
    field.input.setAttribute("aria-invalid", "true");
  }

  return {
    element,
    /** {values, errors: [{field, reason}]}, checked as far as the schema tells. */
    values() {
      const values = {};
      const errors = [];
      for (const [name, { kind, input, p }] of fields) {
        const answer = read(kind, input, p);
        if (answer.error) errors.push({ field: `${errorPrefix}${name}`, reason: answer.error });
        else if ("value" in answer) values[name] = answer.value;
        else if (required.has(name)) {
          errors.push({ field: `${errorPrefix}${name}`, reason: "required" });
        }
      }
      return { values, errors };
    },
    clearErrors() {
      for (const { input, error } of fields.values()) {
        error.hidden = true;
        error.textContent = "";
        input.removeAttribute("aria-invalid");
      }
    },
    /** Show the errors that name one of these fields beside it; return the others. */
    showErrors(errors) {
      const others = [];
      for (const e of errors) {
        const name = e.field.startsWith(errorPrefix) ? e.field.slice(errorPrefix.length) : null;
        if (name !== null && fields.has(name)) setError(name, e.reason);
        else others.push(e);
      }
      return others;
    },
    focusFirstError() {
      const field = [...fields.values()].find((f) => !f.error.hidden);
      if (field) {
        const focusable = field.kind === "multi" ? field.input.querySelector("input") : field.input;
        focusable.focus();
      }
      return Boolean(field);
    },
  };
}
