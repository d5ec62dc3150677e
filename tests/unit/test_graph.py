"""The component graph: loading, validation naming each component, hashes, the diff
against the last deploy, and the deploy pipeline's order."""

from __future__ import annotations

import shutil
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from karma.errors import ValidationError
from karma.graph.model import load_graph
from karma.graph.plan import build, deploy_pipeline, fingerprint, plan_change
from karma.graph.store import FileParameterStore, SsmParameterStore
from karma.pipelines.plan import check, waves
from karma.registry import default_registry

EXAMPLE = Path(__file__).parents[2] / "examples" / "graph"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    shutil.copytree(EXAMPLE, tmp_path / "graph")
    return tmp_path / "graph"


def errors_of(directory: Path, env: str = "dev") -> dict[str, str]:
    with pytest.raises(ValidationError) as caught:
        build(load_graph(directory), env, FileParameterStore(directory), default_registry())
    return {e.field: e.reason for e in caught.value.errors}


def test_the_shipped_graph_builds_in_dependency_order() -> None:
    graph = load_graph(EXAMPLE)
    version = build(graph, "dev", FileParameterStore(EXAMPLE), default_registry())
    order = [n.name for n in version.nodes]
    assert order.index("network") < order.index("database") < order.index("api")
    assert order.index("api") < order.index("web") and order.index("api") < order.index("worker")
    assert ("api", "database") in version.edges and len(version.nodes) == 7
    again = build(graph, "dev", FileParameterStore(EXAMPLE), default_registry())
    assert again.version == version.version  # the same graph, the same version
    prod = build(graph, "prod", FileParameterStore(EXAMPLE), default_registry())
    assert prod.version != version.version
    node = version.node("database")
    assert node is not None and "dev-only-password" not in version.model_dump_json()
    assert node.runtime["password"] == fingerprint(
        "dev", "database", "password", "dev-only-password"
    )


def test_each_problem_names_its_component(config: Path) -> None:
    services = config / "components" / "services.yaml"
    text = services.read_text()
    services.write_text(
        text.replace("depends_on: [database, cache]", "depends_on: [database, cache, queue]")
    )
    assert errors_of(config) == {"components.api.depends_on": "no component 'queue'"}
    services.write_text(
        text.replace(
            'depends_on: [api]\n    config: {image: "worker',
            'depends_on: [api]\n    config: {image: "worker',
        )
    )
    (config / "components" / "network.yaml").write_text(
        (config / "components" / "network.yaml")
        .read_text()
        .replace("kind: network", "kind: network\ndepends_on: [worker]")
    )
    cycle = errors_of(config)
    assert (
        list(cycle) == ["components.api.depends_on"]
        and "cycle" in cycle["components.api.depends_on"]
    )


def test_actions_params_and_runtime_values_are_checked(config: Path) -> None:
    (config / "components" / "extra.yaml").write_text(
        """
name: extra
config: {a: 1}
runtime: [token]
secrets: [key]
deploy:
  action: no.such.action
reload:
  action: log
  params:
    message: "${{ config.b }} ${{ runtime.other }} ${{ runtime.key }}"
    level: loud
"""
    )
    errors = errors_of(config)
    assert errors["components.extra.runtime.token"].startswith("no value for dev")
    assert errors["components.extra.secrets.key"].startswith("no value for dev")
    message = "components.extra.reload.params.message"
    assert message in errors  # config.b, runtime.other, a secret inside text
    (config / "params" / "dev.yaml").write_text(
        (config / "params" / "dev.yaml").read_text() + "extra: {token: t, key: k}\n"
    )
    (config / "components" / "extra.yaml").write_text(
        """
name: extra
deploy: {action: no.such.action}
reload: {action: log, params: {message: hi, level: loud}}
"""
    )
    errors = errors_of(config)
    assert "unknown action type" in errors["components.extra.deploy.action"]
    assert "components.extra.reload.params.level" in errors


def test_a_deploy_reloads_what_depends_on_it_in_order() -> None:
    graph = load_graph(EXAMPLE)
    values = FileParameterStore(EXAMPLE).values("dev")
    spec, params = deploy_pipeline(graph, "database", "dev", values)
    assert waves(spec) == [["deploy-database"], ["reload-api"], ["reload-web", "reload-worker"]]
    assert spec.on_failure == "compensate"
    check(spec, default_registry())
    # network has no reload: a change to it passes on to what depends on it.
    spec, _ = deploy_pipeline(graph, "network", "dev", values)
    assert waves(spec)[:2] == [["deploy-network"], ["reload-cache", "reload-database"]]
    assert "reload-docs" not in [s.id for s in spec.steps]
    spec, params = deploy_pipeline(graph, "api", "dev", values)
    assert params == {"api__log_level": "debug"}
    assert spec.step("deploy-api").params["message"] == (
        "api api:1.8.0 x3 (log ${{ params.api__log_level }})"
    )


def test_a_plan_diffs_against_the_last_deploy(config: Path) -> None:
    registry = default_registry()
    graph = load_graph(config)
    store = FileParameterStore(config)
    first = build(graph, "dev", store, registry)
    node = first.node("database")
    assert node is not None
    deployed = {
        "graph_version": first.version, "graph_config_hash": node.config_hash,
        "graph_runtime_hash": node.runtime_hash, "pipeline_id": "pl_1",
    }  # fmt: skip
    planned, _ = plan_change(graph, first, "database", store.values("dev"), deployed, first)
    assert not planned.changed and planned.reloads == ["api", "web", "worker"]
    (config / "params" / "dev.yaml").write_text(
        "database: {password: rotated}\napi: {log_level: debug}\n"
    )
    path = config / "components" / "database.yaml"
    path.write_text(path.read_text().replace("size: small", "size: large"))
    graph = load_graph(config)
    second = build(graph, "dev", store, registry)
    planned, _ = plan_change(graph, second, "database", store.values("dev"), deployed, first)
    assert planned.changed and planned.config_changes == {"size": ["small", "large"]}
    assert [(c.name, c.change, c.value) for c in planned.runtime_changes] == [
        ("password", "changed", "***")
    ]
    assert "rotated" not in planned.model_dump_json()
    never, _ = plan_change(graph, second, "database", store.values("dev"), None, None)
    assert never.changed and never.deployed_version == ""


@mock_aws
def test_the_ssm_store_reads_each_components_values() -> None:
    # moto's in-process SSM: no AWS account can be reached from here.
    client = boto3.client("ssm", region_name="eu-west-1")
    client.put_parameter(Name="/karma/dev/api/log_level", Value="debug", Type="String")
    client.put_parameter(Name="/karma/dev/database/password", Value="s3", Type="SecureString")
    client.put_parameter(Name="/karma/prod/api/log_level", Value="info", Type="String")
    store = SsmParameterStore("/karma/", client)
    assert store.values("dev") == {"api": {"log_level": "debug"}, "database": {"password": "s3"}}
    assert store.values("prod") == {"api": {"log_level": "info"}}
    with pytest.raises(ValidationError):
        store.values("../etc")
