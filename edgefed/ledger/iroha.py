"""Hyperledger Iroha 1 backend, through the `iroha` PyPI package (gRPC to a peer's Torii).

Mapping (as BSMD does it, plus the receiver's side and a payload digest):

- every node has an account ``NAME@DOMAIN`` whose signatory is its ledger key's seed as Iroha's own
  ed25519/SHA-3 key (64 hex characters; edgefed.ledger.iroha_keys says why not the ``ed0120`` form);
- a record becomes ``SetAccountDetail`` on the *receiver's* account, written by the record's observer:
  the sender writes its send record there (allowed after the receiver granted it
  ``can_set_my_account_detail``); the receiver writes its receive record on its own account. The key
  is ``t`` + the record id (matches ``[A-Za-z0-9_]{1,64}``), the value the record as compact JSON,
  signature included, so the records can be checked without trusting Iroha;
- a delivery is confirmed through the transaction status stream, under ``ledger.commit_timeout``.

Preparing a peer (role, domain, accounts, grants) is edgefed.ledger.iroha_bootstrap. Only imported
when ``ledger.backend = "iroha"``: grpc, protobuf and nacl are optional dependencies.
"""

from __future__ import annotations

import json
import logging
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import nacl.signing
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from iroha import Iroha, IrohaCrypto, IrohaGrpc, qry_responses_pb2

from edgefed.config import NodeConfig
from edgefed.ledger import iroha_keys
from edgefed.ledger.backends import Delivery
from edgefed.ledger.errors import BackendUnavailable, LedgerError
from edgefed.ledger.iroha_keys import Sha3Ed25519Key
from edgefed.ledger.records import MODEL_KIND, TransferRecord
from edgefed.ledger.verify import Problem, VerifyReport, check_transfers
from edgefed.pki import NodeCredentials, public_key_hex

log = logging.getLogger(__name__)

MULTIHASH_ED25519 = "ed0120"  # Iroha's prefix for an ed25519 (SHA-512) public key
ACCOUNT_NAME = re.compile(r"^[a-z_0-9]{1,32}$")
DETAIL_KEY = re.compile(r"^[A-Za-z0-9_]{1,64}$")
MAX_DETAIL_VALUE = 4096
NODE_ROLE = "edgefed_node"
MAX_COMMANDS_PER_TX = 50
FINAL_OK = {"COMMITTED"}
FINAL_FAILED = {"STATELESS_VALIDATION_FAILED", "STATEFUL_VALIDATION_FAILED", "REJECTED", "MST_EXPIRED"}
# GetAccountDetail of an unknown account: irohad 1.6 answers NO_ACCOUNT_DETAIL (RocksDB world state).
NO_SUCH_ACCOUNT = {"NO_ACCOUNT", "NO_ACCOUNT_DETAIL"}
_TRANSIENT_GRPC = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}

# Sha3Ed25519Key: Iroha's default scheme (node accounts, classic .priv admin keys); a nacl key signs as
# an ed0120 multihash key, which only peers built with Hyperledger Ursa verify.
IrohaKey = nacl.signing.SigningKey | Sha3Ed25519Key


def account_name(node: str) -> str:
    """Iroha account names allow [a-z_0-9]{1,32}: lower-case the node name and map '.' and '-' to '_'."""
    name = node.lower().replace("-", "_").replace(".", "_")
    if not ACCOUNT_NAME.match(name):
        raise LedgerError(f"node name {node!r} cannot be an Iroha account name ({name!r} is not [a-z_0-9]{{1,32}})")
    return name


def account_id(node: str, domain: str) -> str:
    return f"{account_name(node)}@{domain}"


def detail_key(record: TransferRecord) -> str:
    key = f"t{record.id}"
    assert DETAIL_KEY.match(key)
    return key


def detail_value(record: TransferRecord) -> str:
    value = record.to_json()
    if len(value) > MAX_DETAIL_VALUE:
        raise LedgerError(f"record {record.id} is {len(value)} characters, over Iroha's {MAX_DETAIL_VALUE}")
    return value


def _seed(key: ed25519.Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())


