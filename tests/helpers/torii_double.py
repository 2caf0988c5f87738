"""A TEST DOUBLE of Hyperledger Iroha 1's Torii gRPC endpoint. It is not Iroha.

No Iroha peer can run on the machines this project is tested on, so the Iroha backend is exercised
against this server instead. It speaks the real wire protocol (the `iroha` package's own generated
protobuf and gRPC modules: CommandService_v1 and QueryService_v1) and models the parts of Iroha's
behaviour the backend depends on:

- stateless validation: every signature is checked with IrohaCrypto (classic ed25519/SHA-3 keys, and
  ed25519/SHA-512 ``ed0120`` keys unless ``multihash_keys=False``: a stock irohad 1.6, built without
  Hyperledger Ursa, refuses those), detail keys must match ``[A-Za-z0-9_]{1,64}``, values <= 4096;
- stateful validation: the signing keys must be signatories of the creator account (quorum 1), and
  each command is checked against role permissions and grantable permissions (SetAccountDetail on
  another account needs ``can_set_detail`` or that account's ``can_set_my_account_detail`` grant;
  GrantPermission needs ``can_grant_<permission>``; CreateRole/CreateDomain/CreateAccount need their
  ``can_create_*`` permission). A transaction is atomic: one failing command rejects all;
- statuses are streamed (StatusStream) as a transaction moves through validation to a commit that
  happens after ``block_time`` seconds, like a block;
- queries GetAccountDetail, GetAccount, GetRoles, with query signatures and permissions checked.

What it does not model (see docs/ledger.md): consensus, multiple peers, multi-signature quorums,
pending (MST) transactions, blocks streaming, assets, and the exact error codes of every command.
"""

from __future__ import annotations

import hashlib
import threading
import time
from concurrent import futures
from typing import Any

import grpc
from google.protobuf import empty_pb2
from iroha import endpoint_pb2, endpoint_pb2_grpc, qry_responses_pb2, queries_pb2, transaction_pb2

from tests.helpers.torii_world import (
    ACCOUNT_ID,
    ALL_ROLE_PERMISSIONS,
    DETAIL_KEY,
    MAX_CLOCK_SKEW_MS,
    MAX_DETAIL_VALUE,
    MAX_TX_AGE_MS,
    Account,
    Refused,
    World,
    account_detail,
    check_signatories,
    execute,
    get_account,
    normalise_key,
    query_error,
    signature_valid,
)

# Where irohad 1.6 ends a status stream: a stateful failure is followed by REJECTED (error code 0).
FINAL_STATUSES = {
    endpoint_pb2.COMMITTED,
    endpoint_pb2.STATELESS_VALIDATION_FAILED,
    endpoint_pb2.REJECTED,
}


def _tx_hash(tx: transaction_pb2.Transaction) -> str:
    return hashlib.sha3_256(tx.payload.SerializeToString()).hexdigest()


