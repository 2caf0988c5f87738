"""A TEST DOUBLE of Hyperledger Iroha 1's Torii gRPC endpoint. It is not Iroha.

No Iroha peer can run on the machines this project is tested on, so the Iroha backend is exercised
against this server instead. It speaks the real wire protocol (the `iroha` package's own generated
protobuf and gRPC modules: CommandService_v1 and QueryService_v1) and models the parts of Iroha's
behaviour the backend depends on:

- stateless validation: every signature is checked with IrohaCrypto (ed25519/SHA-512 ``ed0120`` keys
  and classic ed25519/SHA-3 keys), detail keys must match ``[A-Za-z0-9_]{1,64}``, values <= 4096;
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

import binascii
import hashlib
import json
import re
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
import nacl.exceptions
from google.protobuf import empty_pb2
from iroha import (
    IrohaCrypto,
    endpoint_pb2,
    endpoint_pb2_grpc,
    primitive_pb2,
    qry_responses_pb2,
    queries_pb2,
    transaction_pb2,
)

DETAIL_KEY = re.compile(r"^[A-Za-z0-9_]{1,64}$")
ACCOUNT_ID = re.compile(r"^[a-z_0-9]{1,32}@[a-z0-9_.-]{1,255}$")
MAX_DETAIL_VALUE = 4096
MAX_CLOCK_SKEW_MS = 5 * 60 * 1000
MAX_TX_AGE_MS = 24 * 3600 * 1000
ALL_ROLE_PERMISSIONS = frozenset(primitive_pb2.RolePermission.keys())
FINAL_STATUSES = {
    endpoint_pb2.COMMITTED,
    endpoint_pb2.STATELESS_VALIDATION_FAILED,
    endpoint_pb2.STATEFUL_VALIDATION_FAILED,
    endpoint_pb2.REJECTED,
}


class _Refused(Exception):
    def __init__(self, message: str, command_index: int = 0, error_code: int = 1) -> None:
        super().__init__(message)
        self.command_index = command_index
        self.error_code = error_code


@dataclass
class _Account:
    account_id: str
    signatories: set[str]
    roles: set[str]
    quorum: int = 1
    details: dict[str, dict[str, str]] = field(default_factory=dict)  # writer -> key -> value


@dataclass
class _World:
    domains: dict[str, str] = field(default_factory=dict)  # domain -> default role
    roles: dict[str, set[str]] = field(default_factory=dict)
    accounts: dict[str, _Account] = field(default_factory=dict)
    grants: set[tuple[str, str, str]] = field(default_factory=set)  # (grantor, grantee, permission)

    def copy(self) -> _World:
        return _World(
            dict(self.domains),
            {role: set(perms) for role, perms in self.roles.items()},
            {
                aid: _Account(
                    a.account_id, set(a.signatories), set(a.roles), a.quorum, {w: dict(d) for w, d in a.details.items()}
                )
                for aid, a in self.accounts.items()
            },
            set(self.grants),
        )

    def permissions(self, account_id: str) -> set[str]:
        account = self.accounts.get(account_id)
        if account is None:
            return set()
        return set().union(*(self.roles.get(role, set()) for role in account.roles))


def _normalise_key(public_key: str) -> str:
    return public_key.lower()


def _signature_valid(message: Any, signature: primitive_pb2.Signature) -> bool:
    """IrohaCrypto's own checks: ed0120 multihash keys are ed25519/SHA-512, bare 64-hex keys ed25519/SHA-3."""
    public_key = signature.public_key.lower()
    try:
        if public_key.startswith("ed0120") and len(public_key) == 70:
            return bool(IrohaCrypto.is_sha2_signature_valid(message, signature))
        if len(public_key) == 64:
            return bool(IrohaCrypto.is_signature_valid(message, signature))
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError, binascii.Error):
        return False
    return False


def _tx_hash(tx: transaction_pb2.Transaction) -> str:
    return hashlib.sha3_256(tx.payload.SerializeToString()).hexdigest()


