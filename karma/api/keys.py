"""API keys: random, shown once at creation, stored only as a SHA-256 hash.

A key reads `karma_<id>_<secret>`: the id names it in listings, logs and revocations; the
secret (256 random bits) is what proves it. The store is one JSON file (mode 0600) written
whole under a lock and replaced atomically; a process serving the API re-reads it when it
changes, so a revoked key stops working at its next request.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, Field

from karma.envelope import Id, Name
from karma.private_files import create_once
from karma.settings import Settings

PREFIX = "karma"
SESSION_SECRET_BYTES = 32


class Scope(StrEnum):
    READ = "read"  # actions, streams, the registry, the ledger, the DLQ
    REQUEST = "request"  # request, cancel, deliver callbacks
    DECIDE = "decide"  # approve or reject
    ADMIN = "admin"  # everything, and DLQ replay


class ApiKey(BaseModel):
    """What the store keeps of a key (never the key)."""

    id: str
    name: Name = ""
    scopes: list[Scope]
    tenant: Id = Field(default="", description="bound to this tenant; empty: every tenant")
    created_at: str
    revoked_at: str | None = None
    sha256: str = Field(repr=False)

    def allows(self, scope: Scope) -> bool:
        return Scope.ADMIN in self.scopes or scope in self.scopes

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


class KeyNotFoundError(LookupError):
    pass


def keys_path(settings: Settings) -> Path:
    return settings.api.keys_file or settings.data_dir / "api-keys.json"


def local_key_path(settings: Settings) -> Path:
    return settings.data_dir / "admin.key"


def local_admin_key(settings: Settings) -> tuple[str, bool]:
    """The embedded stack's admin key: (the key, whether it was created now). Kept, like a
    dev server's root token, in <data_dir>/admin.key (0600) for the local CLI; made anew
    when that file is missing or its key no longer works."""
    path = local_key_path(settings)
    store = KeyStore.of(settings)
    try:
        kept = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        kept = ""
    if kept and store.verify(kept) is not None:
        return kept, False
    token, _ = store.create([Scope.ADMIN], name="karma dev")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(token + "\n")
    return token, True


def client_key(settings: Settings) -> str | None:
    """The key a local command sends to the API: KARMA_API__KEY, else the embedded stack's."""
    if settings.api.key is not None:
        return settings.api.key.get_secret_value()
    try:
        return local_key_path(settings).read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse(token: str) -> tuple[str, str] | None:
    """(id, secret) of a well-formed key, else None."""
    prefix, _, rest = token.partition("_")
    key_id, _, secret = rest.partition("_")
    if prefix != PREFIX or not key_id or not secret:
        return None
    return key_id, secret


class KeyStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: tuple[int, int, int] | None = None
        self._keys: dict[str, ApiKey] = {}

    @classmethod
    def of(cls, settings: Settings) -> KeyStore:
        return cls(keys_path(settings))

    # -- reading ---------------------------------------------------------------------------

    def _load(self) -> dict[str, ApiKey]:
        """The keys as the file holds them now (re-read only when it changed)."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._seen, self._keys = None, {}
            return self._keys
        seen = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if seen != self._seen:
            document = json.loads(self.path.read_text(encoding="utf-8"))
            self._keys = {k["id"]: ApiKey.model_validate(k) for k in document.get("keys", [])}
            self._seen = seen
        return self._keys

    def listed(self) -> list[ApiKey]:
        return sorted(self._load().values(), key=lambda k: k.created_at)

    def get(self, key_id: str) -> ApiKey | None:
        """The key with this id, if it exists and is not revoked."""
        key = self._load().get(key_id)
        return None if key is None or key.revoked else key

    def verify(self, token: str) -> ApiKey | None:
        """The key this token is, if it is one and not revoked."""
        parsed = parse(token)
        if parsed is None:
            return None
        key = self.get(parsed[0])
        if key is None:
            return None
        return key if hmac.compare_digest(key.sha256, _digest(parsed[1])) else None

    # -- writing ---------------------------------------------------------------------------

    def create(
        self, scopes: list[Scope], *, name: str = "", tenant: str = ""
    ) -> tuple[str, ApiKey]:
        """A new key: (the key itself, shown once; what the store keeps)."""
        if not scopes:
            raise ValueError("a key needs at least one scope")
        key_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        key = ApiKey(
            id=key_id,
            name=name,
            scopes=sorted(set(scopes)),
            tenant=tenant,
            created_at=datetime.now(UTC).isoformat(),
            sha256=_digest(secret),
        )
        with self._locked() as keys:
            keys[key_id] = key
        return f"{PREFIX}_{key_id}_{secret}", key

    def revoke(self, key_id: str) -> ApiKey:
        with self._locked() as keys:
            key = keys.get(key_id)
            if key is None:
                raise KeyNotFoundError(f"no API key {key_id!r}")
            if not key.revoked:
                key = keys[key_id] = key.model_copy(
                    update={"revoked_at": datetime.now(UTC).isoformat()}
                )
        return key

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, ApiKey]]:
        """The keys, to change: written back whole (0600, atomic replace) under a lock."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = self.path.with_name(self.path.name + ".lock")
        with open(lock, "a") as held:
            fcntl.flock(held, fcntl.LOCK_EX)
            self._seen = None  # read it fresh under the lock
            keys = dict(self._load())
            yield keys
            document = {"version": 1, "keys": [k.model_dump(mode="json") for k in keys.values()]}
            temporary = self.path.with_name(self.path.name + ".tmp")
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(document, out, indent=2)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, self.path)
            self._seen = None


class Sessions:
    """The console's sessions: `key_id.expires.nonce.mac`, signed with a secret kept beside
    the keys (0600), so the cookie never holds a key; a session ends at its expiry, at
    logout (in this process) or when its key is revoked."""

    def __init__(self, store: KeyStore) -> None:
        self._store = store
        self._secret: bytes | None = None
        self._ended: dict[str, int] = {}  # nonce -> its expiry (logged out here)

    def _key(self) -> bytes:
        """The signing secret, made once (written whole, then linked into place: a reader
        never sees a part of it); one that is not 32 bytes is refused, never used."""
        if self._secret is None:
            path = self._store.path.with_name("session.key")
            create_once(path, secrets.token_hex(SESSION_SECRET_BYTES))
            try:
                secret = bytes.fromhex(path.read_text().strip())
            except ValueError:
                secret = b""
            if len(secret) < SESSION_SECRET_BYTES:
                raise RuntimeError(f"{path} is damaged (delete it: sessions are signed anew)")
            self._secret = secret
        return self._secret

    def _mac(self, text: str) -> str:
        return hmac.new(self._key(), text.encode(), hashlib.sha256).hexdigest()

    def issue(self, key: ApiKey, lifetime_s: int) -> str:
        expires = int(datetime.now(UTC).timestamp()) + lifetime_s
        text = f"{key.id}.{expires}.{secrets.token_hex(8)}"
        return f"{text}.{self._mac(text)}"

    def verify(self, token: str) -> ApiKey | None:
        """The key behind a session that is still good."""
        text, _, mac = token.rpartition(".")
        parts = text.split(".")
        if len(parts) != 3 or not parts[1].isdigit():
            return None
        if not hmac.compare_digest(mac.encode(), self._mac(text).encode()):
            return None
        key_id, expires, nonce = parts[0], int(parts[1]), parts[2]
        if expires <= datetime.now(UTC).timestamp() or nonce in self._ended:
            return None
        return self._store.get(key_id)

    def end(self, token: str) -> None:
        text, _, _ = token.rpartition(".")
        parts = text.split(".")
        if len(parts) == 3 and parts[1].isdigit() and self.verify(token) is not None:
            now = datetime.now(UTC).timestamp()
            self._ended = {n: e for n, e in self._ended.items() if e > now}  # forget old ones
            self._ended[parts[2]] = int(parts[1])
