// The action lifecycle as the console shows it (karma/lifecycle.py is the source of truth).

import { h } from "./dom.js";

export const STATES = [
  "REQUESTED",
  "ACCEPTED",
  "STARTED",
  "RETRYING",
  "WAITING",
  "COMPENSATING",
  "COMPENSATED",
  "SUCCEEDED",
  "FAILED",
  "CANCELLED",
  "TIMED_OUT",
  "SKIPPED",
];

export const TERMINAL = new Set(["SUCCEEDED", "FAILED", "CANCELLED", "TIMED_OUT", "SKIPPED"]);

export const EVENT_TYPES = [
  "action.requested",
  "action.accepted",
  "action.started",
  "action.retrying",
  "action.waiting",
  "action.progress",
  "action.compensating",
  "action.step_compensated",
  "action.compensated",
  "action.escalated",
  "action.decided",
  "action.succeeded",
  "action.failed",
  "action.cancelled",
  "action.timed_out",
  "action.skipped",
];

// Events within a state: they change nothing of where the action stands.
const WITHIN_A_STATE = new Set([
  "action.progress",
  "action.step_compensated",
  "action.escalated",
  "action.decided",
]);

/** The state an event type moves the action into, or null. */
export function stateOf(eventType) {
  if (WITHIN_A_STATE.has(eventType) || !eventType.startsWith("action.")) return null;
  return eventType.slice("action.".length).toUpperCase();
}

/** The state of the newest transition that changes it (null when none does). */
export function stateAfter(transitions) {
  let newest = null;
  for (const t of transitions) {
    const state = stateOf(t.event_type);
    if (state && (newest === null || t.seq > newest.seq)) newest = { seq: t.seq, state };
  }
  return newest ? newest.state : null;
}

export function stateBadge(state, testid) {
  return h("span", { class: `badge state-${state || "UNKNOWN"}`, testid }, state || "unknown");
}

const short = (value, limit = 120) => {
  const text = typeof value === "string" ? value : JSON.stringify(value);
  return text.length > limit ? `${text.slice(0, limit - 1)}…` : text;
};

/** One line on what a transition says (its attrs), for the timeline. */
export function summarize(transition) {
  const a = transition.attrs || {};
  const parts = [];
  if (a.command && transition.event_type === "action.requested") parts.push(a.command);
  if (a.attempt) parts.push(`attempt ${a.attempt}`);
  if (a.step) parts.push(`step ${a.step}${a.outcome ? `: ${a.outcome}` : ""}`);
  if (a.percent !== undefined) parts.push(`${a.percent}%`);
  if (a.message) parts.push(short(a.message));
  if (a.error) parts.push(`${a.error.type}: ${short(a.error.message)}`);
  if (a.retry_in_ms !== undefined) parts.push(`retry in ${a.retry_in_ms} ms`);
  if (a.decision_request) {
    parts.push(`asks: ${short(a.decision_request.question || a.decision_request)}`);
  }
  if (a.decision) {
    const d = a.decision;
    parts.push(`${d.verdict} by ${d.by}${d.reason ? ` (${short(d.reason)})` : ""}`);
  }
  if (a.external_workflow_id) parts.push(`waits for ${a.external_workflow_id}`);
  if (a.timeout_ms !== undefined) parts.push(`timeout ${a.timeout_ms} ms`);
  if (a.reason) parts.push(short(a.reason));
  if (a.undone) parts.push(`undone: ${a.undone.join(", ") || "nothing"}`);
  if (a.outputs && Object.keys(a.outputs).length) parts.push(`outputs ${short(a.outputs)}`);
  if (a.duration_ms !== undefined) parts.push(`${a.duration_ms} ms`);
  return parts.join(" · ");
}
