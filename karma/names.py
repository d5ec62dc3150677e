"""Names shared by clients, workflows, activities and the bridge (safe to import anywhere)."""

from __future__ import annotations

from typing import Final

# Temporal
ACTION_WORKFLOW: Final = "ActionWorkflow"
PIPELINE_WORKFLOW: Final = "PipelineWorkflow"
ENTROPY_SCAN_WORKFLOW: Final = "EntropyScanWorkflow"
ENTROPY_SCAN_SCHEDULE: Final = "karma-entropy-scan"  # the Temporal Schedule's id
SCAN_ENTROPY: Final = "scan_entropy"
RULE_TRIGGER_WORKFLOW: Final = "RuleTriggerWorkflow"
RULE_SCHEDULE_PREFIX: Final = "karma-rule-"  # a schedule trigger's Temporal Schedule
FIRE_RULE: Final = "fire_rule"
DEFAULT_TASK_QUEUE: Final = "karma-actions"
STATUS_QUERY: Final = "status"
DELIVER_CALLBACK_SIGNAL: Final = "deliver_callback"
# Its name in histories recorded before callbacks were called callbacks everywhere.
DELIVER_EVENT_SIGNAL: Final = "deliver_event"
DECIDE_UPDATE: Final = "decide"

# Activities
PREPARE_ACTION: Final = "prepare_action"
EXECUTE: Final = "execute"
ASK: Final = "ask"
RUN_STEP: Final = "run_step"
ITERATE: Final = "iterate"
# Before each executor method had its own activity (workflows started then still call it).
EXECUTE_ACTION: Final = "execute_action"
EMIT_TRANSITIONS: Final = "emit_transitions"
HANDLE_CALLBACK: Final = "handle_callback"
# Its name in histories recorded before (runs started then still call it).
HANDLE_EVENT: Final = "handle_event"
COMPENSATE_STEP: Final = "compensate_step"
REPORT_UNDONE: Final = "report_undone"

# Kafka topics (defaults; configurable through KARMA_KAFKA__TOPICS__*)
TOPIC_REQUESTED: Final = "actions.requested"
TOPIC_PROGRESS: Final = "actions.progress"
TOPIC_RESULT: Final = "actions.result"
TOPIC_DLQ: Final = "actions.dlq"
TOPIC_CALLBACKS: Final = "actions.events"
TOPIC_OBSERVATIONS: Final = "events.normalized"
TOPIC_DEVIATIONS: Final = "entropy.deviation"
TOPIC_PREDICTIONS: Final = "entropy.predicted"
TOPIC_STREAM: Final = "actions.stream"  # streaming actions' items (key: action id)
STREAM_SEQ_HEADER: Final = "karma-stream-seq"
# Karma's own transitions carry it (value b"1"), so consumers route without parsing: the
# ingress leaves them alone on `actions.requested`, the ledger sink takes only them there.
TRANSITION_HEADER: Final = "karma-transition"
LEDGER_CONSUMER_GROUP: Final = "karma-ledger"
OBSERVATIONS_CONSUMER_GROUP: Final = "karma-observations"
INGRESS_REQUESTS_GROUP: Final = "karma-ingress-requests"
INGRESS_CALLBACKS_GROUP: Final = "karma-ingress-events"

# ClickHouse
LEDGER_DATABASE: Final = "karma"
TABLE_ACTION_EVENTS: Final = "action_events"
TABLE_ACTION_STATE_CURRENT: Final = "action_state_current"
TABLE_OBSERVATIONS: Final = "observations"
TABLE_ACTION_OUTCOMES: Final = "action_outcomes"  # per action, aggregated as rows arrive
VIEW_ENDED_ACTIONS: Final = "ended_actions"  # one row per ended action
TABLE_BASELINES: Final = "entropy_baselines"  # expectations per (entity, step) and window
TABLE_DEVIATIONS: Final = "deviations"
TABLE_RULE_DECISIONS: Final = "rule_decisions"  # each rule's decision on each event
TABLE_GRAPH_VERSIONS: Final = "graph_versions"  # the component graph as built per environment
TABLE_SCANS: Final = "entropy_scans"  # the windows scanned (a scan resumes after the last)
