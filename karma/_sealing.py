"""The keys credentials are sealed with (AES-256-GCM): the payload keyring, or a key made
once in the data dir.

Each ciphertext is stored with the id of the key that sealed it, so a value sealed under an
older primary still opens after a new key goes first. The data dir's key keeps opening
what it sealed after a keyring is configured, until everything is sealed again.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from karma.errors import PermanentError
from karma.private_files import create_once

# The key made in the data dir; ids in KARMA_CODEC__KEYS cannot hold ':', so never this.
LOCAL_KEY_ID = "file:credentials.key"
NONCE_BYTES = 12


def local_key(path: Path) -> bytes:
    """The data dir's key, made once (0600, written whole, then linked into place, so a
    reader never sees part of it)."""
    if not path.exists():
        create_once(path, base64.b64encode(AESGCM.generate_key(bit_length=256)).decode())
    try:
        key = base64.b64decode(path.read_text().strip(), validate=True)
    except ValueError:
        key = b""
    if len(key) != 32:
        raise PermanentError(f"{path} is damaged: it must hold one base64 32-byte key")
    return key


class Keyring:
    """Read lazily: a worker that never opens a credential never makes a key file."""

    def __init__(self, keys: Sequence[tuple[str, bytes]], key_file: Path) -> None:
        self._keys = list(keys)
        self._key_file = key_file
        self._ciphers: dict[str, AESGCM] | None = None
        self._primary = ""

    @property
    def primary(self) -> str:
        return self._ring()[0]

    def _ring(self) -> tuple[str, dict[str, AESGCM]]:
        if self._ciphers is None:
            ring = list(self._keys)
            if not ring or self._key_file.exists():
                ring.append((LOCAL_KEY_ID, local_key(self._key_file)))
            self._primary = ring[0][0]
            self._ciphers = {key_id: AESGCM(key) for key_id, key in ring}
        return self._primary, self._ciphers

    def seal(self, plain: bytes, associated: Callable[[str], bytes]) -> tuple[str, str]:
        """(the primary key's id, base64 of nonce + ciphertext); `associated` gives the
        associated data for a key id."""
        primary, ciphers = self._ring()
        nonce = os.urandom(NONCE_BYTES)
        sealed = nonce + ciphers[primary].encrypt(nonce, plain, associated(primary))
        return primary, base64.b64encode(sealed).decode()

    def open(self, key_id: str, sealed: str, associated: bytes, what: str) -> bytes:
        """The plain bytes; a PermanentError naming `what` (never a value) otherwise."""
        cipher = self._ring()[1].get(key_id)
        if cipher is None:
            raise PermanentError(
                f"{what} is sealed under key {key_id!r}, which this keyring does not hold"
            )
        raw = base64.b64decode(sealed)
        try:
            return cipher.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], associated)
        except InvalidTag:
            raise PermanentError(
                f"{what} does not open under key {key_id!r} (another key of that id, or the "
                "entry was altered or moved)"
            ) from None
