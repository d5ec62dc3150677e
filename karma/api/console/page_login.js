// The login form: an API key becomes the session cookie (HttpOnly: the console never
// holds the key after this form).

import { api, paths } from "./api.js";
import { h, notice } from "./dom.js";

export function loginPage(main, loggedIn) {
  const status = notice("login-error");
  const key = h("input", {
    id: "login-key",
    type: "password",
    name: "key",
    autocomplete: "current-password",
    required: true,
    testid: "login-key",
  });
  const submit = h(
    "button",
    { type: "submit", class: "primary", testid: "login-submit" },
    "Log in",
  );
  const form = h(
    "form",
    { class: "login", testid: "login-form", "aria-labelledby": "login-title" },
    h("h1", { id: "login-title" }, "Log in to Karma"),
    h("p", { class: "help" }, "Paste an API key (", h("code", {}, "karma api-key create"), ")."),
    h("label", { for: "login-key" }, "API key"),
    key,
    submit,
    status.element,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    submit.disabled = true;
    status.clear();
    try {
      const session = await api.post(paths.session, { key: key.value.trim() });
      key.value = "";
      loggedIn(session);
    } catch (error) {
      status.problem(error);
      submit.disabled = false;
      key.focus();
    }
  });
  main.replaceChildren(form);
  key.focus();
  return null;
}
