// One action: what it was asked (params), where it stands, what it produced, its decision,
// and its transitions live. The timeline follows the event stream; each new transition
// re-reads the status for the panels (one read at a time, the newest answer last).

import { api, paths } from "./api.js";
import { fill, formatTime, h, kvTable, notice, section } from "./dom.js";
import { decisionForm } from "./decision_form.js";
import { TERMINAL, stateAfter, stateBadge } from "./lifecycle.js";
import { liveTimeline } from "./timeline.js";

const POLL_MS = 3000; // when the stream is not live
const REFRESH_DELAY_MS = 150; // transitions that come together cost one status read

function temporalLink(info, actionId) {
  if (!info.temporal_ui) return null;
  const base = info.temporal_ui.replace(/\/+$/, "");
  const namespace = encodeURIComponent(info.namespace);
  const workflow = encodeURIComponent(`action-${actionId}`); // karma/ids.py WORKFLOW_ID_PREFIX
  const href = `${base}/namespaces/${namespace}/workflows/${workflow}`;
  return h(
    "a",
    { href, target: "_blank", rel: "noopener noreferrer", testid: "temporal-link" },
    "Open in Temporal Web UI",
  );
}

function errorView(error) {
  const { type, message, fields = [], ...rest } = error;
  const told = Object.entries(rest).filter(([, v]) => v !== null && v !== "" && v !== undefined);
  return h(
    "div",
    { class: "problem", testid: "action-error" },
    h("strong", {}, type),
    h("p", {}, message),
    fields.length
      ? h("ul", {}, fields.map((f) => h("li", {}, h("code", {}, f.field), ": ", f.reason)))
      : null,
    kvTable(Object.fromEntries(told), "action-error-more"),
  );
}

function decisionView(decision) {
  return kvTable(
    {
      verdict: decision.verdict,
      by: decision.by,
      reason: decision.reason,
      at: formatTime(decision.at, { millis: true }),
      automatic: decision.automatic ? "yes (timeout policy)" : "no",
    },
    "decision",
  );
}

