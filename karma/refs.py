"""Reference parameters (`ParamType.REF`): a value that names an object in another system,
checked by a resolver of its `ref_kind` before the action is accepted.

A resolver turns what a user typed (a name, an alias, an id) into the object's canonical
id, or says it does not exist (a dangling reference is a validation error naming the
parameter); the executor gets the canonical id. Where it can, a resolver also lists its
choices, which the action's JSON Schema (`examples`, `x-karma-choices`) and the console's
form offer.

    @register_resolver
    class Clusters(ReferenceResolver):
        kind = "cluster"

        async def resolve(self, value, services):
            return await lookup(value)  # the canonical id, or None

Resolvers are found like actions: the `karma.resolvers` entry-point group (the built-ins
too), plus the classes decorated in this process. The built-in `model`, `cluster` and
`endpoint` resolvers ask an inventory service (`KARMA_SERVICES__INVENTORY`):
`GET /refs/<kind>/<value>` answers 200 `{"id": ..., "name": ...}` or 404, and
`GET /refs/<kind>` lists them.
"""

from __future__ import annotations

import functools
import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any, ClassVar
from urllib.parse import quote

from pydantic import BaseModel

from karma.errors import FieldError, PermanentError, TransientError, ValidationError
from karma.http_calls import body_of, check_status, send
from karma.meta import ActionMeta, ParamType

log = logging.getLogger(__name__)
ENTRY_POINT_GROUP = "karma.resolvers"
MAX_CHOICES = 200


class RefChoice(BaseModel):
    id: str
    label: str = ""


class ReferenceResolver(ABC):
    """Checks references of one kind; one instance serves every request of a process."""

    kind: ClassVar[str]

    @abstractmethod
    async def resolve(self, value: str, services: Mapping[str, str]) -> str | None:
        """The canonical id of the object `value` names, or None when there is none.
        Raise TransientError when the other system cannot answer now (the check is
        retried); any other error is the request's validation failure."""

    async def choices(self, services: Mapping[str, str]) -> list[RefChoice] | None:
        """The objects a user may pick (at most MAX_CHOICES are shown), or None when they
        cannot be listed."""
        return None


_decorated: list[type[ReferenceResolver]] = []


def register_resolver(cls: type[ReferenceResolver]) -> type[ReferenceResolver]:
    """Class decorator: a resolver of `cls.kind` for this process."""
    if not (isinstance(cls, type) and issubclass(cls, ReferenceResolver)):
        raise TypeError(f"@register_resolver needs a ReferenceResolver subclass, got {cls!r}")
    _decorated.append(cls)
    return cls


@functools.cache
def default_resolvers() -> dict[str, ReferenceResolver]:
    """Every resolver of this process, by kind (entry points first, then decorated). One
    that cannot be loaded, or a second of a kind, is logged and left out: its kind's
    references then fail validation ("no resolver"), and nothing else does."""
    classes: list[Any] = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            classes.append(ep.load())
        except Exception:  # a broken plug-in must not stop the rest
            log.exception("reference resolver %s = %s cannot be loaded", ep.name, ep.value)
    found: dict[str, ReferenceResolver] = {}
    for cls in [*classes, *_decorated]:
        kind = getattr(cls, "kind", "")
        known = found.get(kind)
        if known is not None and type(known) is not cls:
            log.error("two resolvers of ref kind %r: %s kept, %s left out", kind, known, cls)
            continue
        try:
            found[kind] = cls()
        except Exception:
            log.exception("reference resolver %r cannot be created", cls)
    return found