def iroha_signing_key(key: ed25519.Ed25519PrivateKey) -> Sha3Ed25519Key:
    """The key a node's Iroha account signs with: Iroha's ed25519/SHA-3 key from the ledger key's seed."""
    return Sha3Ed25519Key(_seed(key))


def iroha_public_key(key: ed25519.Ed25519PrivateKey) -> str:
    """The signatory of a node's Iroha account (64 hex characters, Iroha's default key form)."""
    return iroha_signing_key(key).public_key_hex()


def multihash_public_key(key: ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey) -> str:
    """The same ed25519 key as Iroha's ed0120 multihash (verified only by peers built with Ursa)."""
    return MULTIHASH_ED25519 + public_key_hex(key)


def nacl_key(key: ed25519.Ed25519PrivateKey) -> nacl.signing.SigningKey:
    """The same ed25519 key in the form IrohaCrypto signs with (it produces ed0120 signatures)."""
    return nacl.signing.SigningKey(_seed(key))


def load_admin_key(path: str | Path) -> IrohaKey:
    """An Iroha admin key: 64 hex characters (Iroha's classic ed25519/SHA-3 .priv file) or an ed25519 PEM
    (which signs as an ed0120 multihash key: for peers built with Ursa)."""
    file = Path(path)
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise LedgerError(f"{file}: cannot read the Iroha admin key: {exc.strerror}") from None
    if data.lstrip().startswith(b"-----BEGIN"):
        key = serialization.load_pem_private_key(data, password=None)
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise LedgerError(f"{file}: not an ed25519 private key")
        return nacl_key(key)
    text = data.strip()
    if not re.fullmatch(rb"[0-9a-fA-F]{64}", text):
        raise LedgerError(f"{file}: expected 64 hex characters (an Iroha .priv file) or an ed25519 PEM key")
    return Sha3Ed25519Key(bytes.fromhex(text.decode()))


class IrohaQueryError(LedgerError):
    """Iroha answered a query with an ErrorResponse."""

    def __init__(self, query: str, reason: str, message: str) -> None:
        super().__init__(f"Iroha refused {query}: {reason}{': ' + message if message else ''}")
        self.reason = reason


@dataclass(frozen=True)
class TxOutcome:
    committed: bool
    status: str
    reason: str
    error_code: int = 0  # the failed command's error code (Iroha's per-command codes, e.g. 3: exists)


class IrohaClient:
    """Sends signed transactions and queries as one account, and waits for commits."""

    def __init__(self, torii: str, account: str, key: IrohaKey, commit_timeout: float) -> None:
        self.torii = torii
        self.account = account
        self._key = key
        self.commit_timeout = commit_timeout
        self._grpc = IrohaGrpc(torii, timeout=commit_timeout)
        self._iroha = Iroha(account)
        self._query_counter = 0

    def sign_transaction(self, tx: Any) -> None:
        if isinstance(self._key, Sha3Ed25519Key):
            iroha_keys.sign_transaction(tx, self._key)
        else:
            IrohaCrypto.sign_transaction(tx, self._key)

    def sign_query(self, query: Any) -> None:
        if isinstance(self._key, Sha3Ed25519Key):
            iroha_keys.sign_query(query, self._key)
        else:
            IrohaCrypto.sign_query(query, self._key)

    def submit(self, commands: Sequence[Any]) -> TxOutcome:
        """Send one transaction and follow its status stream to a final status (or raise on timeout)."""
        tx = self._iroha.transaction(list(commands))
        self.sign_transaction(tx)
        try:
            self._grpc.send_tx(tx, timeout=self.commit_timeout)
            last, reason = "NOT_RECEIVED", ""
            for status, _code, error_code in self._grpc.tx_status_stream(tx, timeout=self.commit_timeout):
                last = status
                if status in FINAL_OK:
                    return TxOutcome(True, status, "")
                if status in FINAL_FAILED:
                    reason = f"{status} (error code {error_code})"
                    return TxOutcome(False, status, reason, error_code)
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            detail = exc.details() if hasattr(exc, "details") else str(exc)
            if code in _TRANSIENT_GRPC:
                raise BackendUnavailable(f"Torii {self.torii}: {code.name if code else ''} {detail}") from exc
            raise LedgerError(f"Torii {self.torii} answered {code.name if code else '?'}: {detail}") from exc
        raise BackendUnavailable(f"Torii {self.torii}: status stream ended at {last} before a final status")

    def query(self, name: str, **fields: Any) -> Any:
        self._query_counter += 1
        query = self._iroha.query(name, counter=self._query_counter, **fields)
        self.sign_query(query)
        try:
            response = self._grpc.send_query(query, timeout=self.commit_timeout)
        except grpc.RpcError as exc:
            raise BackendUnavailable(f"Torii {self.torii}: query {name} failed: {exc}") from exc
        if response.HasField("error_response"):
            error = response.error_response
            raise IrohaQueryError(name, qry_responses_pb2.ErrorResponse.Reason.Name(error.reason), error.message)
        return response

    def account_details(self, account: str, writer: str = "") -> dict[str, dict[str, str]]:
        fields: dict[str, Any] = {"account_id": account}
        if writer:
            fields["writer"] = writer
        response = self.query("GetAccountDetail", **fields)
        return parse_detail_document(account, response.account_detail_response.detail or "{}")