class ToriiDouble:
    """An in-process gRPC server standing in for one Iroha peer's Torii (tests only)."""

    def __init__(
        self, admin_account: str, admin_public_key: str, block_time: float = 0.05, multihash_keys: bool = True
    ) -> None:
        domain = admin_account.split("@", 1)[1]
        self._world = World(
            domains={domain: "user"},
            roles={"admin": set(ALL_ROLE_PERMISSIONS), "user": set()},
            accounts={admin_account: Account(admin_account, {normalise_key(admin_public_key)}, {"admin"})},
        )
        self.block_time = block_time
        self.multihash_keys = multihash_keys
        self.height = 1
        self._lock = threading.Lock()
        self._statuses: dict[str, list[endpoint_pb2.ToriiResponse]] = {}
        self._changed = threading.Condition(self._lock)
        self._queue: list[tuple[str, transaction_pb2.Transaction]] = []
        self._stopping = False
        self._server: grpc.Server | None = None
        self._committer = threading.Thread(target=self._commit_loop, name="torii-double-blocks", daemon=True)

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on host:port (0: any free port); returns the Torii address "host:port"."""
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        endpoint_pb2_grpc.add_CommandService_v1Servicer_to_server(_CommandService(self), server)
        endpoint_pb2_grpc.add_QueryService_v1Servicer_to_server(_QueryService(self), server)
        bound = server.add_insecure_port(f"{host}:{port}")
        server.start()
        self._server = server
        self._committer.start()
        return f"{host}:{bound}"

    def stop(self) -> None:
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
        if self._server is not None:
            self._server.stop(grace=0.5).wait()
        if self._committer.is_alive():
            self._committer.join(timeout=5)

    # -- inspection for tests -------------------------------------------------------------------
    def details(self, account_id: str) -> dict[str, dict[str, str]]:
        with self._lock:
            account = self._world.accounts.get(account_id)
            return {w: dict(d) for w, d in account.details.items()} if account else {}

    def forget_detail(self, account_id: str, writer: str, key: str) -> None:
        """Drop one stored detail (Iroha has no command for it): a record that never reached the ledger."""
        with self._lock:
            del self._world.accounts[account_id].details[writer][key]

    def account_exists(self, account_id: str) -> bool:
        with self._lock:
            return account_id in self._world.accounts

    # -- transactions ---------------------------------------------------------------------------
    def _status(self, tx_hash: str, status: int, message: str = "", index: int = 0, code: int = 0) -> None:
        response = endpoint_pb2.ToriiResponse(
            tx_status=status, tx_hash=tx_hash, err_or_cmd_name=message, failed_cmd_index=index, error_code=code
        )
        self._statuses.setdefault(tx_hash, []).append(response)
        self._changed.notify_all()

    def submit(self, tx: transaction_pb2.Transaction) -> None:
        tx_hash = _tx_hash(tx)
        with self._changed:
            if tx_hash in self._statuses:
                return  # a replayed transaction is ignored, as Iroha does
            try:
                self._stateless_check(tx)
            except Refused as refused:
                self._status(tx_hash, endpoint_pb2.STATELESS_VALIDATION_FAILED, str(refused), 0, 0)  # irohad: code 0
                return
            self._status(tx_hash, endpoint_pb2.STATELESS_VALIDATION_SUCCESS)
            self._status(tx_hash, endpoint_pb2.ENOUGH_SIGNATURES_COLLECTED)
            self._queue.append((tx_hash, tx))
            self._changed.notify_all()

    def _stateless_check(self, tx: transaction_pb2.Transaction) -> None:
        reduced = tx.payload.reduced_payload
        if not tx.signatures:
            raise Refused("transaction has no signatures")
        for signature in tx.signatures:
            if not signature_valid(tx, signature, self.multihash_keys):
                raise Refused(f"bad signature for public key {signature.public_key}")
        if not ACCOUNT_ID.match(reduced.creator_account_id):
            raise Refused(f"bad creator account id {reduced.creator_account_id!r}")
        now_ms = int(time.time() * 1000)
        if not now_ms - MAX_TX_AGE_MS <= reduced.created_time <= now_ms + MAX_CLOCK_SKEW_MS:
            raise Refused(f"created_time {reduced.created_time} is too old or in the future")
        if reduced.quorum < 1 or not reduced.commands:
            raise Refused("quorum must be >= 1 and there must be commands")
        for index, command in enumerate(reduced.commands):
            if command.WhichOneof("command") == "set_account_detail":
                detail = command.set_account_detail
                if not DETAIL_KEY.match(detail.key):
                    raise Refused(f"SetAccountDetail key {detail.key!r} is not [A-Za-z0-9_]{{1,64}}", index)
                if len(detail.value) > MAX_DETAIL_VALUE:
                    raise Refused(f"SetAccountDetail value is over {MAX_DETAIL_VALUE} characters", index)

    def _commit_loop(self) -> None:
        while True:
            with self._changed:
                while not self._queue and not self._stopping:
                    self._changed.wait()
                if self._stopping:
                    return
                batch, self._queue = self._queue, []
            time.sleep(self.block_time)  # the "block" forms while more transactions may arrive
            with self._changed:
                for tx_hash, tx in batch:
                    self._apply(tx_hash, tx)
                self.height += 1

    def _apply(self, tx_hash: str, tx: transaction_pb2.Transaction) -> None:
        staged = self._world.copy()
        reduced = tx.payload.reduced_payload
        try:
            check_signatories(staged, reduced.creator_account_id, tx.signatures)
            for index, command in enumerate(reduced.commands):
                execute(staged, reduced.creator_account_id, command, index)
        except Refused as refused:
            name = str(refused)
            self._status(
                tx_hash, endpoint_pb2.STATEFUL_VALIDATION_FAILED, name, refused.command_index, refused.error_code
            )
            self._status(tx_hash, endpoint_pb2.REJECTED, name, refused.command_index, 0)
            return
        self._world = staged
        self._status(tx_hash, endpoint_pb2.STATEFUL_VALIDATION_SUCCESS)
        self._status(tx_hash, endpoint_pb2.COMMITTED)

    def statuses(self, tx_hash: str, deadline: float) -> Any:
        """Yield the statuses of tx_hash as they come, until a final one or the deadline."""
        sent = 0
        while True:
            with self._changed:
                while len(self._statuses.get(tx_hash, [])) <= sent and not self._stopping:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._changed.wait(remaining)
                fresh = self._statuses.get(tx_hash, [])[sent:]
            if not fresh:
                if sent == 0:
                    yield endpoint_pb2.ToriiResponse(tx_status=endpoint_pb2.NOT_RECEIVED, tx_hash=tx_hash)
                return
            for response in fresh:
                sent += 1
                yield response
                if response.tx_status in FINAL_STATUSES:
                    return

    def last_status(self, tx_hash: str) -> endpoint_pb2.ToriiResponse:
        with self._lock:
            known = self._statuses.get(tx_hash)
            if not known:
                return endpoint_pb2.ToriiResponse(tx_status=endpoint_pb2.NOT_RECEIVED, tx_hash=tx_hash)
            return known[-1]

    # -- queries --------------------------------------------------------------------------------
    def answer(self, query: queries_pb2.Query) -> qry_responses_pb2.QueryResponse:
        query_hash = hashlib.sha3_256(query.payload.SerializeToString()).hexdigest()
        response = qry_responses_pb2.QueryResponse(query_hash=query_hash)
        creator = query.payload.meta.creator_account_id
        if not signature_valid(query, query.signature, self.multihash_keys):
            return query_error(response, qry_responses_pb2.ErrorResponse.STATELESS_INVALID, "bad query signature")
        with self._lock:
            world = self._world
            account = world.accounts.get(creator)
            if account is None or normalise_key(query.signature.public_key) not in account.signatories:
                return query_error(
                    response,
                    qry_responses_pb2.ErrorResponse.STATEFUL_INVALID,
                    f"the query's key is not a signatory of {creator}",
                    3,
                )
            kind = query.payload.WhichOneof("query")
            permissions = world.permissions(creator)
            if kind == "get_account_detail":
                return account_detail(world, creator, permissions, query.payload.get_account_detail, response)
            if kind == "get_account":
                return get_account(world, creator, permissions, query.payload.get_account.account_id, response)
            if kind == "get_roles":
                if "can_get_roles" not in permissions:
                    return query_error(
                        response, qry_responses_pb2.ErrorResponse.STATEFUL_INVALID, "no can_get_roles", 2
                    )
                response.roles_response.roles.extend(sorted(world.roles))
                return response
        return query_error(
            response, qry_responses_pb2.ErrorResponse.NOT_SUPPORTED, f"{kind} is not modelled by the double"
        )


class _CommandService(endpoint_pb2_grpc.CommandService_v1Servicer):
    def __init__(self, torii: ToriiDouble) -> None:
        self._torii = torii

    def Torii(self, request: transaction_pb2.Transaction, context: grpc.ServicerContext) -> empty_pb2.Empty:
        self._torii.submit(request)
        return empty_pb2.Empty()

    def ListTorii(self, request: endpoint_pb2.TxList, context: grpc.ServicerContext) -> empty_pb2.Empty:
        for tx in request.transactions:
            self._torii.submit(tx)
        return empty_pb2.Empty()

    def Status(self, request: endpoint_pb2.TxStatusRequest, context: grpc.ServicerContext) -> Any:
        return self._torii.last_status(request.tx_hash)

    def StatusStream(self, request: endpoint_pb2.TxStatusRequest, context: grpc.ServicerContext) -> Any:
        remaining = context.time_remaining()
        deadline = time.monotonic() + (remaining if remaining is not None else 60.0)
        yield from self._torii.statuses(request.tx_hash, deadline)


class _QueryService(endpoint_pb2_grpc.QueryService_v1Servicer):
    def __init__(self, torii: ToriiDouble) -> None:
        self._torii = torii

    def Find(self, request: queries_pb2.Query, context: grpc.ServicerContext) -> Any:
        return self._torii.answer(request)
