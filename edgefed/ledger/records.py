"""Signed transfer records: one per send and one per receive of a weight or file transfer.

A record is a small JSON document. Its canonical form (sorted keys, no spaces) without the ``id`` and
``signature`` fields is what the observer signs with its ed25519 ledger key and what the id is derived
from, so the same event always gets the same id (relays are idempotent) and any change to a field
breaks the signature.

A transfer is *proven* when the sender's record (direction ``send``) and the receiver's record
(direction ``receive``) agree on process, round, sender, receiver, kind, bytes and sha256. The
participant count is each observer's own view (a worker that joined late saw a different count than
the chief), recorded but not part of the agreement.

Kind ``file`` records a p2p file transfer (edgefed.p2p): the file's name travels in the signed field
``name``, round is 0 (files are outside training rounds) and participants is 2. ``name`` exists only
on file records and is left out of the canonical form when unset, so weight records keep exactly the
canonical bytes, ids and signatures they had before file records existed (older ledgers verify).

Kind ``refusal`` records an update the chief refused: the chief's signed verdict, not a transfer. The
sender is the worker, receiver and observer the chief (direction ``receive``), round the update's; the
signed fields ``code`` (the wire's ReasonCode value) and ``reason`` (the text of the REJECT), which
only refusal records carry, say why; bytes, participants and seconds are 0 and sha256 is empty. A
refusal pairs with nothing: the refused upload's own receive record pairs with the worker's send.

Kind ``model`` records a global model the chief adopted (provenance): sender, receiver and observer the
chief (direction ``send``), round the round the model starts, sha256 and bytes the model's digest and
payload size (edgefed.wire.digest), participants the number of contributors; the signed fields
``previous`` (the digest of the model it was averaged from, empty for round 0) and ``inputs`` (each
contributor with the digest of its update, ``NAME:SHA256`` separated by spaces, the chief's own weights
``NAME:local``) exist only on model records. A model record pairs with nothing either.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import fields as dataclass_fields
from functools import cached_property
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519

from edgefed.contracts.events import ModelEvent, RefusalEvent, TransferEvent
from edgefed.ledger.errors import LedgerError

RECORD_VERSION = 1
SIGNING_CONTEXT = b"edgefed-ledger-record-v1\n"
ID_HEX_CHARS = 32  # 128 bits of a SHA-256: unique enough, and short enough for an Iroha detail key
_HEX = re.compile(r"^[0-9a-f]+$")
_CODE = re.compile(r"^[a-z][a-z0-9-]{0,63}$")  # the shape of a wire ReasonCode value, newer ones included

KINDS = ("weights", "update", "file", "refusal", "model")
FILE_KIND = "file"
REFUSAL_KIND = "refusal"
MODEL_KIND = "model"
UNPAIRED_KINDS = (REFUSAL_KIND, MODEL_KIND)  # one node's statement alone: no other side to agree with
LOCAL_INPUT = "local"  # a model record's input that reached the chief without a transfer (its own weights)
_INPUT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}:(local|[0-9a-f]{64})$")  # a PKI node name, a digest
MAX_REASON_CHARS = 1024  # a refusal's text, clipped when the record is made
MAX_INPUTS_CHARS = 60_000  # ~800 contributors; Iroha's 4096-character detail holds about 40 of them
MAX_NAME_BYTES = 255  # p2p accepts at most 200; the ledger only needs a bound (Iroha detail values are small)

# The fields both sides of one transfer must agree on (name is None on both sides of weight transfers).
AGREEMENT_FIELDS = ("process", "round", "sender", "receiver", "kind", "name", "bytes", "sha256")
# Fields added after version 1 records existed: left out of the canonical form when unset.
OPTIONAL_FIELDS = ("name", "code", "reason", "previous", "inputs")


def canonical_json(document: Mapping[str, Any]) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


@dataclass(frozen=True)
class TransferRecord:
    """One node's signed account of one weight or file transfer."""

    process: str  # the federated process (deployment) the transfer belongs to
    round: int
    sender: str
    receiver: str
    observer: str  # who wrote and signed this record: the sender for "send", the receiver for "receive"
    direction: str  # "send" | "receive"
    kind: str  # "weights" (chief -> worker) | "update" (worker -> chief) | "file" (p2p, any two nodes)
    participants: int
    bytes: int
    sha256: str
    seconds: float
    time: float
    signature: str = ""
    v: int = RECORD_VERSION
    name: str | None = None  # kind "file" only: the file's name, as the receiver stored it
    code: str | None = None  # kind "refusal" only: why, as a code (a wire ReasonCode value)
    reason: str | None = None  # kind "refusal" only: why, for people
    previous: str | None = None  # kind "model" only: the digest of the model before ("" for round 0)
    inputs: str | None = None  # kind "model" only: "NAME:SHA256 ..." of the updates averaged

    def body(self) -> dict[str, Any]:
        """The signed fields (everything except the signature)."""
        return {name: value for name, value in self.fields().items() if name != "signature"}

    def fields(self) -> dict[str, Any]:
        return {
            name: getattr(self, name)
            for name in _FIELD_NAMES
            if not (name in OPTIONAL_FIELDS and getattr(self, name) is None)
        }

    @cached_property
    def signed_bytes(self) -> builtins.bytes:  # the field `bytes` shadows the type here
        """The canonical JSON of the signed fields (computed once: ids, signing and checks all need it)."""
        return canonical_json(self.body())

    @cached_property
    def id(self) -> str:
        return hashlib.sha256(self.signed_bytes).hexdigest()[:ID_HEX_CHARS]

    @property
    def transfer_key(self) -> tuple[str, int, str, str, str, str | None]:
        """What pairs a send record with its receive record (besides the payload digest)."""
        return (self.process, self.round, self.sender, self.receiver, self.kind, self.name)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, **self.fields()}

    def to_json(self) -> str:
        return canonical_json(self.to_dict()).decode()

    def signed(self, key: ed25519.Ed25519PrivateKey) -> TransferRecord:
        signature = key.sign(SIGNING_CONTEXT + self.signed_bytes).hex()
        return TransferRecord(**{**self.fields(), "signature": signature})

    def verify(self, public_key: ed25519.Ed25519PublicKey) -> None:
        """Raise LedgerError unless the signature is the observer's over exactly these fields."""
        try:
            raw = bytes.fromhex(self.signature)
        except ValueError:
            raise LedgerError(f"record {self.id}: signature is not hex") from None
        try:
            public_key.verify(raw, SIGNING_CONTEXT + self.signed_bytes)
        except InvalidSignature:
            raise LedgerError(
                f"record {self.id}: bad signature (not {self.observer}'s ledger key over these fields)"
            ) from None

    @classmethod
    def from_event(cls, event: TransferEvent, process: str) -> TransferRecord:
        return cls(
            process=process,
            round=event.round,
            sender=event.sender,
            receiver=event.receiver,
            observer=event.observer,
            direction=event.direction,
            kind=event.kind,
            participants=event.participants,
            bytes=event.bytes,
            sha256=event.sha256,
            seconds=round(float(event.seconds), 6),
            time=float(event.timestamp),
        )

    @classmethod
    def from_refusal(cls, event: RefusalEvent, process: str) -> TransferRecord:
        """The chief's (unsigned) record of an update it refused; control characters in the text
        become '?' and it is clipped to MAX_REASON_CHARS."""
        text = "".join("?" if unicodedata.category(char).startswith("C") else char for char in event.message)
        text = text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 3] + "..."
        record = cls(
            process=process, round=event.round, sender=event.worker, receiver=event.observer,
            observer=event.observer, direction="receive", kind=REFUSAL_KIND, participants=0, bytes=0,
            sha256="", seconds=0.0, time=float(event.timestamp), code=event.code, reason=text or "-",
        )
        record.check_fields()
        return record

    @classmethod
    def from_model(cls, event: ModelEvent, process: str) -> TransferRecord:
        """The chief's (unsigned) record of a global model it adopted."""
        inputs = " ".join(f"{name}:{digest or LOCAL_INPUT}" for name, digest in event.inputs)
        record = cls(
            process=process, round=event.round, sender=event.observer, receiver=event.observer,
            observer=event.observer, direction="send", kind=MODEL_KIND, participants=len(event.inputs),
            bytes=event.bytes, sha256=event.sha256, seconds=0.0, time=float(event.timestamp),
            previous=event.previous, inputs=inputs,
        )
        record.check_fields()
        return record

    def model_inputs(self) -> list[tuple[str, str]]:
        """A model record's (contributor, update digest or "local") pairs."""
        return [tuple(item.split(":", 1)) for item in (self.inputs or "").split()]  # type: ignore[misc]

    @classmethod
    def for_file(
        cls,
        *,
        process: str,
        sender: str,
        receiver: str,
        direction: str,
        name: str,
        size: int,
        sha256: str,
        seconds: float,
        time: float,
    ) -> TransferRecord:
        """One side's (unsigned) record of a p2p file transfer; the observer is the side named by direction."""
        record = cls(
            process=process,
            round=0,
            sender=sender,
            receiver=receiver,
            observer=sender if direction == "send" else receiver,
            direction=direction,
            kind=FILE_KIND,
            participants=2,
            bytes=size,
            sha256=sha256,
            seconds=round(float(seconds), 6),
            time=float(time),
            name=name,
        )
        record.check_fields()
        return record

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> TransferRecord:
        """Parse and check a record received from elsewhere; a claimed id must match the content."""
        if not isinstance(document, Mapping):
            raise LedgerError(f"a record must be a JSON object, got {type(document).__name__}")
        expected = {
            "process": str,
            "round": int,
            "sender": str,
            "receiver": str,
            "observer": str,
            "direction": str,
            "kind": str,
            "participants": int,
            "bytes": int,
            "sha256": str,
            "seconds": float,
            "time": float,
            "signature": str,
            "v": int,
        }
        optional = {"name": str, "code": str, "reason": str, "previous": str, "inputs": str}
        label = document.get("id", "?")
        unknown = sorted(set(document) - set(expected) - set(optional) - {"id"})
        if unknown:
            raise LedgerError(f"record {label}: unknown field {unknown[0]!r}")
        values: dict[str, Any] = {}
        for name, kind in expected.items():
            if name not in document:
                raise LedgerError(f"record {label}: field {name!r} is missing")
            value = document[name]
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if isinstance(value, bool) or not isinstance(value, kind):
                raise LedgerError(f"record {label}: field {name!r} must be {kind.__name__}, got {value!r}")
            values[name] = value
        for name, kind in optional.items():
            if name in document:
                value = document[name]
                if not isinstance(value, kind):
                    raise LedgerError(f"record {label}: field {name!r} must be {kind.__name__}, got {value!r}")
                values[name] = value
        record = cls(**values)
        record.check_fields()
        if "id" in document and document["id"] != record.id:
            raise LedgerError(f"record {label}: id does not match its content (expected {record.id})")
        return record

    def check_fields(self) -> None:
        label = f"record {self.id}"
        if self.v != RECORD_VERSION:
            raise LedgerError(f"{label}: unsupported record version {self.v}")
        if self.direction not in ("send", "receive"):
            raise LedgerError(f"{label}: direction must be 'send' or 'receive', got {self.direction!r}")
        if self.kind not in KINDS:
            raise LedgerError(f"{label}: kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.kind == FILE_KIND:
            _check_file_name(label, self.name)
        elif self.name is not None:
            raise LedgerError(f"{label}: only file records carry a name ({self.kind} records do not)")
        if self.kind == REFUSAL_KIND:
            _check_refusal(label, self)
            return
        if self.kind == MODEL_KIND:
            _check_model(label, self)
        elif self.previous is not None or self.inputs is not None:
            raise LedgerError(f"{label}: only model records carry previous and inputs")
        if self.code is not None or self.reason is not None:
            raise LedgerError(f"{label}: only refusal records carry a code and a reason")
        expected_observer = self.sender if self.direction == "send" else self.receiver
        if self.observer != expected_observer:
            raise LedgerError(
                f"{label}: observer {self.observer!r} is not the {self.direction}er ({expected_observer!r})"
            )
        if len(self.sha256) != 64 or not _HEX.match(self.sha256):
            raise LedgerError(f"{label}: sha256 must be 64 lowercase hex characters")
        if self.round < 0 or self.bytes < 0 or self.participants < 0:
            raise LedgerError(f"{label}: round, bytes and participants must be >= 0")


_FIELD_NAMES = tuple(field.name for field in dataclass_fields(TransferRecord))


def _check_file_name(label: str, name: str | None) -> None:
    if name is None:
        raise LedgerError(f"{label}: a file record needs the file's name")
    if not name or len(name.encode()) > MAX_NAME_BYTES:
        raise LedgerError(f"{label}: file name must be 1 to {MAX_NAME_BYTES} bytes of UTF-8")
    # Names are shown by `edgefed ledger show`: no character that could drive a terminal.
    if any(unicodedata.category(char).startswith("C") for char in name):
        raise LedgerError(f"{label}: file name {name!r} contains a control or format character")


def _check_refusal(label: str, record: TransferRecord) -> None:
    if record.direction != "receive" or record.observer != record.receiver:
        raise LedgerError(f"{label}: a refusal is recorded by the chief that refused it (direction 'receive')")
    if record.code is None or not _CODE.match(record.code):
        raise LedgerError(f"{label}: a refusal needs a code of lowercase letters, digits and '-', got {record.code!r}")
    if not record.reason or len(record.reason) > MAX_REASON_CHARS:
        raise LedgerError(f"{label}: a refusal needs a reason of 1 to {MAX_REASON_CHARS} characters")
    # Reasons are shown by `edgefed ledger show`: no character that could drive a terminal.
    if any(unicodedata.category(char).startswith("C") for char in record.reason):
        raise LedgerError(f"{label}: refusal reason contains a control or format character")
    if record.bytes or record.participants or record.sha256 or record.seconds:
        raise LedgerError(f"{label}: a refusal carries no bytes, participants, sha256 or seconds")
    if record.round < 0:
        raise LedgerError(f"{label}: round must be >= 0")


def _check_model(label: str, record: TransferRecord) -> None:
    if record.direction != "send" or not record.sender == record.receiver == record.observer:
        raise LedgerError(f"{label}: a model record is the chief's own (sender, receiver and observer alike)")
    if record.previous is None or (record.previous and not _HEX.match(record.previous)) or \
            len(record.previous) not in (0, 64):
        raise LedgerError(f"{label}: previous must be a model digest (64 lowercase hex) or empty for round 0")
    if record.inputs is None or len(record.inputs) > MAX_INPUTS_CHARS:
        raise LedgerError(f"{label}: a model record needs its inputs (at most {MAX_INPUTS_CHARS} characters)")
    items = record.inputs.split()
    if " ".join(items) != record.inputs or not all(_INPUT.match(item) for item in items):
        raise LedgerError(f"{label}: inputs must be 'NAME:SHA256' or 'NAME:local' separated by single spaces")
    if len(items) != record.participants:
        raise LedgerError(f"{label}: participants ({record.participants}) is not the number of inputs ({len(items)})")
    if (record.round == 0) != (record.previous == ""):
        raise LedgerError(f"{label}: only the round-0 model has no previous model")


def disagreement(send: TransferRecord, receive: TransferRecord) -> str | None:
    """Why a send record and a receive record do not describe the same transfer, or None if they do."""
    for name in AGREEMENT_FIELDS:
        if getattr(send, name) != getattr(receive, name):
            return f"{name}: sender says {getattr(send, name)!r}, receiver says {getattr(receive, name)!r}"
    return None
