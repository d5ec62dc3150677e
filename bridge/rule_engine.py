"""The rule engine: each event a rule matches becomes one decision, recorded with its
reason in `rule_decisions`, and at most one action per rule, entity and dedup window.

Guards, in order (the first that holds decides):
- `dry_run`: the rule's mode; what it would have requested is recorded;
- `deduplicated`: this rule already acted on this entity in this window (the action's
  idempotency key is derived from them, so even a race requests it once);
- `cooling_down`: the rule acted on this entity less than `cooldown_s` ago;
- `max_in_flight`: the rule's unfinished actions reached `max_in_flight`;
- `rate_limited`: the rule's or the entity's rate limit (the `limits` library, a moving
  window per process: a restart forgets the window, never the deduplication);
- `invalid`: its params do not render or the action refuses them;
- `fired` (or `awaiting_approval` when the rule requires an operator's decision);
- `error`: a defect while deciding (logged; the event is never a poison message).
A rate limit is spent only by an action requested (an infrastructure failure retried is
not counted against it). A redelivered event keeps the decision it had.
The action's correlation id is the matched event's id, so the ledger links detection,
decision, action and resolution.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from clickhouse_connect.driver.exceptions import DatabaseError
from limits import parse
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter
from temporalio.service import RPCError

from bridge.ledger import Ledger
from karma import names
from karma.client import KarmaClient
from karma.envelope import Envelope
from karma.errors import ValidationError
from karma.ids import action_id_for_key
from karma.lifecycle import TERMINAL_STATES
from karma.rules import Rule, RuleSet

log = logging.getLogger(__name__)
ACTED = ("fired", "awaiting_approval")
DECISION_COLUMNS = [
    "decision_id", "rule", "event_id", "event_type", "entity_id", "decision", "reason",
    "action_id", "action_type", "params",
]  # fmt: skip
IN_FLIGHT_HORIZON = timedelta(days=7)


@dataclass
class RuleDecision:
    rule: str
    event_id: str
    event_type: str
    entity_id: str
    decision: str
    reason: str
    action_id: str = ""
    action_type: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    record: bool = field(default=True, repr=False)  # False: the event's decision stands

    @property
    def decision_id(self) -> str:
        """One per rule and event: a redelivered event replaces its decision's row."""
        raw = f"{self.rule}\x1f{self.event_id}"
        return "rd_" + hashlib.sha256(raw.encode()).hexdigest()[:32]

    def row(self) -> list[Any]:
        values = {**self.__dict__, "decision_id": self.decision_id}
        values.pop("record")
        values["params"] = json.dumps(self.params, sort_keys=True, default=str)
        return [values[c] for c in DECISION_COLUMNS]

    def as_json(self) -> dict[str, Any]:
        out = {"decision_id": self.decision_id, **self.__dict__}
        out.pop("record")
        return out


