"""docker-compose.yml stays a valid, production-shaped description of the stack."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from cryptography.fernet import Fernet

from karma.codec import EncryptionCodec
from karma.settings import Settings

COMPOSE = Path(__file__).parent.parent.parent / "docker-compose.yml"
INFRA = {"postgresql", "temporal", "temporal-ui", "kafka", "clickhouse"}


def load() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def test_every_service_has_a_pinned_image_or_is_built_here() -> None:
    services = load()["services"]
    assert INFRA | {"setup", "worker", "bridge", "jobs"} <= set(services)
    for name, service in services.items():
        image = service.get("image", "")
        assert image or service.get("build") == ".", name
        if name in INFRA:
            assert re.fullmatch(r"[a-z0-9./-]+:[0-9][\w.-]*", image), f"{name}: pin {image!r}"


def test_infrastructure_has_healthchecks_and_karma_waits_for_them() -> None:
    services = load()["services"]
    for name in INFRA:
        assert services[name]["healthcheck"]["test"], name
    assert services["setup"]["depends_on"] == {
        "temporal": {"condition": "service_healthy"},
        "kafka": {"condition": "service_healthy"},
        "clickhouse": {"condition": "service_healthy"},
    }
    for name in ("worker", "bridge", "jobs"):
        assert services[name]["depends_on"] == {
            "setup": {"condition": "service_completed_successfully"}
        }


def test_karma_settings_are_real_settings(monkeypatch: Any) -> None:
    services = load()["services"]
    env = services["worker"]["environment"]
    for name in ("bridge", "setup", "jobs"):
        assert services[name]["environment"] == env, name
    for key, value in env.items():
        value = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(value))  # the defaults
        if key == "KARMA_SECRETS_KEY":
            value = Fernet.generate_key().decode()
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert settings.temporal.address == "temporal:7233"
    assert settings.kafka.bootstrap_servers == "kafka:9092"
    assert settings.kafka.topic_partitions == 6
    assert settings.services == {"jobs": "http://jobs:8085"}
    assert settings.ingress.resolve_timeout_s == 30
    assert settings.clickhouse_dsn == "clickhouse://karma:karma@clickhouse:8123"
    assert settings.secrets_key is not None
    assert EncryptionCodec.from_settings(settings.codec) is None  # encryption is opt-in
    assert settings.codec.ui_origins == ["http://localhost:8080"]
    ui = services["temporal-ui"]["environment"]
    assert ui["TEMPORAL_CODEC_ENDPOINT"] == "http://localhost:8088/codec"
    # Every KARMA_ variable names a real setting (a typo would be silently ignored).
    fields = {
        "KARMA_" + name.upper() + "__" + sub.upper()
        for name, section in Settings.model_fields.items()
        if hasattr(section.annotation, "model_fields")
        for sub in section.annotation.model_fields  # type: ignore[union-attr]
    } | {"KARMA_" + name.upper() for name in Settings.model_fields}
    # Dict settings take any key (KARMA_SERVICES__<NAME>).
    free = {k for k in env if k.startswith("KARMA_SERVICES__")}
    assert set(env) - free <= fields


def test_the_api_service_has_the_same_settings_and_a_healthcheck() -> None:
    services = load()["services"]
    api = services["api"]
    assert api["command"] == ["api"]
    assert api["depends_on"] == {"setup": {"condition": "service_completed_successfully"}}
    assert "/readyz" in " ".join(api["healthcheck"]["test"])
    env = api["environment"]
    worker = services["worker"]["environment"]
    assert {k: v for k, v in env.items() if not k.startswith("KARMA_API__")} == worker
    port = env["KARMA_API__PORT"]
    assert Settings.model_validate({"api": {"host": env["KARMA_API__HOST"], "port": port}})
    assert api["ports"] == [f"127.0.0.1:{port}:{port}"]  # plain HTTP: this host only
    # The keys' hashes outlive the container, where the API looks for them (its data dir).
    volume, _, path = api["volumes"][0].partition(":")
    assert volume in load()["volumes"]
    assert path == f"/app/{Settings().data_dir}"


def test_traces_go_through_the_collector_to_jaeger() -> None:
    services = load()["services"]
    env = services["worker"]["environment"]
    settings_host = urlsplit(env["KARMA_OTEL__OTLP_ENDPOINT"]).hostname
    assert env["KARMA_OTEL__EXPORTER"] == "otlp" and settings_host == "otel-collector"
    collector = services["otel-collector"]
    mounted = collector["volumes"][0].split(":")[0]
    config = yaml.safe_load((COMPOSE.parent / mounted).read_text())
    assert config["receivers"]["otlp"]["protocols"]["http"]["endpoint"].endswith(":4318")
    exporter = config["exporters"][config["service"]["pipelines"]["traces"]["exporters"][0]]
    assert exporter["endpoint"].split(":")[0] == "jaeger"
    assert services["jaeger"]["environment"]["COLLECTOR_OTLP_ENABLED"] == "true"
    assert services["jaeger"]["healthcheck"]["test"]
    for name in ("worker", "bridge", "api"):  # tracing is best effort: nothing waits for it
        assert "otel-collector" not in services[name].get("depends_on", {}), name
