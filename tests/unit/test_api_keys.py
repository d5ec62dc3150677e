"""The API keys' store: only hashes on disk, malformed and tampered keys refused, revocation
seen by every reader, no key lost when several processes create keys at once."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from karma.api.keys import KeyNotFoundError, KeyStore, Scope, parse


def test_a_key_is_shown_once_and_stored_as_a_hash(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.json")
    token, key = store.create([Scope.READ, Scope.READ, Scope.DECIDE], name="ops", tenant="t")
    parsed = parse(token)
    assert parsed is not None
    key_id, secret = parsed
    assert key.id == key_id
    assert key.scopes == [Scope.DECIDE, Scope.READ]
    text = (tmp_path / "keys.json").read_text()
    assert secret not in text
    assert json.loads(text)["keys"][0]["sha256"] == key.sha256
    assert (tmp_path / "keys.json").stat().st_mode & 0o777 == 0o600
    verified = KeyStore(tmp_path / "keys.json").verify(token)
    assert verified is not None
    assert (verified.tenant, verified.name) == ("t", "ops")


@pytest.mark.parametrize(
    "bad",
    ["", "karma", "karma_", "karma__x", "karma_id_", "other_id_secret", "karma_nosuch_secret"],
)
def test_malformed_and_unknown_keys_are_refused(tmp_path: Path, bad: str) -> None:
    store = KeyStore(tmp_path / "keys.json")
    store.create([Scope.ADMIN])
    assert store.verify(bad) is None


def test_a_tampered_secret_or_a_revoked_key_is_refused_by_every_reader(tmp_path: Path) -> None:
    writer, reader = KeyStore(tmp_path / "k.json"), KeyStore(tmp_path / "k.json")
    token, key = writer.create([Scope.READ])
    assert reader.verify(token) is not None
    assert reader.verify(token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    writer.revoke(key.id)
    assert reader.verify(token) is None  # the reader sees the change at its next check
    assert writer.revoke(key.id).revoked  # revoking twice keeps the first time
    with pytest.raises(KeyNotFoundError):
        writer.revoke("nope")


def test_concurrent_creates_lose_no_key(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"

    def make(_: int) -> str:
        return KeyStore(path).create([Scope.READ])[0]

    with ThreadPoolExecutor(8) as pool:
        tokens = list(pool.map(make, range(40)))
    store = KeyStore(path)
    assert len(store.listed()) == 40
    assert all(store.verify(t) is not None for t in tokens)


def test_a_key_needs_a_scope(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="scope"):
        KeyStore(tmp_path / "k.json").create([])


def test_sessions_are_signed_and_a_damaged_secret_is_refused(tmp_path: Path) -> None:
    from karma.api.keys import Sessions

    store = KeyStore(tmp_path / "keys.json")
    _, key = store.create([Scope.READ])
    session = Sessions(store).issue(key, 60)
    assert Sessions(store).verify(session) is not None  # another process, the same secret
    assert Sessions(store).verify(session[:-1] + ("0" if session[-1] != "0" else "1")) is None
    assert Sessions(store).verify(session + "é") is None  # not a 500: refused
    (tmp_path / "session.key").write_text("")
    with pytest.raises(RuntimeError, match="damaged"):
        Sessions(store).verify(session)
