"""Typed control messages of secure aggregation (edgefed.secagg, docs/privacy.md).

Binary values (keys, signatures, ciphertexts, shares) travel as base64 of an exact length; every map
is keyed by node names and bounded by MAX_SECAGG_PEERS. A body breaking any rule fails as a
MessageError, which costs only its sender.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any

from edgefed.wire.frame import MessageType
from edgefed.wire.messages import MAX_NAME_CHARS, ControlMessage, shown

MAX_SECAGG_PEERS = 1000  # a roster's size; its body stays well below max_control_bytes (1 MiB)
KEY_BYTES = 32
SIGNATURE_BYTES = 64
SHARE_BYTES = 66  # one element of GF(2^521 - 1)
CIPHERTEXT_BYTES = 2 * SHARE_BYTES + 16  # a seed share and a key share, plus the AEAD tag
_SHA256 = re.compile(r"[0-9a-f]{64}")


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def unb64(text: str) -> bytes:
    """The bytes of a field that __post_init__ has already checked."""
    return base64.b64decode(text, validate=True)


class _SecAggMessage(ControlMessage):
    def _blob(self, what: str, value: Any, length: int) -> None:
        if not isinstance(value, str) or len(value) != 4 * ((length + 2) // 3):
            raise self._fail(f"{what} must be base64 of {length} bytes, got {shown(value)}")
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise self._fail(f"{what} is not base64: {shown(value)}") from None
        if len(raw) != length:
            raise self._fail(f"{what} must be {length} bytes, got {len(raw)}")

    def _name(self, what: str, value: Any) -> None:
        if not isinstance(value, str) or not 1 <= len(value) <= MAX_NAME_CHARS:
            raise self._fail(f"{what} must be a node name of 1 to {MAX_NAME_CHARS} characters, got {shown(value)}")

    def _blob_map(self, field: str, length: int) -> None:
        value = getattr(self, field)
        if not isinstance(value, dict) or len(value) > MAX_SECAGG_PEERS:
            raise self._fail(f"{field} must be an object of at most {MAX_SECAGG_PEERS} entries, got {shown(value)}")
        for name, blob in value.items():
            self._name(f"a key of {field}", name)
            self._blob(f"{field}[{name[:40]!r}]", blob, length)

    def _names(self, field: str) -> None:
        value = getattr(self, field)
        if not isinstance(value, list) or len(value) > MAX_SECAGG_PEERS:
            raise self._fail(f"{field} must be a list of at most {MAX_SECAGG_PEERS} names, got {shown(value)}")
        for name in value:
            self._name(f"an entry of {field}", name)
        if len(set(value)) != len(value):
            raise self._fail(f"{field} names a node twice")


@dataclass(frozen=True)
class SecAggAdvert(_SecAggMessage):
    """worker -> chief: two fresh X25519 public keys for this round, signed with the worker's identity
    key (the chief relays them verbatim inside SECAGG_ROSTER and cannot forge them)."""

    TYPE = MessageType.SECAGG_ADVERT
    name: str
    c_public: str
    s_public: str
    signature: str

    def __post_init__(self) -> None:
        self._name("name", self.name)
        self._blob("c_public", self.c_public, KEY_BYTES)
        self._blob("s_public", self.s_public, KEY_BYTES)
        self._blob("signature", self.signature, SIGNATURE_BYTES)


@dataclass(frozen=True)
class SecAggRoster(_SecAggMessage):
    """chief -> worker: the adverts of every worker in this round, and the shares' threshold."""

    TYPE = MessageType.SECAGG_ROSTER
    threshold: int
    adverts: list[dict[str, Any]]

    def __post_init__(self) -> None:
        self._int("threshold", 2, MAX_SECAGG_PEERS)
        if not isinstance(self.adverts, list) or not 0 < len(self.adverts) <= MAX_SECAGG_PEERS:
            raise self._fail(f"adverts must be a list of 1 to {MAX_SECAGG_PEERS} objects, got {shown(self.adverts)}")
        for advert in self.adverts:
            if not isinstance(advert, dict):
                raise self._fail(f"adverts holds {shown(advert)}, not an object")
            SecAggAdvert.from_body(advert)  # the same rules as the worker's own message
        names = [advert["name"] for advert in self.adverts]
        if len(set(names)) != len(names):
            raise self._fail("adverts names a node twice")

    def parsed(self) -> list[SecAggAdvert]:
        return [SecAggAdvert.from_body(advert) for advert in self.adverts]


@dataclass(frozen=True)
class SecAggShares(_SecAggMessage):
    """worker -> chief: for each roster peer, its shares of the worker's seed and mask key, encrypted
    for that peer; commitment is the sha256 of the self-mask seed (the chief checks what it rebuilds)."""

    TYPE = MessageType.SECAGG_SHARES
    commitment: str
    shares: dict[str, str]

    def __post_init__(self) -> None:
        if not isinstance(self.commitment, str) or not _SHA256.fullmatch(self.commitment):
            raise self._fail(f"commitment must be 64 lowercase hex characters, got {shown(self.commitment)}")
        self._blob_map("shares", CIPHERTEXT_BYTES)


@dataclass(frozen=True)
class SecAggInbox(_SecAggMessage):
    """chief -> worker: the encrypted shares each sender addressed to this worker."""

    TYPE = MessageType.SECAGG_INBOX
    shares: dict[str, str]

    def __post_init__(self) -> None:
        self._blob_map("shares", CIPHERTEXT_BYTES)


@dataclass(frozen=True)
class SecAggUnmaskRequest(_SecAggMessage):
    """chief -> worker: the workers whose masked update arrived (the rest are dropped)."""

    TYPE = MessageType.SECAGG_UNMASK_REQUEST
    survivors: list[str]

    def __post_init__(self) -> None:
        self._names("survivors")


@dataclass(frozen=True)
class SecAggUnmask(_SecAggMessage):
    """worker -> chief: seed shares of the survivors, mask-key shares of the dropped, never both of one."""

    TYPE = MessageType.SECAGG_UNMASK
    seed_shares: dict[str, str]
    key_shares: dict[str, str]

    def __post_init__(self) -> None:
        self._blob_map("seed_shares", SHARE_BYTES)
        self._blob_map("key_shares", SHARE_BYTES)
        if set(self.seed_shares) & set(self.key_shares):
            raise self._fail("reveals both shares of one node")
