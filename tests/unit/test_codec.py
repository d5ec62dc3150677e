"""The AES-GCM payload codec: keyrings that cannot work are refused with the reason, a
payload round-trips, tampering is detected, older keys still decrypt, clear payloads pass."""

from __future__ import annotations

import base64

import pytest
from cryptography.exceptions import InvalidTag
from pydantic import SecretStr
from temporalio.api.common.v1 import Payload

from karma.codec import (
    ENCODING,
    KEY_ID,
    CodecKeyError,
    EncryptionCodec,
    UnknownKeyError,
    new_key,
    parse_keyring,
)
from karma.settings import CodecSettings

A, B = f"a:{new_key()}", f"b:{new_key()}"


def clear(data: bytes = b'{"secret": "hunter2"}') -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=data)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "expected id:base64key"),
        ("nokey", "expected id:base64key"),
        (":abc", "expected id:base64key"),
        ("a:!!!", "not base64"),
        (f"a:{base64.b64encode(b'short').decode()}", "5 bytes, AES-256 needs 32"),
        (f"{A},{A}", "appears twice"),
    ],
)
def test_a_keyring_that_cannot_work_is_refused_with_the_reason(text: str, says: str) -> None:
    with pytest.raises(CodecKeyError, match=says):
        parse_keyring(text)


async def test_payloads_round_trip_and_hold_no_clear_text() -> None:
    codec = EncryptionCodec(parse_keyring(A))
    [sealed] = await codec.encode([clear()])
    assert sealed.metadata["encoding"] == ENCODING
    assert sealed.metadata[KEY_ID] == b"a"
    assert b"hunter2" not in sealed.SerializeToString()
    assert await codec.decode([sealed]) == [clear()]
    [again] = await codec.encode([clear()])
    assert again.data != sealed.data  # a fresh nonce each time


async def test_rotation_keeps_old_payloads_readable_and_encrypts_with_the_new_key() -> None:
    [old] = await EncryptionCodec(parse_keyring(A)).encode([clear()])
    rotated = EncryptionCodec(parse_keyring(f"{B},{A}"))
    assert await rotated.decode([old]) == [clear()]
    [new] = await rotated.encode([clear()])
    assert new.metadata[KEY_ID] == b"b"
    with pytest.raises(UnknownKeyError, match="'b'"):
        await EncryptionCodec(parse_keyring(A)).decode([new])


async def test_tampering_is_detected() -> None:
    codec = EncryptionCodec(parse_keyring(f"{A},{B}"))
    [sealed] = await codec.encode([clear()])
    flipped = Payload(
        metadata=dict(sealed.metadata), data=sealed.data[:-1] + bytes([sealed.data[-1] ^ 1])
    )
    with pytest.raises(InvalidTag):
        codec.decrypt(flipped)
    # The key id is bound to the ciphertext: naming another key of the ring fails too.
    relabelled = Payload(metadata={**sealed.metadata, KEY_ID: b"b"}, data=sealed.data)
    with pytest.raises(InvalidTag):
        codec.decrypt(relabelled)


async def test_clear_payloads_pass_and_no_keys_means_no_codec() -> None:
    codec = EncryptionCodec(parse_keyring(A))
    assert await codec.decode([clear()]) == [clear()]
    assert EncryptionCodec.from_settings(CodecSettings()) is None
    assert EncryptionCodec.from_settings(CodecSettings(keys=SecretStr("  "))) is None
    assert EncryptionCodec.from_settings(CodecSettings(keys=SecretStr(A))) is not None


def test_a_bad_keyring_stops_the_cli_without_printing_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from karma.cli.main import run
    from karma.settings import get_settings

    secret_part = base64.b64encode(b"x" * 31).decode()  # 31 bytes: unusable, and secret
    monkeypatch.setenv("KARMA_CODEC__KEYS", f"k1:{secret_part}")
    get_settings.cache_clear()
    try:
        assert run(["status", "act_x"]) == 2
    finally:
        get_settings.cache_clear()
    err = capsys.readouterr().err
    assert "codec.keys: Value error, KARMA_CODEC__KEYS key 'k1': 31 bytes" in err
    assert secret_part not in err
