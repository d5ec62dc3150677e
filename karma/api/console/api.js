// The console's calls to the Karma API. The session cookie authenticates them; every change
// carries X-Karma-Console, without which the server refuses a cookie-authenticated change.

const CHANGE_HEADERS = { "Content-Type": "application/json", "X-Karma-Console": "1" };

/** An answer other than 2xx, as the server's problem document tells it. */
export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.title = problem.title || `HTTP ${status}`;
    this.detail = problem.detail || "";
    this.errors = Array.isArray(problem.errors) ? problem.errors : [];
  }
}

// Told of every 401, so the app can ask for a key again wherever it happened.
const unauthorized = new EventTarget();

export function onUnauthorized(listener) {
  unauthorized.addEventListener("unauthorized", listener);
}

async function problemOf(response) {
  try {
    const body = await response.json();
    if (body && typeof body === "object") return body;
  } catch {
    // not JSON (a proxy's page, say): the status line is all there is
  }
  return { title: response.statusText, detail: `HTTP ${response.status} ${response.statusText}` };
}

async function call(method, path, body) {
  const init = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
  if (method !== "GET") {
    Object.assign(init.headers, CHANGE_HEADERS);
    if (body !== undefined) init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (exc) {
    throw new ApiError(0, { title: "Network error", detail: `the API did not answer (${exc})` });
  }
  if (!response.ok) {
    const error = new ApiError(response.status, await problemOf(response));
    if (response.status === 401) unauthorized.dispatchEvent(new Event("unauthorized"));
    throw error;
  }
  if (response.status === 204) return null;
  return response.json();
}

/** A path with the query's non-empty values. */
export function withQuery(path, query) {
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(query)) {
    if (value !== undefined && value !== null && value !== "") params.set(name, String(value));
  }
  const text = params.toString();
  return text ? `${path}?${text}` : path;
}

export const api = {
  get: (path) => call("GET", path),
  post: (path, body = {}) => call("POST", path, body),
  delete: (path) => call("DELETE", path),
};

export const paths = {
  info: "/v1/info",
  session: "/v1/session",
  actions: "/v1/actions",
  action: (id) => `/v1/actions/${encodeURIComponent(id)}`,
  transitions: (id) => `/v1/actions/${encodeURIComponent(id)}/transitions`,
  cancel: (id) => `/v1/actions/${encodeURIComponent(id)}/cancel`,
  decision: (id) => `/v1/actions/${encodeURIComponent(id)}/decision`,
  actionTypes: "/v1/action-types",
  actionType: (type) => `/v1/action-types/${encodeURIComponent(type)}`,
  dlq: "/v1/dlq",
  replay: "/v1/dlq/replay",
};
