"""`kafka_publish`: publish one message to a Kafka topic (to hand work to systems that
listen on Kafka), with the worker's producer (the `kafka` resource), acknowledged by all
replicas. A topic that does not exist is a permanent error; a broker that does not answer
is transient."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

from aiokafka.errors import KafkaError

from karma.errors import PermanentError, TransientError
from karma.executor import ActionContext, ActionResult, BaseActionExecutor
from karma.meta import ActionMeta, OutputDefinition, ParamDefinition, ParamType, RetryPolicy
from karma.registry import register_action
from karma.resources import KAFKA

METADATA_TIMEOUT_S = 10.0

META = ActionMeta(
    type="kafka_publish",
    name="Publish to Kafka",
    description="Publishes a JSON message to a topic and succeeds once Kafka acknowledged it.",
    category="integration",
    icon="send",
    timeout=timedelta(minutes=1),
    required_services=(KAFKA,),
    params=(
        ParamDefinition(name="topic", type=ParamType.STRING, required=True),
        ParamDefinition(name="value", type=ParamType.JSON, required=True),
        ParamDefinition(name="key", type=ParamType.STRING, description="default: the action id"),
        ParamDefinition(name="headers", type=ParamType.JSON, description="name -> text"),
    ),
    outputs=(
        OutputDefinition(name="partition", type=ParamType.NUMBER),
        OutputDefinition(name="offset", type=ParamType.NUMBER),
    ),
    retry=RetryPolicy(max_attempts=4),
)


@register_action(META)
class KafkaPublishExecutor(BaseActionExecutor):
    async def execute(self, ctx: ActionContext) -> ActionResult:
        producer = ctx.resource(KAFKA)
        topic = str(ctx.params["topic"])
        headers = ctx.params.get("headers") or {}
        if not isinstance(headers, dict):
            raise PermanentError("headers: an object of name -> text")
        try:
            partitions = await asyncio.wait_for(producer.partitions_for(topic), METADATA_TIMEOUT_S)
        except (TimeoutError, KafkaError) as exc:
            raise PermanentError(f"no Kafka topic {topic!r} ({type(exc).__name__})") from exc
        if not partitions:
            raise PermanentError(f"no Kafka topic {topic!r}")
        key = str(ctx.params.get("key") or ctx.action_id)
        try:
            sent = await producer.send_and_wait(
                topic,
                value=json.dumps(ctx.params["value"]).encode(),
                key=key.encode(),
                headers=[(str(k), str(v).encode()) for k, v in headers.items()],
            )
        except KafkaError as exc:
            raise TransientError(f"Kafka did not take the message: {exc!r}"[:300]) from exc
        return ActionResult(outputs={"partition": sent.partition, "offset": sent.offset})
