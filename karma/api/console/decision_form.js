// Approve or reject an interactive action that waits for a decision. Built once per action
// page and only shown or hidden, so a refresh never clears what the person is typing.

import { api, paths } from "./api.js";
import { h, kvTable, notice } from "./dom.js";

export function decisionForm(actionId, context, { onDecided }) {
  const status = notice("decision-status");
  const request = h("div", { testid: "decision-request" });
  const by = h("input", { id: "decision-by", name: "by", required: true, testid: "decision-by" });
  const reason = h("textarea", {
    id: "decision-reason",
    name: "reason",
    rows: 3,
    testid: "decision-reason",
    "aria-describedby": "decision-reason-help",
  });
  const approve = h(
    "button",
    { type: "submit", value: "approve", class: "primary", testid: "approve-button" },
    "Approve",
  );
  const reject = h(
    "button",
    { type: "submit", value: "reject", class: "danger", testid: "reject-button" },
    "Reject",
  );
  const form = h(
    "form",
    {
      class: "panel decision",
      testid: "decision-form",
      "aria-labelledby": "decision-title",
      hidden: true,
    },
    h("h2", { id: "decision-title" }, "Decision needed"),
    request,
    h("div", { class: "field" }, h("label", { for: "decision-by" }, "Decided by"), by),
    h(
      "div",
      { class: "field" },
      h("label", { for: "decision-reason" }, "Reason"),
      reason,
      h("small", { id: "decision-reason-help", class: "help" }, "Required to reject."),
    ),
    h("div", { class: "buttons" }, approve, reject),
    status.element,
  );

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const decision = event.submitter ? event.submitter.value : "approve";
    if (decision === "reject" && !reason.value.trim()) {
      status.problem({ title: "A rejection needs a reason", errors: [] });
      reason.focus();
      return;
    }
    approve.disabled = reject.disabled = true;
    status.clear();
    try {
      await api.post(paths.decision(actionId), {
        decision,
        by: by.value.trim(),
        reason: reason.value.trim(),
      });
      status.message(`Sent: ${decision}.`);
      onDecided(decision);
    } catch (error) {
      status.problem(error);
    } finally {
      approve.disabled = reject.disabled = false;
    }
  });

  return {
    element: form,
    /** Show the question (once per page: what was typed stays). */
    show(decisionRequest) {
      if (!form.hidden) return;
      request.replaceChildren(kvTable(decisionRequest, "decision-request-table"));
      if (!by.value && context.session) by.value = context.session.name;
      status.clear();
      form.hidden = false;
    },
    hide() {
      form.hidden = true;
    },
  };
}