class RuleEngine:
    """Decides on events for `rules` (only those of `kinds`: the bridge takes observation
    rules, the scan deviation and schedule rules). Each decision is recorded before the
    next is made, so the guards count the batch being decided."""

    def __init__(
        self,
        rules: RuleSet,
        ledger: Ledger,
        client: KarmaClient,
        *,
        kinds: frozenset[str] = frozenset({"deviation", "observation", "schedule"}),
    ) -> None:
        self.rules = RuleSet(rules=[r for r in rules.rules if r.kind in kinds])
        self._ledger = ledger
        self._client = client
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        # The scan and a schedule's firing may decide at once: one ledger call at a time.
        self._lock = threading.Lock()

    async def handle(self, events: list[Envelope]) -> list[RuleDecision]:
        """Decide for every (event, matching rule); record each decision."""
        decisions = []
        for event in events:
            for rule in self.rules.matching(event):
                try:
                    decision = await self._decide(rule, event)
                except (OSError, RPCError, DatabaseError):
                    raise  # infrastructure: the caller retries, the decisions so far stand
                except Exception as exc:  # a defect: recorded, never a poison event
                    log.exception("rule %s on %s failed", rule.name, event.event_id)
                    decision = RuleDecision(
                        rule=rule.name, event_id=event.event_id, event_type=event.event_type,
                        entity_id=event.entity_id, decision="error", reason=repr(exc)[:1000],
                        action_type=rule.then.action,
                    )  # fmt: skip
                if decision.record:
                    await asyncio.to_thread(self._locked, self._ledger.insert_rows,
                                            names.TABLE_RULE_DECISIONS, [decision.row()],
                                            DECISION_COLUMNS)  # fmt: skip
                decisions.append(decision)
        return decisions

    def _locked(self, call: Any, *args: Any) -> Any:
        with self._lock:
            return call(*args)

    async def _decide(self, rule: Rule, event: Envelope) -> RuleDecision:
        key = rule.dedup_key(event)
        action_id = action_id_for_key(key)

        def decided(decision: str, reason: str, **extra: Any) -> RuleDecision:
            out = RuleDecision(
                rule=rule.name, event_id=event.event_id, event_type=event.event_type,
                entity_id=event.entity_id, decision=decision, reason=reason,
                action_id=action_id, action_type=rule.then.action, **extra,
            )  # fmt: skip
            log.info("rule %s on %s: %s (%s)", rule.name, event.event_id, decision, reason)
            return out

        try:
            params = rule.params_for(event)
        except ValidationError as invalid:
            return decided("invalid", str(invalid))
        if rule.mode == "dry-run":
            return decided(
                "dry_run", f"mode dry-run: would request {rule.then.action}", params=params
            )
        acted = await asyncio.to_thread(self._locked, self._acted, rule)
        if action_id in acted:
            same_event = acted[action_id][2] == event.event_id
            out = decided(
                "deduplicated", f"already acted in this {rule.guards.dedup_window_s}s window"
            )
            out.record = not same_event  # a redelivered event keeps the decision it had
            return out
        since = datetime.now(UTC) - timedelta(seconds=rule.guards.cooldown_s)
        if rule.guards.cooldown_s and any(
            when >= since for (entity, when, _) in acted.values() if entity == event.entity_id
        ):
            return decided(
                "cooling_down",
                f"acted on {event.entity_id} less than {rule.guards.cooldown_s}s ago",
            )
        in_flight = await asyncio.to_thread(self._locked, self._in_flight, list(acted))
        if in_flight >= rule.guards.max_in_flight:
            return decided("max_in_flight", f"{in_flight} of this rule's actions are unfinished")
        limits = [
            (parse(limit), scope)
            for limit, scope in (
                (rule.guards.rate_limit, (rule.name,)),
                (rule.guards.entity_rate_limit, (rule.name, event.entity_id)),
            )
            if limit is not None
        ]
        for item, scope in limits:  # tested first, spent only by an action requested
            if not await self._limiter.test(item, *scope):
                return decided("rate_limited", f"over {item} ({'/'.join(scope)})")
        try:
            handle = await self._client.request(
                rule.then.action,
                params,
                idempotency_key=key,
                entity_id=event.entity_id,
                correlation_id=event.event_id,
                tags={**rule.then.tags, "karma.rule": rule.name},
            )
        except ValidationError as invalid:
            return decided("invalid", str(invalid), params=params)
        if not handle.created:
            return decided("deduplicated", "the action with this key exists", params=params)
        for item, scope in limits:
            await self._limiter.hit(item, *scope)
        if rule.require_approval:
            return decided("awaiting_approval", "requested; waits for an operator", params=params)
        return decided("fired", f"requested {rule.then.action}", params=params)

    def _acted(self, rule: Rule) -> dict[str, tuple[str, datetime, str]]:
        """The rule's actions of the last days: action id -> (entity, when, event id)."""
        rows = self._ledger.rows(
            f"SELECT action_id, entity_id, decided_at, event_id FROM "
            f"{self._ledger.database}.{names.TABLE_RULE_DECISIONS} FINAL "
            "WHERE rule = %(rule)s AND decision IN %(acted)s "
            "AND decided_at >= now64(3) - toIntervalSecond(%(horizon)s)",
            {
                "rule": rule.name,
                "acted": list(ACTED),
                "horizon": int(IN_FLIGHT_HORIZON.total_seconds()),
            },
        )
        return {r[0]: (r[1], r[2].replace(tzinfo=UTC), r[3]) for r in rows}

    def _in_flight(self, action_ids: list[str]) -> int:
        if not action_ids:
            return 0
        states = self._ledger.current_states(action_ids)
        terminal = {s.value for s in TERMINAL_STATES}
        return sum(1 for a in action_ids if states.get(a) not in terminal)
