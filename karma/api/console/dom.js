// Building the page from data: elements with text nodes only (never HTML from the server),
// the problem box, key/value tables and times.

/**
 * An element. `attrs`: `testid` → data-testid, `on<event>` → a listener, `true`/`false` →
 * a boolean attribute present or not, anything else → an attribute. Children: nodes,
 * strings (text), arrays of them; null, undefined and false are left out.
 */
export function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "testid") element.dataset.testid = value;
    else if (name.startsWith("on") && typeof value === "function") {
      element.addEventListener(name.slice(2), value);
    } else if (value === true) element.setAttribute(name, "");
    else element.setAttribute(name, String(value));
  }
  append(element, children);
  return element;
}

function append(parent, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(parent, child);
    else parent.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replace an element's children. */
export function fill(element, ...children) {
  element.replaceChildren();
  append(element, children);
  return element;
}

/** What an error says, for the person: the problem's detail and each field's reason. */
export function problemBox(error, testid = "problem") {
  const fields = error.errors || [];
  return h(
    "div",
    { class: "problem", role: "alert", testid },
    h("strong", {}, error.title || "Error"),
    error.detail || error.message ? h("p", {}, error.detail || error.message) : null,
    fields.length
      ? h("ul", {}, fields.map((e) => h("li", {}, h("code", {}, e.field), ": ", e.reason)))
      : null,
  );
}

/** A notice area that shows one problem or message at a time. */
export function notice(testid) {
  const area = h("div", { testid, "aria-live": "polite" });
  return {
    element: area,
    problem: (error) => fill(area, problemBox(error, `${testid}-problem`)),
    message: (text) => fill(area, h("p", { class: "message" }, text)),
    clear: () => fill(area),
  };
}

/** A value as text: strings as they are, anything else as JSON. */
export function asText(value) {
  if (typeof value === "string") return value;
  if (value === undefined) return "";
  return JSON.stringify(value, null, 2);
}

const isStructured = (value) => typeof value === "object" && value !== null;

/** A two-column table of an object's entries (objects and arrays as JSON). */
export function kvTable(object, testid) {
  const entries = Object.entries(object || {});
  if (!entries.length) return h("p", { class: "empty", testid }, "none");
  return h(
    "table",
    { class: "kv", testid },
    h(
      "tbody",
      {},
      entries.map(([key, value]) =>
        h(
          "tr",
          { "data-key": key },
          h("th", { scope: "row" }, key),
          h("td", {}, isStructured(value) ? h("pre", {}, asText(value)) : asText(value)),
        ),
      ),
    ),
  );
}

const pad = (n, width = 2) => String(n).padStart(width, "0");

/** An ISO time as local `YYYY-MM-DD HH:MM:SS` (with `.mmm` when `millis`); "" for none. */
export function formatTime(iso, { millis = false } = {}) {
  if (!iso) return "";
  const t = new Date(iso);
  if (Number.isNaN(t.getTime())) return String(iso);
  const date = `${t.getFullYear()}-${pad(t.getMonth() + 1)}-${pad(t.getDate())}`;
  const time = `${pad(t.getHours())}:${pad(t.getMinutes())}:${pad(t.getSeconds())}`;
  return `${date} ${time}${millis ? `.${pad(t.getMilliseconds(), 3)}` : ""}`;
}

/** A <time> element with the full ISO time as its title. */
export function timeElement(iso, options) {
  if (!iso) return h("span", { class: "empty" }, "—");
  return h("time", { datetime: iso, title: iso }, formatTime(iso, options));
}

/** A section with a heading; `testid` on the section. */
export function section(title, testid, ...children) {
  return h("section", { class: "panel", testid }, h("h2", {}, title), ...children);
}