class ToriiDouble:
    """An in-process gRPC server standing in for one Iroha peer's Torii (tests only)."""

    def __init__(self, admin_account: str, admin_public_key: str, block_time: float = 0.05) -> None:
        domain = admin_account.split("@", 1)[1]
        self._world = _World(
            domains={domain: "user"},
            roles={"admin": set(ALL_ROLE_PERMISSIONS), "user": set()},
            accounts={admin_account: _Account(admin_account, {_normalise_key(admin_public_key)}, {"admin"})},
        )
        self.block_time = block_time
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
            except _Refused as refused:
                self._status(tx_hash, endpoint_pb2.STATELESS_VALIDATION_FAILED, str(refused), 0, refused.error_code)
                return
            self._status(tx_hash, endpoint_pb2.STATELESS_VALIDATION_SUCCESS)
            self._status(tx_hash, endpoint_pb2.ENOUGH_SIGNATURES_COLLECTED)
            self._queue.append((tx_hash, tx))
            self._changed.notify_all()

    def _stateless_check(self, tx: transaction_pb2.Transaction) -> None:
        reduced = tx.payload.reduced_payload
        if not tx.signatures:
            raise _Refused("transaction has no signatures")
        for signature in tx.signatures:
            if not _signature_valid(tx, signature):
                raise _Refused(f"bad signature for public key {signature.public_key}")
        if not ACCOUNT_ID.match(reduced.creator_account_id):
            raise _Refused(f"bad creator account id {reduced.creator_account_id!r}")
        now_ms = int(time.time() * 1000)
        if not now_ms - MAX_TX_AGE_MS <= reduced.created_time <= now_ms + MAX_CLOCK_SKEW_MS:
            raise _Refused(f"created_time {reduced.created_time} is too old or in the future")
        if reduced.quorum < 1 or not reduced.commands:
            raise _Refused("quorum must be >= 1 and there must be commands")
        for index, command in enumerate(reduced.commands):
            if command.WhichOneof("command") == "set_account_detail":
                detail = command.set_account_detail
                if not DETAIL_KEY.match(detail.key):
                    raise _Refused(f"SetAccountDetail key {detail.key!r} is not [A-Za-z0-9_]{{1,64}}", index)
                if len(detail.value) > MAX_DETAIL_VALUE:
                    raise _Refused(f"SetAccountDetail value is over {MAX_DETAIL_VALUE} characters", index)

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
            _check_signatories(staged, reduced.creator_account_id, tx.signatures)
            for index, command in enumerate(reduced.commands):
                _execute(staged, reduced.creator_account_id, command, index)
        except _Refused as refused:
            name = str(refused)
            self._status(
                tx_hash, endpoint_pb2.STATEFUL_VALIDATION_FAILED, name, refused.command_index, refused.error_code
            )
            self._status(tx_hash, endpoint_pb2.REJECTED, name, refused.command_index, refused.error_code)
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
        if not _signature_valid(query, query.signature):
            return _error(response, qry_responses_pb2.ErrorResponse.STATELESS_INVALID, "bad query signature")
        with self._lock:
            world = self._world
            account = world.accounts.get(creator)
            if account is None or _normalise_key(query.signature.public_key) not in account.signatories:
                return _error(
                    response,
                    qry_responses_pb2.ErrorResponse.STATEFUL_INVALID,
                    f"the query's key is not a signatory of {creator}",
                    3,
                )
            kind = query.payload.WhichOneof("query")
            permissions = world.permissions(creator)
            if kind == "get_account_detail":
                return _account_detail(world, creator, permissions, query.payload.get_account_detail, response)
            if kind == "get_account":
                return _get_account(world, creator, permissions, query.payload.get_account.account_id, response)
            if kind == "get_roles":
                if "can_get_roles" not in permissions:
                    return _error(response, qry_responses_pb2.ErrorResponse.STATEFUL_INVALID, "no can_get_roles", 2)
                response.roles_response.roles.extend(sorted(world.roles))
                return response
        return _error(response, qry_responses_pb2.ErrorResponse.NOT_SUPPORTED, f"{kind} is not modelled by the double")


def _error(
    response: qry_responses_pb2.QueryResponse, reason: int, message: str, code: int = 0
) -> qry_responses_pb2.QueryResponse:
    response.error_response.reason = reason
    response.error_response.message = message
    response.error_response.error_code = code
    return response


def _domain(account_id: str) -> str:
    return account_id.split("@", 1)[1]


def _may_read(creator: str, target: str, permissions: set[str], all_p: str, domain_p: str, my_p: str) -> bool:
    return (
        all_p in permissions
        or (domain_p in permissions and _domain(creator) == _domain(target))
        or (my_p in permissions and creator == target)
    )


def _account_detail(
    world: _World,
    creator: str,
    permissions: set[str],
    request: queries_pb2.GetAccountDetail,
    response: qry_responses_pb2.QueryResponse,
) -> qry_responses_pb2.QueryResponse:
    target = request.account_id or creator
    if not _may_read(
        creator, target, permissions, "can_get_all_acc_detail", "can_get_domain_acc_detail", "can_get_my_acc_detail"
    ):
        return _error(
            response,
            qry_responses_pb2.ErrorResponse.STATEFUL_INVALID,
            f"{creator} may not read the details of {target}",
            2,
        )
    account = world.accounts.get(target)
    if account is None:
        return _error(response, qry_responses_pb2.ErrorResponse.NO_ACCOUNT, f"no account {target}")
    selected: dict[str, dict[str, str]] = {}
    for writer, details in account.details.items():
        if request.writer and writer != request.writer:
            continue
        chosen = {k: v for k, v in details.items() if not request.key or k == request.key}
        if chosen:
            selected[writer] = chosen
    response.account_detail_response.detail = json.dumps(selected)
    response.account_detail_response.total_number = sum(len(d) for d in selected.values())
    return response