export function actionPage(main, context, route) {
  const actionId = route.parts[1];
  const title = h("h1", { testid: "action-type" }, "Action");
  const state = h("span", { testid: "action-state-holder" });
  const attempt = h("span", { testid: "action-attempt" });
  const extra = h("p", { class: "help", testid: "action-notes" });
  const status = notice("action-status"); // what came of the person's cancel or decision
  const reads = notice("action-read-status"); // why the status cannot be read (now)
  const cancel = h(
    "button",
    { type: "button", class: "danger", testid: "cancel-button", hidden: true },
    "Cancel",
  );
  const params = section("Params", "params", h("p", { class: "empty" }, "loading…"));
  const outputs = section("Outputs", "outputs");
  const error = section("Error", "error");
  const compensated = section("Compensated steps", "compensated-steps");
  const askedDecided = section("Decision", "decision-panel");
  const decision = decisionForm(actionId, context, {
    onDecided: (verdict) => {
      status.message(`Decision sent: ${verdict}.`);
      refresh();
    },
  });
  const timeline = liveTimeline(actionId, {
    onTransition: (transition, via) => {
      showState();
      if (via === "stream") refreshSoon();
    },
    onStreamLost: (detail) => {
      const why = `${detail}; reading the status every few seconds instead`;
      status.problem({ title: "Live updates stopped", detail: why });
      startPolling();
      refresh();
    },
  });
  error.hidden = compensated.hidden = askedDecided.hidden = true;
  main.append(
    h(
      "header",
      { class: "action-header" },
      title,
      h("p", { class: "meta" }, h("code", { testid: "action-id" }, actionId), state, attempt),
      extra,
      h("p", { class: "buttons" }, temporalLink(context.info, actionId), cancel),
    ),
    reads.element,
    status.element,
    decision.element,
    h("div", { class: "grid" }, params, outputs, error, compensated, askedDecided),
    timeline.element,
  );

  let current = null; // the newest status read
  let failed = null; // why the last read failed
  let reading = false;
  let again = false;
  let stopped = false;
  let soon = null;
  let poll = null;
  let opened = false; // the event stream

  function showState() {
    const known = [...timeline.transitions(), ...(current ? current.transitions : [])];
    const newest = stateAfter(known) || (current && current.state);
    fill(state, stateBadge(newest, "action-state"));
    cancel.hidden = !newest || TERMINAL.has(newest);
    if (newest && TERMINAL.has(newest)) stopPolling();
  }

  function requestArgs() {
    const requested = [...timeline.transitions(), ...(current ? current.transitions : [])].find(
      (t) => t.event_type === "action.requested",
    );
    return requested ? requested.attrs.args || {} : null;
  }

  function show(s) {
    current = s;
    title.textContent = s.action_type;
    attempt.textContent = s.attempt ? `attempt ${s.attempt}` : "";
    const notes = [];
    if (s.pending_callbacks) notes.push(`${s.pending_callbacks} callbacks not handled yet`);
    if (s.from_ledger) notes.push("from the ledger (Temporal no longer holds it)");
    extra.textContent = notes.join(" · ");
    const args = requestArgs();
    const unknown = h("p", { class: "empty" }, "not known");
    fill(params, h("h2", {}, "Params"), args ? kvTable(args, "params-table") : unknown);
    fill(outputs, h("h2", {}, "Outputs"), kvTable(s.outputs, "outputs-table"));
    error.hidden = !s.error;
    if (s.error) fill(error, h("h2", {}, "Error"), errorView(s.error));
    compensated.hidden = !s.compensated_steps.length;
    const steps = s.compensated_steps.map((step) => h("li", {}, step));
    fill(compensated, h("h2", {}, "Compensated steps"), h("ul", {}, steps));
    // While the form asks, it shows the question; once decided, this panel tells both.
    askedDecided.hidden = !s.decision;
    if (s.decision) {
      fill(
        askedDecided,
        h("h2", {}, "Decision"),
        decisionView(s.decision),
        s.decision_request ? h("h3", {}, "Asked") : null,
        s.decision_request ? kvTable(s.decision_request, "decision-request-asked") : null,
      );
    }
    const asks = s.state === "WAITING" && s.decision_request && !s.decision;
    if (asks) decision.show(s.decision_request);
    else decision.hide();
    if (!timeline.streaming) timeline.merge(s.transitions, "status");
    showState();
    if (!opened && !timeline.ended) {
      opened = true; // once: a stream that stops for good leaves polling in charge
      stopPolling();
      timeline.open();
    }
  }

  async function refresh() {
    if (stopped) return;
    if (reading) {
      again = true;
      return;
    }
    reading = true;
    try {
      const answer = await api.get(paths.action(actionId));
      if (stopped) return; // left meanwhile: open nothing
      failed = null;
      reads.clear();
      show(answer);
    } catch (problem) {
      failed = problem;
      if (!stopped) reads.problem(problem);
    } finally {
      reading = false;
      if (again) {
        again = false;
        refresh();
      }
    }
  }

  function refreshSoon() {
    clearTimeout(soon);
    soon = setTimeout(refresh, REFRESH_DELAY_MS);
  }

  function startPolling() {
    if (!poll && !timeline.ended) poll = setInterval(refresh, POLL_MS);
  }

  function stopPolling() {
    clearInterval(poll);
    poll = null;
  }

  cancel.addEventListener("click", async () => {
    if (!window.confirm(`Cancel ${actionId}? A transactional action compensates first.`)) return;
    cancel.disabled = true;
    try {
      await api.post(paths.cancel(actionId));
      status.message("Cancel requested.");
      refreshSoon();
    } catch (problem) {
      status.problem(problem);
    } finally {
      cancel.disabled = false;
    }
  });

  refresh().then(() => {
    // Unavailable for now (503, no answer): read again until it answers; not for a 404.
    const passing = failed && (failed.status === 0 || failed.status >= 500);
    if (!current && !stopped && passing) startPolling();
  });
  return () => {
    stopped = true;
    clearTimeout(soon);
    stopPolling();
    timeline.close();
  };
}
