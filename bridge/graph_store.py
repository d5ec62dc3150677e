"""The component graph in the ledger (migration 7): each graph version as built for an
environment, and the deployments, which are the deploy pipelines' own transitions (tagged
`graph_env`, `graph_root`, `graph_version`, `graph_config_hash`, `graph_runtime_hash`):
no second record of what the ledger already holds."""

from __future__ import annotations

import json
from datetime import UTC
from typing import Any

from karma import names
from karma.graph.plan import GraphVersion

MIGRATION = 7
GRAPH_TAGS = ("graph_env", "graph_root", "graph_version", "graph_config_hash", "graph_runtime_hash")


def graph_tables(database: str) -> list[str]:
    return [
        f"""
        CREATE TABLE IF NOT EXISTS {database}.{names.TABLE_GRAPH_VERSIONS} (
            env LowCardinality(String),
            version String COMMENT 'a hash of the nodes and edges',
            built_at DateTime64(3, 'UTC'),
            nodes String COMMENT 'JSON: name, kind, depends_on, config, config_hash, runtime
                fingerprints (never values), runtime_hash',
            edges Array(Tuple(String, String)) COMMENT '(component, what it depends on)',
            components UInt32
        )
        ENGINE = ReplacingMergeTree(built_at)
        ORDER BY (env, version)
        """
    ]


class GraphStore:
    def __init__(self, ledger: Any) -> None:
        self._ledger = ledger
        self._versions = f"{ledger.database}.{names.TABLE_GRAPH_VERSIONS}"
        self._events = f"{ledger.database}.{names.TABLE_ACTION_EVENTS}"

    def check_ready(self) -> None:
        self._ledger.require_migration(MIGRATION, "the component graph")

    def save(self, version: GraphVersion) -> None:
        nodes = json.dumps([n.model_dump(mode="json") for n in version.nodes], sort_keys=True)
        row = [
            version.env,
            version.version,
            version.built_at,
            nodes,
            version.edges,
            len(version.nodes),
        ]
        columns = ["env", "version", "built_at", "nodes", "edges", "components"]
        self._ledger.insert_rows(names.TABLE_GRAPH_VERSIONS, [row], columns)

    def version(self, env: str, version: str = "") -> GraphVersion | None:
        """A stored version, or the latest built for `env`."""
        where = "env = %(env)s" + (" AND version = %(version)s" if version else "")
        rows = self._ledger.named_rows(
            f"SELECT env, version, built_at, nodes, edges FROM {self._versions} FINAL "
            f"WHERE {where} ORDER BY built_at DESC LIMIT 1",
            {"env": env, "version": version},
        )
        if not rows:
            return None
        row = rows[0]
        built_at = row["built_at"]
        if built_at.tzinfo is None:
            built_at = built_at.replace(tzinfo=UTC)
        row["built_at"] = built_at
        return GraphVersion(
            version=row["version"], env=row["env"], built_at=row["built_at"],
            nodes=json.loads(row["nodes"]), edges=[tuple(e) for e in row["edges"]],
        )  # fmt: skip

    def deployments(
        self, component: str = "", env: str = "", *, limit: int = 50
    ) -> list[dict[str, Any]]:
        """Deploy pipelines, newest first: root, env, versions, final state, when, and
        the components each reloaded."""
        where = ["action_type = 'pipeline'", "tags['graph_root'] != ''"]
        if component:
            where.append("tags['graph_root'] = %(component)s")
        if env:
            where.append("tags['graph_env'] = %(env)s")
        rows = self._ledger.named_rows(
            f"""
            SELECT action_id AS pipeline_id,
                any(tags['graph_root']) AS component, any(tags['graph_env']) AS env,
                any(tags['graph_version']) AS graph_version,
                any(tags['graph_config_hash']) AS graph_config_hash,
                any(tags['graph_runtime_hash']) AS graph_runtime_hash,
                min(ts) AS requested_at,
                maxIf(ts, state IN ('SUCCEEDED', 'FAILED', 'CANCELLED')) AS ended_at,
                argMaxIf(state, seq, state != '') AS final_state,
                countIf(event_type = 'pipeline.step_ended'
                    AND JSONExtractString(attrs, 'step') = concat('deploy-', tags['graph_root'])
                    AND JSONExtractString(attrs, 'outcome') = 'succeeded') > 0
                AND countIf(event_type = 'pipeline.step_compensated'
                    AND JSONExtractString(attrs, 'step') = concat('deploy-', tags['graph_root'])
                    AND JSONExtractString(attrs, 'outcome') = 'compensated') = 0 AS deployed,
                groupArrayIf(JSONExtractString(attrs, 'step'),
                    event_type = 'pipeline.step_ended'
                    AND JSONExtractString(attrs, 'outcome') = 'succeeded') AS succeeded_steps
            FROM {self._events} FINAL
            WHERE {" AND ".join(where)}
            GROUP BY action_id
            ORDER BY requested_at DESC
            LIMIT %(limit)s
            """,
            {"component": component, "env": env, "limit": limit},
        )
        out = []
        for row in rows:
            steps = row.pop("succeeded_steps")
            row["reloaded"] = sorted(
                s.removeprefix("reload-") for s in steps if s.startswith("reload-")
            )
            row["state"] = row.pop("final_state") or "REQUESTED"
            row["deployed"] = bool(row["deployed"])
            out.append(row)
        return out

    def last_deployed(self, component: str, env: str) -> dict[str, Any] | None:
        """The last deploy of `component` to `env` whose deploy step succeeded and was not
        undone (what runs now, even when a later reload failed)."""
        return last_deployed(self.deployments(component, env, limit=1000))


def last_deployed(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    return next((r for r in rows if r.get("deployed")), None)