# irohad 1.6 (RocksDB) writes the detail document without escaping the values: {"WRITER": {"KEY":
# "VALUE", ...}, ...} with each VALUE verbatim, quotes included. A value ends at the quote followed by
# the next key, the next writer or the end. A value that itself contains such a sequence is cut
# there: the pieces are not valid records, so verify reports them (it fails closed, never proves).
_DETAIL_ENTRY = re.compile(
    r'(?:\{"|\}, ")(?P<writer>[^"]+)": \{"|(?:, ")?(?P<key>[A-Za-z0-9_]{1,64})": "(?P<value>.*?)"'
    r'(?=, "[A-Za-z0-9_]{1,64}": "|\}, "[^"]+": \{"|\}\}$)',
    re.DOTALL,
)


def parse_detail_document(account: str, text: str) -> dict[str, dict[str, str]]:
    """GetAccountDetail's document as {writer: {key: value}}: proper JSON, or irohad's unescaped form."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError:
        document = None
    if isinstance(document, dict) and all(isinstance(v, dict) for v in document.values()):
        return document
    found: dict[str, dict[str, str]] = {}
    writer, position = "", 0
    for match in _DETAIL_ENTRY.finditer(text):
        if match.start() != position:
            break
        position = match.end()
        if match.group("writer"):
            writer = match.group("writer")
            found.setdefault(writer, {})
        elif writer:
            found[writer][match.group("key")] = match.group("value")
    if text[position:] != "}}" and not (text == "{}" and position == 0):
        raise LedgerError(f"GetAccountDetail for {account}: cannot read the detail document at {position}")
    return found


class IrohaBackend:
    """The ledger service's Iroha backend: the node's records as SetAccountDetail on receivers' accounts."""

    name = "iroha"

    def __init__(
        self,
        torii: str,
        domain: str,
        node: str,
        signing_key: ed25519.Ed25519PrivateKey,
        commit_timeout: float,
    ) -> None:
        self.domain = domain
        self.node = node
        self.account = account_id(node, domain)
        self.client = IrohaClient(torii, self.account, iroha_signing_key(signing_key), commit_timeout)

    @classmethod
    def for_config(cls, config: NodeConfig) -> IrohaBackend:
        creds = NodeCredentials(Path(config.node.pki_dir), config.node.name)
        return cls(
            config.ledger.torii,
            config.ledger.domain,
            config.node.name,
            creds.ledger_signing_key(),
            config.ledger.commit_timeout,
        )

    def _command(self, record: TransferRecord) -> Any:
        return Iroha.command(
            "SetAccountDetail",
            account_id=account_id(record.receiver, self.domain),
            key=detail_key(record),
            value=detail_value(record),
        )

    def deliver(self, records: Sequence[TransferRecord]) -> Delivery:
        delivery = Delivery()
        by_target: dict[str, list[TransferRecord]] = defaultdict(list)
        for record in records:
            if record.observer != self.node:
                delivery.refused.append(
                    (record.id, f"{self.node} may only write its own records, not {record.observer}'s")
                )
                continue
            try:
                account_id(record.receiver, self.domain)
                detail_value(record)
            except LedgerError as exc:
                delivery.refused.append((record.id, str(exc)))
                continue
            by_target[record.receiver].append(record)
        for batch in _chunks([r for group in by_target.values() for r in group], MAX_COMMANDS_PER_TX):
            self._deliver_batch(batch, delivery)
        return delivery

    def _deliver_batch(self, batch: list[TransferRecord], delivery: Delivery) -> None:
        outcome = self.client.submit([self._command(record) for record in batch])
        if outcome.committed:
            delivery.acknowledged.extend(record.id for record in batch)
            return
        if len(batch) == 1:
            delivery.refused.append(
                (batch[0].id, f"Iroha rejected SetAccountDetail by {self.account}: {outcome.reason}")
            )
            return
        # An atomic transaction failed: find out which records Iroha refuses by sending them one by one.
        log.warning("iroha: a batch of %d was rejected (%s); retrying record by record", len(batch), outcome.reason)
        for record in batch:
            self._deliver_batch([record], delivery)

    def fetch_details(self, accounts: Iterable[str]) -> list[tuple[str, str, str]]:
        """(where, writer, value) of every detail stored on these accounts; unknown accounts are skipped."""
        found: list[tuple[str, str, str]] = []
        for account in accounts:
            try:
                stored = self.client.account_details(account)
            except IrohaQueryError as exc:
                if exc.reason not in NO_SUCH_ACCOUNT:
                    raise
                continue  # a node of the PKI that was never bootstrapped on Iroha has no records
            for writer, details in stored.items():
                found.extend((f"{account} detail {key} by {writer}", writer, value) for key, value in details.items())
        return found

    def parse_detail(self, where: str, writer: str, value: str) -> TransferRecord:
        try:
            record = TransferRecord.from_dict(json.loads(value))
        except (LedgerError, json.JSONDecodeError) as exc:
            raise LedgerError(f"{where}: not a valid transfer record: {exc}") from None
        if account_id(record.observer, self.domain) != writer:
            raise LedgerError(f"{where}: written by {writer}, but the record is {record.observer}'s")
        return record

    def fetch_records(self, accounts: Iterable[str]) -> list[tuple[str, TransferRecord]]:
        """Every record stored in the details of these accounts, labelled with where it was found."""
        return [
            (where, self.parse_detail(where, writer, value)) for where, writer, value in self.fetch_details(accounts)
        ]

    def close(self) -> None:
        pass


