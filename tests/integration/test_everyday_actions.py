"""`notify` and `kafka_publish` against real local endpoints: the reference service's
webhook receiver, and the embedded broker read by a plain consumer."""

from __future__ import annotations

import asyncio
import json

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bridge.topic_reader import read_topics
from karma.kafka_config import client_kwargs
from karma.lifecycle import ActionState
from tests.conftest import unique
from workers.embedded import EmbeddedKarma

TIMEOUT_S = 60


async def test_notify_posts_a_slack_payload_and_never_shows_its_url(karma: EmbeddedKarma) -> None:
    service = karma.reference_service
    assert service is not None
    hook = unique("ops")
    url = f"{service.url}/hooks/{hook}"
    handle = await karma.client.request(
        "notify",
        {"url": url, "title": "deploy", "text": "api *1.8* is out", "fields": {"env": "prod"}},
    )
    outcome = await asyncio.wait_for(handle.result(), TIMEOUT_S)
    assert outcome.state is ActionState.SUCCEEDED and outcome.outputs["status_code"] == 200
    [payload] = service.hooks[hook]
    assert payload["text"] == "deploy: api *1.8* is out"
    assert payload["blocks"][0]["text"]["text"] == "deploy"
    assert payload["blocks"][2]["fields"] == [{"type": "mrkdwn", "text": "*env*\nprod"}]
    handle = await karma.client.request(
        "notify", {"url": url, "text": "plain", "format": "json"}, entity_id="svc-1"
    )
    assert (await asyncio.wait_for(handle.result(), TIMEOUT_S)).state is ActionState.SUCCEEDED
    assert service.hooks[hook][1] == {
        "title": "", "text": "plain", "fields": {}, "action_id": handle.action_id,
        "entity_id": "svc-1",
    }  # fmt: skip
    missing = f"{service.url}/nowhere-{unique()}"
    failed = await karma.client.request("notify", {"url": missing, "text": "x"})
    outcome = await asyncio.wait_for(failed.result(), TIMEOUT_S)
    assert outcome.state is ActionState.FAILED and outcome.error is not None
    assert outcome.error.message == "the webhook answered 404"
    status = await failed.status()
    assert missing not in json.dumps([t.model_dump(mode="json") for t in status.transitions])


async def test_kafka_publish_hands_a_message_to_a_topic(karma: EmbeddedKarma) -> None:
    settings = karma.settings.kafka
    topic = unique("handoff")
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name=topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()
    handle = await karma.client.request(
        "kafka_publish",
        {"topic": topic, "value": {"job": 7}, "key": "job-7", "headers": {"source": "karma"}},
    )
    outcome = await asyncio.wait_for(handle.result(), TIMEOUT_S)
    assert outcome.state is ActionState.SUCCEEDED, outcome.error
    [message] = await read_topics(settings, [topic])
    assert message.key == b"job-7" and message.json() == {"job": 7}
    assert message.headers == {"source": b"karma"}
    assert (message.partition, message.offset) == (
        outcome.outputs["partition"],
        outcome.outputs["offset"],
    )


async def test_kafka_publish_to_a_topic_that_is_not_there_yet(karma: EmbeddedKarma) -> None:
    """The embedded broker (tansu) creates a topic on first use, like a Kafka broker with
    auto.create.topics.enable: the message is there, once. (Where a broker refuses, the
    action fails permanently naming the topic.)"""
    topic = unique("nowhere")
    handle = await karma.client.request("kafka_publish", {"topic": topic, "value": {"n": 1}})
    outcome = await asyncio.wait_for(handle.result(), TIMEOUT_S)
    assert outcome.state is ActionState.SUCCEEDED, outcome.error
    [message] = await read_topics(karma.settings.kafka, [topic])
    assert message.json() == {"n": 1}
    assert (message.partition, message.offset) == (
        outcome.outputs["partition"],
        outcome.outputs["offset"],
    )
