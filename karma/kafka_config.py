"""aiokafka keyword arguments from settings: servers, client id, security."""

from __future__ import annotations

import ssl
from typing import Any

from karma.settings import KafkaSettings


def client_kwargs(settings: KafkaSettings) -> dict[str, Any]:
    """Arguments common to aiokafka producers, consumers and admin clients."""
    kwargs: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "client_id": settings.client_id,
        "request_timeout_ms": int(settings.request_timeout_s * 1000),
        "security_protocol": settings.security_protocol,
    }
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        kwargs["ssl_context"] = ssl.create_default_context(
            cafile=str(settings.ssl_cafile) if settings.ssl_cafile else None
        )
    if settings.security_protocol.startswith("SASL"):
        if not (settings.sasl_mechanism and settings.sasl_username and settings.sasl_password):
            raise ValueError(
                "KARMA_KAFKA__SASL_MECHANISM, KARMA_KAFKA__SASL_USERNAME and "
                "KARMA_KAFKA__SASL_PASSWORD are required with a SASL security protocol"
            )
        kwargs.update(
            sasl_mechanism=settings.sasl_mechanism,
            sasl_plain_username=settings.sasl_username,
            sasl_plain_password=settings.sasl_password.get_secret_value(),
        )
    return kwargs


def producer_kwargs(settings: KafkaSettings) -> dict[str, Any]:
    """A durable producer: acks from all replicas. Idempotence stays off because the
    embedded broker cannot grant producer ids; consumers deduplicate on `event_id`."""
    return {
        **client_kwargs(settings),
        "acks": "all",
        "enable_idempotence": False,
        "linger_ms": 2,
    }