def verify_iroha(backend: IrohaBackend, public_keys: dict[str, ed25519.Ed25519PublicKey]) -> VerifyReport:
    """Read every record from the accounts of these nodes, check each signature against the PKI's key
    and pair the sides of every transfer (Iroha itself vouches for order and integrity)."""
    report = VerifyReport(signers=sorted(public_keys))
    checked: list[tuple[str, TransferRecord]] = []
    found = backend.fetch_details(account_id(node, backend.domain) for node in sorted(public_keys))
    for where, writer, value in found:
        report.entries += 1
        try:
            record = backend.parse_detail(where, writer, value)
            key = public_keys.get(record.observer)
            if key is None:
                raise LedgerError(f"record {record.id} is signed by {record.observer!r}, who has no ledger.pub")
            record.verify(key)
        except LedgerError as exc:
            report.problems.append(Problem(where, str(exc).removeprefix(f"{where}: ")))
            continue
        checked.append((where, record))
    report.models = sum(1 for _, record in checked if record.kind == MODEL_KIND)
    report.records = len(checked) - report.models
    report.proven_transfers, problems = check_transfers(checked)
    report.checked, report.pairing = checked, problems
    report.problems.extend(problems)
    return report


def _chunks(items: list[TransferRecord], size: int) -> Iterable[list[TransferRecord]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
