"""`edgefed ledger provenance MODEL STATE_DIR`: from an exported model file back to round 0 on the ledger.

The links, each checked:
1. the file's bytes match the sha256 its `manifest.json` (written beside it by the export) lists;
2. the manifest's `model_sha256` (the digest of the weights the file was made from) is the digest of a
   `model` record the chief signed on the ledger;
3. each model record names its inputs: for every contributing worker, the digest of its update, which
   the chief's receive record and the worker's own send record of that round must both carry; the
   chief's own weights are `local`;
4. each model record names the digest of the model before it, which must be the digest of an earlier
   model record; the walk ends at the round-0 model (no previous one).
A record whose signature or place in the chain does not verify does not count: the walk then reports
the link it could not make, and the store's own problem after it.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgefed.ledger.errors import LedgerError
from edgefed.ledger.records import LOCAL_INPUT, MODEL_KIND, TransferRecord
from edgefed.ledger.verify import VerifyReport

MANIFEST_NAME = "manifest.json"  # what edgefed.tf.export writes beside the model files
MAX_MANIFEST_BYTES = 1 << 20


@dataclass(frozen=True)
class Contribution:
    node: str
    update: str  # the digest of its update, or "local" (the chief's own weights)
    records: tuple[str, ...] = ()  # where the transfer's send and receive records are


@dataclass(frozen=True)
class ModelLink:
    round: int
    model: str
    where: str  # the model record's place on the ledger
    inputs: tuple[Contribution, ...]


@dataclass
class ProvenanceReport:
    model_file: str
    model_sha256: str = ""
    process: str = ""
    links: list[ModelLink] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def manifest_digest(model_path: str | Path) -> str:
    """The model digest the manifest beside this file records, after checking the file against it."""
    path = Path(model_path)
    manifest_path = path.parent / MANIFEST_NAME
    try:
        data = path.read_bytes()
        if manifest_path.stat().st_size > MAX_MANIFEST_BYTES:
            raise LedgerError(f"{manifest_path}: over {MAX_MANIFEST_BYTES} bytes, not an export manifest")
        manifest: Any = json.loads(manifest_path.read_text())
    except FileNotFoundError as exc:
        raise LedgerError(f"{exc.filename}: no such file (the model and the manifest.json of its export)") from None
    except (OSError, ValueError) as exc:
        raise LedgerError(f"{manifest_path}: cannot be read as JSON: {exc}") from None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    entries = [e for e in (files or {}).values() if isinstance(e, dict) and e.get("file") == path.name]
    if not entries:
        raise LedgerError(f"{manifest_path}: lists no file named {path.name!r}")
    if hashlib.sha256(data).hexdigest() != entries[0].get("sha256"):
        raise LedgerError(f"{path}: its bytes do not match the sha256 in {MANIFEST_NAME} (the file was changed)")
    digest = manifest.get("model_sha256")
    if not isinstance(digest, str) or len(digest) != 64:
        raise LedgerError(f"{manifest_path}: has no model_sha256 (exported before provenance existed?)")
    return digest


def trace(model_path: str | Path, ledger: VerifyReport) -> ProvenanceReport:
    """Walk from the model file back to round 0 through the ledger's verified records."""
    report = ProvenanceReport(str(model_path))
    try:
        report.model_sha256 = manifest_digest(model_path)
    except LedgerError as exc:
        report.problems.append(str(exc))
        return report
    missing_inputs: list[str] = []
    _walk(report, ledger.checked, missing_inputs)
    report.problems.extend(missing_inputs)  # after the models' own chain: a missing round is the headline
    report.problems.extend(f"ledger: {problem}" for problem in ledger.integrity_problems)
    return report


def _walk(report: ProvenanceReport, checked: list[tuple[str, TransferRecord]], missing_inputs: list[str]) -> None:
    models: dict[str, list[tuple[str, TransferRecord]]] = defaultdict(list)
    sides: dict[tuple[str, int, str, str, str], list[str]] = defaultdict(list)  # one update's records
    for where, record in checked:
        if record.kind == MODEL_KIND:
            models[record.sha256].append((where, record))
        elif record.kind == "update":
            sides[(record.process, record.round, record.sender, record.sha256, record.direction)].append(where)
    digest, before = report.model_sha256, None
    while True:
        found = [(w, r) for w, r in models.get(digest, []) if before is None or r.round < before]
        found = [(w, r) for w, r in found if not report.process or r.process == report.process]
        if not found:
            if before is None:
                report.problems.append(f"no model record on the ledger has this model's digest {digest[:16]}…: "
                                       "it is not a model of this federation, or its record is missing")
            else:
                report.problems.append(f"round {before}: the model it was averaged from ({digest[:16]}…) has no "
                                       "model record on the ledger: a round is missing")
            return
        where, record = max(found, key=lambda item: item[1].round)
        report.process = record.process
        report.links.append(ModelLink(record.round, digest, where, _inputs(missing_inputs, record, sides)))
        if not record.previous:
            return
        digest, before = record.previous, record.round


def _inputs(
    problems: list[str], model: TransferRecord, sides: dict[tuple[str, int, str, str, str], list[str]]
) -> tuple[Contribution, ...]:
    contributions = []
    for node, update in model.model_inputs():
        if update == LOCAL_INPUT:
            contributions.append(Contribution(node, update))
            continue
        key = (model.process, model.round - 1, node, update)
        sent, received = sides.get((*key, "send"), []), sides.get((*key, "receive"), [])
        if not received:
            problems.append(f"round {model.round}: {node}'s update {update[:16]}… has no receive record "
                                   f"by {model.observer} on the ledger")
        elif not sent:
            problems.append(f"round {model.round}: {node}'s update {update[:16]}… has no send record by "
                                   f"{node} on the ledger")
        contributions.append(Contribution(node, update, tuple(sent[:1] + received[:1])))
    return tuple(contributions)
