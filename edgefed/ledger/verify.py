"""`edgefed ledger verify`: chain integrity, every signature, and sender/receiver agreement per transfer
(weight transfers and p2p file transfers alike). Refusal and model records are checked and
signature-verified like the others but pair with nothing: each is the chief's statement alone."""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from edgefed.ledger.chain import GENESIS_PREV, ChainReader, Entry, check_entry_signature, entry_hash
from edgefed.ledger.errors import LedgerError
from edgefed.ledger.records import AGREEMENT_FIELDS, MODEL_KIND, UNPAIRED_KINDS, TransferRecord, disagreement
from edgefed.pki import ledger_public_keys, public_key_hex

MAX_PROBLEMS = 1000


@dataclass(frozen=True)
class Problem:
    where: str  # "entry 12" (embedded) or "record ab12..." (other backends)
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass
class VerifyReport:
    entries: int = 0
    records: int = 0  # transfer and refusal records
    models: int = 0  # model records (provenance), counted apart: they are no transfer
    signers: list[str] = field(default_factory=list)
    proven_transfers: int = 0
    problems: list[Problem] = field(default_factory=list)
    # What `edgefed ledger provenance` builds on: the records whose signatures verified, and which of
    # the problems are only unpaired transfers (the rest are about the store and the signatures).
    checked: list[tuple[str, TransferRecord]] = field(default_factory=list, repr=False)
    pairing: list[Problem] = field(default_factory=list, repr=False)

    @property
    def integrity_problems(self) -> list[Problem]:
        return [problem for problem in self.problems if problem not in self.pairing]

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "entries": self.entries,
            "records": self.records,
            "models": self.models,
            "signers": self.signers,
            "proven_transfers": self.proven_transfers,
            "problems": [{"where": p.where, "message": p.message} for p in self.problems],
        }


def verify_ledger(path: str | Path, pki_dir: str | Path | None = None) -> VerifyReport:
    """Walk the whole chain (opened read-only); every problem found is reported, the first one first."""
    ledger = ChainReader.open(path)
    try:
        return verify_entries(ledger.entries(), ledger_public_keys(pki_dir) if pki_dir else None)
    except sqlite3.DatabaseError as exc:  # the file itself is damaged beyond SQLite's page structure
        raise LedgerError(f"{ledger.path}: the database cannot be read: {exc}") from None
    finally:
        ledger.close()


def verify_entries(
    entries: Iterable[Entry], pki_keys: Mapping[str, ed25519.Ed25519PublicKey] | None = None
) -> VerifyReport:
    report = VerifyReport()
    keys: dict[str, str] = {}
    records: list[tuple[str, TransferRecord]] = []
    expected_height, prev = 1, GENESIS_PREV
    for entry in entries:
        report.entries += 1
        where = f"entry {entry.height}"
        problem = _check_entry(entry, expected_height, prev, keys, pki_keys)
        if problem:
            report.problems.append(Problem(where, problem))
        elif entry.kind == "record":
            records.append((where, entry.record()))
        expected_height, prev = entry.height + 1, entry.hash
    if report.entries == 0:
        report.problems.append(Problem("ledger", "it holds no entries (not even the chief's key)"))
    report.signers = sorted(keys)
    report.models = sum(1 for _, record in records if record.kind == MODEL_KIND)
    report.records = len(records) - report.models
    proven, problems = check_transfers(records)
    report.proven_transfers, report.checked, report.pairing = proven, records, problems
    report.problems.extend(problems)
    del report.problems[MAX_PROBLEMS:]
    return report


class _Broken(Exception):
    """One entry fails a check; the message says which check."""


def _check_entry(
    entry: Entry,
    expected_height: int,
    prev: str,
    keys: dict[str, str],
    pki_keys: Mapping[str, ed25519.Ed25519PublicKey] | None,
) -> str | None:
    """Why this entry is broken, or None (registers the keys a key entry carries)."""
    try:
        _check_link(entry, expected_height, prev)
        try:
            document = entry.payload_document()
        except LedgerError as exc:
            raise _Broken(str(exc).split(": ", 1)[-1]) from None
        if entry.kind == "key":
            _register_key(entry, document, keys, pki_keys)
        owner_key = keys.get(entry.appended_by)
        if owner_key is None:
            raise _Broken(f"appended by {entry.appended_by!r}, whose key the chain has not registered")
        if not check_entry_signature(entry, owner_key):
            raise _Broken(f"the chain signature is not {entry.appended_by}'s")
        if entry.kind == "record":
            _check_record(entry, document, keys)
        elif entry.kind != "key":
            raise _Broken(f"unknown entry kind {entry.kind!r}")
    except _Broken as broken:
        return str(broken)
    return None


