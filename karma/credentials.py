"""Credentials executors ask for by id and scope, kept encrypted at rest.

An executor calls `await ctx.credential("jobs-api", "jobs.example.com")` instead of taking a
secret as a parameter, so the value never travels through a request, Temporal history,
Kafka, the ledger or a log line: it exists in clear only in the worker's memory, for the
executor. A credential is either `static` (a secret string) or
`oauth2_client_credentials` (a client whose access token `CredentialManager` fetches and
refreshes before it expires, see `karma._oauth2`).

The store is one JSON file (0600, written whole under a lock and replaced atomically). Each
credential's material is sealed with AES-256-GCM under the primary key of the payload
keyring (`KARMA_CODEC__KEYS`), whose id is kept beside the ciphertext so that keys rotate:
put a new key first and `karma credentials rotate` re-seals every entry under it. Without a
keyring, a 32-byte key made once in `<data_dir>/credentials.key` (0600) is used (see
`karma._sealing`). The associated data binds the id, scope and kind: a ciphertext moved to
another entry does not open.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, TypeAdapter, field_validator

from karma._oauth2 import TokenCache
from karma._sealing import Keyring
from karma.codec import parse_keyring
from karma.errors import PermanentError
from karma.settings import Settings

CREDENTIALS_FILE = "credentials.json"
KEY_FILE = "credentials.key"
ANY_SCOPE = "*"
LOOPBACK = {"localhost", "127.0.0.1", "::1"}

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/-]{0,127}")
_SCOPE = re.compile(r"\*|[A-Za-z0-9][A-Za-z0-9._:@/-]{0,252}")


class CredentialKind(StrEnum):
    STATIC = "static"
    OAUTH2_CLIENT_CREDENTIALS = "oauth2_client_credentials"


class StaticSecret(BaseModel):
    """A secret string handed to the executor as it is."""

    kind: Literal[CredentialKind.STATIC] = CredentialKind.STATIC
    value: SecretStr


class OAuth2ClientCredentials(BaseModel):
    """An OAuth 2.0 client (RFC 6749 §4.4): the executor gets a current access token."""

    kind: Literal[CredentialKind.OAUTH2_CLIENT_CREDENTIALS] = (
        CredentialKind.OAUTH2_CLIENT_CREDENTIALS
    )
    client_id: str = Field(min_length=1, max_length=512)
    client_secret: SecretStr
    token_url: str = Field(description="https, or http to a loopback host only")
    scope: str = ""
    audience: str = ""

    @field_validator("token_url")
    @classmethod
    def _safe_url(cls, url: str) -> str:
        # The client secret travels to it: never in clear over a network.
        parts = urlsplit(url)
        if parts.scheme == "https" and parts.hostname:
            return url
        if parts.scheme == "http" and parts.hostname in LOOPBACK:
            return url
        raise ValueError("must be an https URL (http only to localhost)")


Secret = Annotated[StaticSecret | OAuth2ClientCredentials, Field(discriminator="kind")]
_SECRET: TypeAdapter[StaticSecret | OAuth2ClientCredentials] = TypeAdapter(Secret)


class CredentialInfo(BaseModel):
    """What may be shown of a credential (never its value)."""

    id: str
    scope: str
    kind: CredentialKind
    created_at: str
    updated_at: str

    def shown(self) -> CredentialInfo:
        """Only what may be shown (a stored entry's ciphertext and key id left out)."""
        return CredentialInfo(**self.model_dump(include=set(CredentialInfo.model_fields)))


class _Stored(CredentialInfo):
    key_id: str
    sealed: str = Field(repr=False, description="base64(nonce + AES-GCM ciphertext)")


class CredentialNotFoundError(PermanentError):
    """No credential with this id and scope (the message names both, never a value)."""

    def __init__(self, credential_id: str, scope: str) -> None:
        self.credential_id, self.scope = credential_id, scope
        super().__init__(f"no credential {credential_id!r} for scope {scope!r}")


def credentials_path(settings: Settings) -> Path:
    return settings.credentials.file or settings.data_dir / CREDENTIALS_FILE


def check_names(credential_id: str, scope: str) -> None:
    """Raise ValueError unless the id and scope are usable names."""
    if not _ID.fullmatch(credential_id):
        raise ValueError(f"credential id {credential_id[:140]!r}: letters, digits, ._:@/- only")
    if not _SCOPE.fullmatch(scope):
        raise ValueError(f"scope {scope[:260]!r}: '*' or letters, digits, ._:@/- only")


def _associated(credential_id: str, scope: str, kind: str, key_id: str) -> bytes:
    return json.dumps(["karma.credential", 1, credential_id, scope, kind, key_id]).encode()


def _reveal(secret: StaticSecret | OAuth2ClientCredentials) -> bytes:
    plain = {
        k: v.get_secret_value() if isinstance(v, SecretStr) else v
        for k, v in secret.model_dump().items()
    }
    return json.dumps(plain).encode()


class CredentialStore:
    """The credentials file: sealed entries keyed by (id, scope)."""

    def __init__(
        self, path: Path, *, keys: Sequence[tuple[str, bytes]] = (), key_file: Path
    ) -> None:
        self.path = path
        self._keyring = Keyring(keys, key_file)

    @classmethod
    def of(cls, settings: Settings) -> CredentialStore:
        ring = settings.codec.keys.get_secret_value().strip() if settings.codec.keys else ""
        return cls(
            credentials_path(settings),
            keys=parse_keyring(ring) if ring else (),
            key_file=settings.data_dir / KEY_FILE,
        )

    def _seal(
        self, info: CredentialInfo, secret: StaticSecret | OAuth2ClientCredentials
    ) -> _Stored:
        key_id, sealed = self._keyring.seal(
            _reveal(secret), lambda k: _associated(info.id, info.scope, info.kind, k)
        )
        return _Stored(**info.shown().model_dump(), key_id=key_id, sealed=sealed)

    def _open(self, stored: _Stored) -> StaticSecret | OAuth2ClientCredentials:
        plain = self._keyring.open(
            stored.key_id,
            stored.sealed,
            _associated(stored.id, stored.scope, stored.kind, stored.key_id),
            what=f"credential {stored.id!r} (scope {stored.scope!r})",
        )
        return _SECRET.validate_json(plain)

    # -- reading ---------------------------------------------------------------------------

    def _load(self) -> dict[tuple[str, str], _Stored]:
        try:
            document = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        entries = (_Stored.model_validate(c) for c in document.get("credentials", []))
        return {(c.id, c.scope): c for c in entries}

    def listed(self) -> list[CredentialInfo]:
        return [c.shown() for _, c in sorted(self._load().items())]

    def open(
        self, credential_id: str, scope: str = ANY_SCOPE
    ) -> StaticSecret | OAuth2ClientCredentials:
        """The credential stored under exactly this id and scope (`*` is a scope like any
        other: a credential for one host is never handed out for another)."""
        stored = self._load().get((credential_id, scope))
        if stored is None:
            raise CredentialNotFoundError(credential_id, scope)
        return self._open(stored)

    # -- writing ---------------------------------------------------------------------------

    def put(
        self,
        credential_id: str,
        secret: StaticSecret | OAuth2ClientCredentials,
        scope: str = ANY_SCOPE,
    ) -> CredentialInfo:
        """Store a credential (replacing the one of this id and scope)."""
        check_names(credential_id, scope)
        now = datetime.now(UTC).isoformat()
        with self._locked() as entries:
            earlier = entries.get((credential_id, scope))
            info = CredentialInfo(
                id=credential_id,
                scope=scope,
                kind=secret.kind,
                created_at=earlier.created_at if earlier else now,
                updated_at=now,
            )
            entries[(credential_id, scope)] = self._seal(info, secret)
        return info

    def delete(self, credential_id: str, scope: str = ANY_SCOPE) -> CredentialInfo:
        with self._locked() as entries:  # raising inside: nothing is written
            gone = entries.pop((credential_id, scope), None)
            if gone is None:
                raise CredentialNotFoundError(credential_id, scope)
        return gone.shown()

    def reseal(self) -> int:
        """Seal every entry under the primary key again (after a rotation); how many changed."""
        primary = self._keyring.primary
        with self._locked() as entries:
            stale = [k for k, c in entries.items() if c.key_id != primary]
            for key in stale:
                old = entries[key]
                entries[key] = self._seal(old, self._open(old))
        return len(stale)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[tuple[str, str], _Stored]]:
        """The entries, to change: written back whole (0600, atomic replace) under a lock."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = self.path.with_name(self.path.name + ".lock")
        with open(lock, "a") as held:
            fcntl.flock(held, fcntl.LOCK_EX)
            entries = self._load()
            yield entries
            document = {
                "version": 1,
                "credentials": [c.model_dump(mode="json") for _, c in sorted(entries.items())],
            }
            temporary = self.path.with_name(self.path.name + ".tmp")
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.fchmod(fd, 0o600)  # a file left by a crashed write keeps its mode otherwise
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(document, out, indent=2)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, self.path)
            directory = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)  # the rename itself survives a crash
            finally:
                os.close(directory)


class CredentialManager:
    """What workers hand executors: a credential's secret by id and scope, with OAuth 2.0
    access tokens cached in memory and fetched anew shortly before they expire."""

    def __init__(
        self,
        store: CredentialStore,
        *,
        token_timeout_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self._tokens = TokenCache(timeout_s=token_timeout_s, clock=clock)

    @classmethod
    def of(cls, settings: Settings) -> CredentialManager:
        return cls(CredentialStore.of(settings))

    async def get(self, credential_id: str, scope: str = ANY_SCOPE) -> str:
        """The secret string: a static value, or a current access token.

        Raises:
            karma.errors.PermanentError: no such credential, it does not open, or the token
                endpoint refused the client (4xx).
            karma.errors.TransientError: the token endpoint is unreachable or failing.
        """
        secret = await asyncio.to_thread(self.store.open, credential_id, scope)
        if isinstance(secret, StaticSecret):
            return secret.value.get_secret_value()
        # A changed client (new secret, other URL) must not be served the old one's token.
        version = hashlib.sha256(_reveal(secret)).hexdigest()
        return await self._tokens.token(
            (credential_id, scope, version),
            secret,
            what=f"credential {credential_id!r} (scope {scope!r})",
        )
