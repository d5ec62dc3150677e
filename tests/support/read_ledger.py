"""Print a ledger's transitions as JSON; run as a separate process because chdb lets one
process open one data path (`python -m tests.support.read_ledger DSN ACTION_ID...`)."""

from __future__ import annotations

import json
import sys

from bridge.ledger import Ledger


def main() -> None:
    dsn, action_ids = sys.argv[1], sys.argv[2:]
    ledger = Ledger.open(dsn)
    try:
        events = ledger.transitions(action_ids)
        report = {
            "rows": ledger.count_events(action_ids),
            "event_ids": [f"{e.action_id}:{e.seq}" for e in events],
        }
    finally:
        ledger.close()
    sys.stdout.write(json.dumps(report))


if __name__ == "__main__":
    main()