def _check_link(entry: Entry, expected_height: int, prev: str) -> None:
    if entry.height != expected_height:
        raise _Broken(f"height {entry.height} follows {expected_height - 1}: entries are missing")
    if entry.prev_hash != prev:
        raise _Broken(
            "its previous-hash link does not match the entry before it (an entry was changed, removed or inserted)"
        )
    recomputed = entry_hash(
        height=entry.height,
        kind=entry.kind,
        entry_id=entry.entry_id,
        payload=entry.payload,
        prev_hash=entry.prev_hash,
        appended_at=entry.appended_at,
        appended_by=entry.appended_by,
    )
    if recomputed != entry.hash:
        raise _Broken("its content does not match its hash (changed after it was appended)")


def _register_key(
    entry: Entry,
    document: dict[str, Any],
    keys: dict[str, str],
    pki_keys: Mapping[str, ed25519.Ed25519PublicKey] | None,
) -> None:
    node, public_hex = document.get("node"), document.get("public_key")
    if not isinstance(node, str) or not isinstance(public_hex, str):
        raise _Broken("a key entry needs 'node' and 'public_key'")
    if entry.height == 1 and node != entry.appended_by:
        raise _Broken(f"the first entry must register the chain owner's key ({entry.appended_by}), not {node}'s")
    if pki_keys is not None:
        expected = pki_keys.get(node)
        if expected is None:
            raise _Broken(f"{node} has no ledger.pub in the PKI directory")
        if public_key_hex(expected) != public_hex:
            raise _Broken(f"{node}'s registered key differs from its ledger.pub in the PKI directory")
    keys[node] = public_hex


def _check_record(entry: Entry, document: dict[str, Any], keys: dict[str, str]) -> None:
    try:
        record = TransferRecord.from_dict(document)
        if record.id != entry.entry_id:
            raise _Broken(f"entry id {entry.entry_id} is not the id of its record ({record.id})")
        signer = keys.get(record.observer)
        if signer is None:
            raise _Broken(
                f"record {record.id} is signed by {record.observer!r}, whose key was not registered before it"
            )
        record.verify(ed25519.Ed25519PublicKey.from_public_bytes(bytes.fromhex(signer)))
    except LedgerError as exc:
        raise _Broken(str(exc)) from None


def check_transfers(records: Iterable[tuple[str, TransferRecord]]) -> tuple[int, list[Problem]]:
    """Pair every send record with a receive record that agrees with it; report the rest.

    Returns the number of proven transfers and one problem per unpaired or disagreeing record.
    """
    sends: dict[tuple[Any, ...], list[tuple[str, TransferRecord]]] = defaultdict(list)
    receives: dict[tuple[Any, ...], list[tuple[str, TransferRecord]]] = defaultdict(list)
    for where, record in records:
        if record.kind in UNPAIRED_KINDS:  # refusals and model records: one node's statement
            continue
        key = tuple(getattr(record, name) for name in AGREEMENT_FIELDS)
        (sends if record.direction == "send" else receives)[key].append((where, record))
    proven = 0
    leftover_sends: list[tuple[str, TransferRecord]] = []
    leftover_receives: list[tuple[str, TransferRecord]] = []
    for key in sends.keys() | receives.keys():
        sent, received = sends.get(key, []), receives.get(key, [])
        pairs = min(len(sent), len(received))
        proven += pairs
        leftover_sends.extend(sent[pairs:])
        leftover_receives.extend(received[pairs:])
    problems: list[Problem] = []
    unmatched_receives = {id(item): item for item in leftover_receives}
    for where, send in leftover_sends:
        counterpart = next(
            (item for item in unmatched_receives.values() if item[1].transfer_key == send.transfer_key), None
        )
        if counterpart is not None:
            del unmatched_receives[id(counterpart)]
            reason = disagreement(send, counterpart[1])
            problems.append(
                Problem(
                    where,
                    f"{_describe(send)} and the receiver's record in {counterpart[0]} disagree on {reason}",
                )
            )
        else:
            problems.append(Problem(where, f"{_describe(send)}: no matching receive record from {send.receiver}"))
    for where, receive in unmatched_receives.values():
        problems.append(Problem(where, f"{_describe(receive)}: no matching send record from {receive.sender}"))
    problems.sort(key=lambda problem: _sort_key(problem.where))
    return proven, problems


def _describe(record: TransferRecord) -> str:
    if record.name is not None:
        return f"file {record.name!r} {record.sender}->{record.receiver} (record {record.id})"
    return f"{record.kind} {record.sender}->{record.receiver} round {record.round} (record {record.id})"


def _sort_key(where: str) -> tuple[int, str]:
    number = where.rsplit(" ", 1)[-1]
    return (int(number), where) if number.isdigit() else (0, where)