def _get_account(
    world: _World, creator: str, permissions: set[str], target: str, response: qry_responses_pb2.QueryResponse
) -> qry_responses_pb2.QueryResponse:
    if not _may_read(
        creator, target, permissions, "can_get_all_accounts", "can_get_domain_accounts", "can_get_my_account"
    ):
        return _error(response, qry_responses_pb2.ErrorResponse.STATEFUL_INVALID, f"{creator} may not read {target}", 2)
    account = world.accounts.get(target)
    if account is None:
        return _error(response, qry_responses_pb2.ErrorResponse.NO_ACCOUNT, f"no account {target}")
    response.account_response.account.account_id = target
    response.account_response.account.domain_id = _domain(target)
    response.account_response.account.quorum = account.quorum
    response.account_response.account.json_data = json.dumps(account.details)
    response.account_response.account_roles.extend(sorted(account.roles))
    return response


def _check_signatories(world: _World, creator: str, signatures: Any) -> None:
    account = world.accounts.get(creator)
    if account is None:
        raise _Refused(f"creator account {creator} does not exist", 0, 3)
    keys = {_normalise_key(signature.public_key) for signature in signatures}
    if not keys <= account.signatories:
        raise _Refused(f"signatures by keys that are not signatories of {creator}", 0, 2)
    if len(keys) < account.quorum:
        raise _Refused(f"{len(keys)} signatures, the quorum of {creator} is {account.quorum}", 0, 2)


def _require(world: _World, creator: str, permission: str, index: int) -> None:
    if permission not in world.permissions(creator):
        raise _Refused(f"{creator} lacks the {permission} permission", index, 2)


def _execute(world: _World, creator: str, command: Any, index: int) -> None:
    kind = command.WhichOneof("command")
    if kind == "create_role":
        body = command.create_role
        _require(world, creator, "can_create_role", index)
        wanted = {primitive_pb2.RolePermission.Name(p) for p in body.permissions}
        if not wanted <= world.permissions(creator):
            raise _Refused(f"{creator} cannot create a role with permissions it does not have", index, 2)
        if body.role_name in world.roles:
            raise _Refused(f"role {body.role_name} already exists", index, 3)
        world.roles[body.role_name] = wanted
    elif kind == "create_domain":
        body = command.create_domain
        _require(world, creator, "can_create_domain", index)
        if body.domain_id in world.domains:
            raise _Refused(f"domain {body.domain_id} already exists", index, 3)
        if body.default_role not in world.roles:
            raise _Refused(f"no role {body.default_role}", index, 4)
        world.domains[body.domain_id] = body.default_role
    elif kind == "create_account":
        body = command.create_account
        _require(world, creator, "can_create_account", index)
        account_id = f"{body.account_name}@{body.domain_id}"
        if body.domain_id not in world.domains:
            raise _Refused(f"no domain {body.domain_id}", index, 3)
        if account_id in world.accounts:
            raise _Refused(f"account {account_id} already exists", index, 4)
        key = _normalise_key(body.public_key)
        if not re.fullmatch(r"(ed0120)?[0-9a-f]{64}", key):
            raise _Refused(f"public key {body.public_key!r} is not an ed25519 key", index, 5)
        world.accounts[account_id] = _Account(account_id, {key}, {world.domains[body.domain_id]})
    elif kind == "grant_permission":
        body = command.grant_permission
        permission = primitive_pb2.GrantablePermission.Name(body.permission)
        _require(world, creator, f"can_grant_{permission}", index)
        if body.account_id not in world.accounts:
            raise _Refused(f"no account {body.account_id}", index, 3)
        world.grants.add((creator, body.account_id, permission))
    elif kind == "set_account_detail":
        body = command.set_account_detail
        target = world.accounts.get(body.account_id)
        if target is None:
            raise _Refused(f"no account {body.account_id}", index, 3)
        allowed = (
            creator == body.account_id
            or "can_set_detail" in world.permissions(creator)
            or (body.account_id, creator, "can_set_my_account_detail") in world.grants
        )
        if not allowed:
            raise _Refused(f"{creator} may not set details of {body.account_id}", index, 2)
        target.details.setdefault(creator, {})[body.key] = body.value
    else:
        raise _Refused(f"{kind} is not modelled by the test double", index, 1)


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
