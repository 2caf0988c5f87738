"""One script of transactions and queries, run against any Torii (the double or a real irohad), and
what it observed: every transaction's status stream, and what queries read back.

tests/iroha/test_iroha_double_matches_peer.py runs it against both and compares the observations, so
the Torii double (tests/helpers/torii_double.py) cannot drift from the real peer unnoticed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cryptography.hazmat.primitives.asymmetric import ed25519
from iroha import Iroha, IrohaGrpc, qry_responses_pb2

from edgefed.contracts.events import TransferEvent
from edgefed.ledger.iroha import (
    IrohaClient,
    IrohaKey,
    detail_key,
    iroha_signing_key,
    nacl_key,
    parse_detail_document,
)
from edgefed.ledger.iroha_bootstrap import bootstrap
from edgefed.ledger.records import TransferRecord
from edgefed.pki import NodeCredentials

NODES = ("chief", "worker1", "worker2")
PASSING = {"NOT_RECEIVED", "STATELESS_VALIDATION_SUCCESS", "ENOUGH_SIGNATURES_COLLECTED"}
TIMEOUT = 60.0
# Values a detail must keep byte for byte: JSON quoting, backslashes, non-ASCII, a newline.
AWKWARD_VALUES = ('{"a": "b"}', 'back\\slash "quoted"', "grüße, 字, ✓", "two\nlines")


@dataclass
class Observation:
    bootstrap: list[tuple[str, str]] = field(default_factory=list)
    transactions: dict[str, list[str]] = field(default_factory=dict)  # label -> status stream (with codes)
    queries: dict[str, Any] = field(default_factory=dict)  # label -> what the answer said

    def normalised(self, domain: str) -> str:
        """The whole observation as text with the per-run domain replaced, for comparison."""
        return json.dumps([self.bootstrap, self.transactions, self.queries], indent=1, sort_keys=True).replace(
            domain, "DOMAIN"
        )


def key_of(pki_dir: Path, name: str) -> ed25519.Ed25519PrivateKey:
    return NodeCredentials(pki_dir, name).ledger_signing_key()


Side = Literal["send", "receive"]


def transfer(pki_dir: Path, direction: Side, sender: str, receiver: str, round_: int) -> TransferRecord:
    observer = sender if direction == "send" else receiver
    event = TransferEvent(
        round_, sender, receiver, observer, direction, 3, 1000 + round_, f"{round_:064x}", 0.5,
        "weights" if sender == "chief" else "update", 1_800_000_000.0 + round_,
    )
    return TransferRecord.from_event(event, "edgefed").signed(key_of(pki_dir, observer))


class Script:
    def __init__(self, torii: str, domain: str, pki_dir: Path) -> None:
        self.torii, self.domain, self.pki_dir = torii, domain, pki_dir
        self.grpc = IrohaGrpc(torii, timeout=TIMEOUT)
        self.seen = Observation()

    def account(self, node: str) -> str:
        return f"{node}@{self.domain}"

    def send(self, label: str, creator: str, key: IrohaKey, commands: list[Any]) -> None:
        """Submit one transaction and record its whole status stream."""
        tx = Iroha(creator).transaction(commands)
        IrohaClient(self.torii, creator, key, TIMEOUT).sign_transaction(tx)
        self.grpc.send_tx(tx, timeout=TIMEOUT)
        stream: list[str] = []
        for status, _, code in self.grpc.tx_status_stream(tx, timeout=TIMEOUT):
            if status in PASSING:
                continue  # a real peer may be past these before the stream starts: timing, not behaviour
            entry = f"{status}:{code}" if status.endswith("FAILED") or status == "REJECTED" else status
            if not stream or stream[-1] != entry:
                stream.append(entry)
        self.seen.transactions[label] = stream

    def detail(self, node: str, record: TransferRecord) -> Any:
        return Iroha.command("SetAccountDetail", account_id=self.account(node), key=detail_key(record),
                             value=record.to_json())

    def ask(self, label: str, creator: str, signer: IrohaKey, name: str, **fields: Any) -> None:
        client = IrohaClient(self.torii, creator, signer, TIMEOUT)
        query = Iroha(creator).query(name, counter=1, **fields)
        client.sign_query(query)
        response = self.grpc.send_query(query, timeout=TIMEOUT)
        kind = response.WhichOneof("response")
        if kind == "error_response":
            error = response.error_response
            self.seen.queries[label] = ["error", qry_responses_pb2.ErrorResponse.Reason.Name(error.reason),
                                        error.error_code]
        elif kind == "account_detail_response":
            self.seen.queries[label] = [response.account_detail_response.detail]
        elif kind == "account_response":
            account = response.account_response
            self.seen.queries[label] = [account.account.account_id, account.account.domain_id,
                                        account.account.quorum, account.account.json_data,
                                        sorted(account.account_roles)]
        else:
            self.seen.queries[label] = [kind]


def run_scenario(torii: str, admin_account: str, admin_key: IrohaKey, pki_dir: Path, domain: str) -> Observation:
    script = Script(torii, domain, pki_dir)
    keys = {node: iroha_signing_key(key_of(pki_dir, node)) for node in NODES}
    steps = bootstrap(torii=torii, domain=domain, admin_account=admin_account, admin_key=admin_key,
                      node_keys={n: key_of(pki_dir, n) for n in NODES}, chief="chief", commit_timeout=TIMEOUT)
    script.seen.bootstrap = [(s.description, s.outcome) for s in steps]
    acct = script.account

    weights1 = [transfer(pki_dir, "send", "chief", worker, 1) for worker in ("worker1", "worker2")]
    script.send("chief sends weights", acct("chief"), keys["chief"],
                [script.detail(r.receiver, r) for r in weights1])
    script.send("worker1 receives", acct("worker1"), keys["worker1"],
                [script.detail("worker1", transfer(pki_dir, "receive", "chief", "worker1", 1))])
    update = transfer(pki_dir, "send", "worker1", "chief", 1)
    script.send("worker1 sends an update", acct("worker1"), keys["worker1"], [script.detail("chief", update)])
    sneaky = transfer(pki_dir, "send", "worker2", "worker1", 1)
    script.send("worker2 writes on worker1 without a grant", acct("worker2"), keys["worker2"],
                [script.detail("chief", transfer(pki_dir, "send", "worker2", "chief", 1)),
                 script.detail("worker1", sneaky)])
    impostor = iroha_signing_key(ed25519.Ed25519PrivateKey.generate())
    script.send("a key that is not chief's signatory", acct("chief"), impostor,
                [script.detail("worker1", weights1[0])])
    script.send("chief's key as an ed0120 multihash", acct("chief"), nacl_key(key_of(pki_dir, "chief")),
                [script.detail("worker1", weights1[0])])
    script.send("awkward values", acct("worker2"), keys["worker2"],
                [Iroha.command("SetAccountDetail", account_id=acct("worker2"), key=f"awkward{i}", value=v)
                 for i, v in enumerate(AWKWARD_VALUES)])
    script.send("a detail key Iroha does not allow", acct("worker2"), keys["worker2"],
                [Iroha.command("SetAccountDetail", account_id=acct("worker2"), key="no-dashes", value="1")])
    script.send("a retry rewrites the same detail", acct("chief"), keys["chief"],
                [script.detail("worker1", weights1[0])])
    script.send("an account that exists already", admin_account, admin_key,
                [Iroha.command("CreateAccount", account_name="worker1", domain_id=domain,
                               public_key=keys["worker1"].public_key_hex())])

    admin = (admin_account, admin_key)
    for node in NODES:
        script.ask(f"details of {node}, read by the admin", *admin, "GetAccountDetail", account_id=acct(node))
    script.ask("details of worker1 read by worker2 (same domain)", acct("worker2"), keys["worker2"],
               "GetAccountDetail", account_id=acct("worker1"))
    script.ask("details of worker1 written by chief", *admin, "GetAccountDetail", account_id=acct("worker1"),
               writer=acct("chief"))
    script.ask("one detail of worker1 by key", *admin, "GetAccountDetail", account_id=acct("worker1"),
               key=detail_key(weights1[0]))
    script.ask("details of an account that does not exist", *admin, "GetAccountDetail",
               account_id=acct("nobody"))
    script.ask("details of an account that does not exist, by a node", acct("worker1"), keys["worker1"],
               "GetAccountDetail", account_id=acct("nobody"))
    script.ask("worker2's account", *admin, "GetAccount", account_id=acct("worker2"))
    script.ask("an account that does not exist", *admin, "GetAccount", account_id=acct("nobody"))
    script.ask("roles, asked by a node", acct("worker1"), keys["worker1"], "GetRoles")
    script.ask("a query signed by a key that is not the creator's", acct("worker1"), impostor,
               "GetAccountDetail", account_id=acct("worker1"))
    return script.seen


def check_what_any_peer_must_do(seen: Observation) -> None:
    """What any Iroha 1 peer must have done with this script (checked against the double in `make test`)."""
    tx = seen.transactions
    assert tx["chief sends weights"][-1] == "COMMITTED"
    assert tx["worker1 sends an update"][-1] == "COMMITTED"
    assert any(s.startswith("STATEFUL_VALIDATION_FAILED") for s in tx["worker2 writes on worker1 without a grant"])
    assert any(s.startswith("STATEFUL_VALIDATION_FAILED") for s in tx["a key that is not chief's signatory"])
    assert tx["chief's key as an ed0120 multihash"][-1].startswith("STATELESS_VALIDATION_FAILED")
    assert tx["a detail key Iroha does not allow"][-1].startswith("STATELESS_VALIDATION_FAILED")
    [document] = seen.queries["details of worker2, read by the admin"]
    awkward = parse_detail_document("worker2", document)
    assert [awkward[next(w for w in awkward if w.startswith("worker2@"))][f"awkward{i}"]
            for i in range(len(AWKWARD_VALUES))] == list(AWKWARD_VALUES)
