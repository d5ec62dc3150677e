"""Payload encryption: an AES-256-GCM `PayloadCodec` with a keyring.

Each payload is encrypted whole (its metadata too) with the primary key; the key's id is
kept in clear in the new payload's metadata, so a payload written under an older key still
decodes after the primary changes (keys rotate without breaking running actions). Payloads
that are not encrypted (written before encryption was turned on) pass through unchanged.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Sequence

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec

from karma.settings import CodecSettings

ENCODING = b"binary/encrypted"
KEY_ID = "encryption-key-id"
NONCE_BYTES = 12


class CodecKeyError(ValueError):
    """The keyring setting cannot be used (says which entry and why)."""


class UnknownKeyError(LookupError):
    """A payload was encrypted under a key this keyring does not hold."""


def parse_keyring(text: str) -> list[tuple[str, bytes]]:
    """`id:base64key,...` → [(id, key)]; the first is the primary."""
    ring: list[tuple[str, bytes]] = []
    for position, entry in enumerate(p.strip() for p in text.split(",")):
        key_id, sep, encoded = entry.partition(":")
        if not sep or not key_id or not encoded:
            raise CodecKeyError(f"KARMA_CODEC__KEYS entry {position + 1}: expected id:base64key")
        try:
            key = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise CodecKeyError(f"KARMA_CODEC__KEYS key {key_id!r}: not base64 ({exc})") from exc
        if len(key) != 32:
            raise CodecKeyError(
                f"KARMA_CODEC__KEYS key {key_id!r}: {len(key)} bytes, AES-256 needs 32"
            )
        if any(known == key_id for known, _ in ring):
            raise CodecKeyError(f"KARMA_CODEC__KEYS key id {key_id!r} appears twice")
        ring.append((key_id, key))
    if not ring:
        raise CodecKeyError("KARMA_CODEC__KEYS is empty")
    return ring


def new_key() -> str:
    """A fresh key, base64 (for `id:<this>` in KARMA_CODEC__KEYS)."""
    return base64.b64encode(AESGCM.generate_key(bit_length=256)).decode()


class EncryptionCodec(PayloadCodec):
    def __init__(self, keyring: Sequence[tuple[str, bytes]]) -> None:
        if not keyring:
            raise CodecKeyError("a keyring needs at least one key")
        self.primary = keyring[0][0]
        self._ciphers = {key_id: AESGCM(key) for key_id, key in keyring}

    @classmethod
    def from_settings(cls, settings: CodecSettings) -> EncryptionCodec | None:
        if settings.keys is None or not settings.keys.get_secret_value().strip():
            return None
        return cls(parse_keyring(settings.keys.get_secret_value()))

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.encrypt(p) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.decrypt(p) for p in payloads]

    def encrypt(self, payload: Payload) -> Payload:
        nonce = os.urandom(NONCE_BYTES)
        key_id = self.primary.encode()
        sealed = self._ciphers[self.primary].encrypt(nonce, payload.SerializeToString(), key_id)
        return Payload(metadata={"encoding": ENCODING, KEY_ID: key_id}, data=nonce + sealed)

    def decrypt(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != ENCODING:
            return payload  # written in clear (before encryption was on)
        key_id = payload.metadata.get(KEY_ID, b"")
        cipher = self._ciphers.get(key_id.decode(errors="replace"))
        if cipher is None:
            raise UnknownKeyError(
                f"payload encrypted under key {key_id.decode(errors='replace')!r}, "
                f"which KARMA_CODEC__KEYS does not hold"
            )
        nonce, sealed = payload.data[:NONCE_BYTES], payload.data[NONCE_BYTES:]
        clear = Payload()
        clear.ParseFromString(cipher.decrypt(nonce, sealed, key_id))
        return clear