async def resolve_refs(
    meta: ActionMeta,
    params: dict[str, Any],
    services: Mapping[str, str],
    resolvers: Mapping[str, ReferenceResolver] | None = None,
) -> dict[str, Any]:
    """The params with each REF value replaced by its canonical id.

    Raises:
        karma.errors.ValidationError: one error per dangling reference or kind without a
            resolver on this worker.
        karma.errors.TransientError: a resolver could not reach its system.
    """
    refs = [
        d for d in meta.params if d.type is ParamType.REF and isinstance(params.get(d.name), str)
    ]
    if not refs:
        return dict(params)
    resolvers = default_resolvers() if resolvers is None else resolvers
    errors: list[FieldError] = []
    resolved = dict(params)
    for definition in refs:
        value = str(params[definition.name])
        field = f"params.{definition.name}"
        # A secret reference's value stays out of every reason.
        shown = "(secret)" if definition.secret else repr(value)
        resolver = resolvers.get(definition.ref_kind)
        if resolver is None:
            reason = f"no resolver of {definition.ref_kind!r} references on this worker"
            errors.append(FieldError(field=field, reason=reason))
            continue
        try:
            canonical = await resolver.resolve(value, services)
        except TransientError:
            if definition.secret:
                reason = f"{field}: its {definition.ref_kind} cannot be checked now"
                raise TransientError(reason) from None
            raise
        except Exception as exc:  # noqa: BLE001 - the resolver's verdict on this request
            reasons = (
                [e.reason for e in exc.errors]
                if isinstance(exc, ValidationError)
                else [f"cannot be checked: {exc}"]
            )
            if definition.secret:
                reasons = [f"cannot be checked ({type(exc).__name__})"]
            errors.extend(FieldError(field=field, reason=r) for r in reasons)
            continue
        if canonical is None:
            reason = f"dangling reference: no {definition.ref_kind} {shown}"
            errors.append(FieldError(field=field, reason=reason))
        else:
            resolved[definition.name] = canonical
    if errors:
        raise ValidationError(errors)
    return resolved


async def offer_choices(
    schema: dict[str, Any],
    services: Mapping[str, str],
    resolvers: Mapping[str, ReferenceResolver] | None = None,
) -> dict[str, Any]:
    """An action's params JSON Schema with the choices of each REF property its resolver
    can list (`examples`, and `x-karma-choices` with labels); a resolver that cannot
    answer now leaves its property as it is."""
    properties = dict(schema.get("properties", {}))
    if not any("x-karma-ref-kind" in p for p in properties.values()):
        return schema
    resolvers = default_resolvers() if resolvers is None else resolvers
    for name, prop in properties.items():
        resolver = resolvers.get(prop.get("x-karma-ref-kind", ""))
        if resolver is None:
            continue
        try:
            choices = await resolver.choices(services)
        except Exception:  # noqa: BLE001 - choices are a convenience; the form still works
            continue
        if choices:
            shown = choices[:MAX_CHOICES]
            properties[name] = {
                **prop,
                "examples": [c.id for c in shown],
                "x-karma-choices": [c.model_dump() for c in shown],
            }
    return {**schema, "properties": properties}


class InventoryResolver(ReferenceResolver):
    """Objects kept by the inventory service (`KARMA_SERVICES__INVENTORY`)."""

    service: ClassVar[str] = "inventory"

    def _base(self, services: Mapping[str, str]) -> str:
        base = services.get(self.service)
        if not base:
            raise PermanentError(
                f"{self.kind} references need the inventory service: set "
                f"KARMA_SERVICES__{self.service.upper()}"
            )
        return base.rstrip("/") + f"/refs/{quote(self.kind, safe='')}"

    async def resolve(self, value: str, services: Mapping[str, str]) -> str | None:
        if value in (".", ".."):  # a path segment, not a name: it would leave /refs/<kind>
            return None
        response = await send("GET", f"{self._base(services)}/{quote(value, safe='')}", timeout=10)
        if response.status_code == 404:
            return None
        check_status(response)  # 5xx and timeouts are transient
        body = body_of(response)
        found = body.get("id") if isinstance(body, dict) else None
        if not isinstance(found, str) or not found:
            raise PermanentError(f"the inventory answered {value!r} without an id")
        return found

    async def choices(self, services: Mapping[str, str]) -> list[RefChoice] | None:
        response = await send("GET", self._base(services), timeout=3)  # a form waits
        check_status(response)
        body = body_of(response)
        items = body.get("items") if isinstance(body, dict) else None
        if not isinstance(items, list):
            return None
        return [
            RefChoice(id=str(i["id"]), label=str(i.get("name", "")))
            for i in items
            if isinstance(i, dict) and isinstance(i.get("id"), str)
        ]


class ModelRefs(InventoryResolver):
    kind = "model"


class ClusterRefs(InventoryResolver):
    kind = "cluster"


class EndpointRefs(InventoryResolver):
    kind = "endpoint"
