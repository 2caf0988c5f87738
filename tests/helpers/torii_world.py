"""The state of the Torii test double (tests/helpers/torii_double.py): accounts, roles, grants and
details, the commands that change them and the queries that read them, with Iroha's permission rules.

A TEST DOUBLE, not Iroha: see torii_double.py for what it models and what it does not.
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass, field
from typing import Any

import nacl.exceptions
from iroha import IrohaCrypto, primitive_pb2, qry_responses_pb2, queries_pb2

DETAIL_KEY = re.compile(r"^[A-Za-z0-9_]{1,64}$")
ACCOUNT_ID = re.compile(r"^[a-z_0-9]{1,32}@[a-z0-9_.-]{1,255}$")
MAX_DETAIL_VALUE = 4096
MAX_CLOCK_SKEW_MS = 5 * 60 * 1000
MAX_TX_AGE_MS = 24 * 3600 * 1000
ALL_ROLE_PERMISSIONS = frozenset(primitive_pb2.RolePermission.keys())


class Refused(Exception):
    """A transaction fails validation; the message, command index and error code go in its status."""

    def __init__(self, message: str, command_index: int = 0, error_code: int = 1) -> None:
        super().__init__(message)
        self.command_index = command_index
        self.error_code = error_code


@dataclass
class Account:
    account_id: str
    signatories: set[str]
    roles: set[str]
    quorum: int = 1
    details: dict[str, dict[str, str]] = field(default_factory=dict)  # writer -> key -> value


@dataclass
class World:
    domains: dict[str, str] = field(default_factory=dict)  # domain -> default role
    roles: dict[str, set[str]] = field(default_factory=dict)
    accounts: dict[str, Account] = field(default_factory=dict)
    grants: set[tuple[str, str, str]] = field(default_factory=set)  # (grantor, grantee, permission)

    def copy(self) -> World:
        return World(
            dict(self.domains),
            {role: set(perms) for role, perms in self.roles.items()},
            {
                aid: Account(
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


def normalise_key(public_key: str) -> str:
    return public_key.lower()


def signature_valid(message: Any, signature: primitive_pb2.Signature, multihash_keys: bool = True) -> bool:
    """IrohaCrypto's own checks: ed0120 multihash keys are ed25519/SHA-512, bare 64-hex keys ed25519/SHA-3.
    A stock irohad (built without Hyperledger Ursa) has no verifier for ed0120: multihash_keys=False."""
    public_key = signature.public_key.lower()
    try:
        if multihash_keys and public_key.startswith("ed0120") and len(public_key) == 70:
            return bool(IrohaCrypto.is_sha2_signature_valid(message, signature))
        if len(public_key) == 64:
            return bool(IrohaCrypto.is_signature_valid(message, signature))
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError, binascii.Error):
        return False
    return False


def detail_document(details: dict[str, dict[str, str]]) -> str:
    """The detail document as irohad 1.6 (RocksDB) writes it: writers and keys in order, values verbatim
    (NOT escaped: a value holding quotes makes it invalid JSON), '}, ' between writers, ', ' between keys."""
    writers = [
        f'"{writer}": {{' + ", ".join(f'"{key}": "{value}"' for key, value in sorted(details[writer].items())) + "}"
        for writer in sorted(details)
    ]
    return "{" + ", ".join(writers) + "}" if writers else "{}"


def query_error(
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


def account_detail(
    world: World,
    creator: str,
    permissions: set[str],
    request: queries_pb2.GetAccountDetail,
    response: qry_responses_pb2.QueryResponse,
) -> qry_responses_pb2.QueryResponse:
    target = request.account_id or creator
    account = world.accounts.get(target)
    if account is None:  # checked before permissions; irohad 1.6 (RocksDB) answers NO_ACCOUNT_DETAIL, code 3
        return query_error(response, qry_responses_pb2.ErrorResponse.NO_ACCOUNT_DETAIL, f"no account {target}", 3)
    if not _may_read(
        creator, target, permissions, "can_get_all_acc_detail", "can_get_domain_acc_detail", "can_get_my_acc_detail"
    ):
        return query_error(
            response,
            qry_responses_pb2.ErrorResponse.STATEFUL_INVALID,
            f"{creator} may not read the details of {target}",
            2,
        )
    selected: dict[str, dict[str, str]] = {}
    for writer, details in account.details.items():
        if request.writer and writer != request.writer:
            continue
        chosen = {k: v for k, v in details.items() if not request.key or k == request.key}
        if chosen:
            selected[writer] = chosen
    response.account_detail_response.detail = detail_document(selected)
    response.account_detail_response.total_number = sum(len(d) for d in selected.values())
    return response


def get_account(
    world: World, creator: str, permissions: set[str], target: str, response: qry_responses_pb2.QueryResponse
) -> qry_responses_pb2.QueryResponse:
    if not _may_read(
        creator, target, permissions, "can_get_all_accounts", "can_get_domain_accounts", "can_get_my_account"
    ):
        return query_error(
            response, qry_responses_pb2.ErrorResponse.STATEFUL_INVALID, f"{creator} may not read {target}", 2
        )
    account = world.accounts.get(target)
    if account is None:
        return query_error(response, qry_responses_pb2.ErrorResponse.NO_ACCOUNT, f"no account {target}", 3)
    response.account_response.account.account_id = target
    response.account_response.account.domain_id = _domain(target)
    response.account_response.account.quorum = account.quorum
    response.account_response.account.json_data = detail_document(account.details)
    response.account_response.account_roles.extend(sorted(account.roles))
    return response


def check_signatories(world: World, creator: str, signatures: Any) -> None:
    account = world.accounts.get(creator)
    if account is None:
        raise Refused(f"creator account {creator} does not exist", 0, 3)
    keys = {normalise_key(signature.public_key) for signature in signatures}
    if not keys <= account.signatories:
        raise Refused(f"signatures by keys that are not signatories of {creator}", 0, 1)  # irohad 1.6: code 1
    if len(keys) < account.quorum:
        raise Refused(f"{len(keys)} signatures, the quorum of {creator} is {account.quorum}", 0, 2)


def _require(world: World, creator: str, permission: str, index: int) -> None:
    if permission not in world.permissions(creator):
        raise Refused(f"{creator} lacks the {permission} permission", index, 2)


def execute(world: World, creator: str, command: Any, index: int) -> None:
    kind = command.WhichOneof("command")
    if kind == "create_role":
        body = command.create_role
        _require(world, creator, "can_create_role", index)
        wanted = {primitive_pb2.RolePermission.Name(p) for p in body.permissions}
        if not wanted <= world.permissions(creator):
            raise Refused(f"{creator} cannot create a role with permissions it does not have", index, 2)
        if body.role_name in world.roles:
            raise Refused(f"role {body.role_name} already exists", index, 3)
        world.roles[body.role_name] = wanted
    elif kind == "create_domain":
        body = command.create_domain
        _require(world, creator, "can_create_domain", index)
        if body.domain_id in world.domains:  # code 4 on irohad 1.6 with RocksDB (3 with Postgres)
            raise Refused(f"domain {body.domain_id} already exists", index, 4)
        if body.default_role not in world.roles:
            raise Refused(f"no role {body.default_role}", index, 4)
        world.domains[body.domain_id] = body.default_role
    elif kind == "create_account":
        body = command.create_account
        _require(world, creator, "can_create_account", index)
        account_id = f"{body.account_name}@{body.domain_id}"
        if body.domain_id not in world.domains:
            raise Refused(f"no domain {body.domain_id}", index, 3)
        if account_id in world.accounts:
            raise Refused(f"account {account_id} already exists", index, 4)
        key = normalise_key(body.public_key)
        if not re.fullmatch(r"(ed0120)?[0-9a-f]{64}", key):
            raise Refused(f"public key {body.public_key!r} is not an ed25519 key", index, 5)
        world.accounts[account_id] = Account(account_id, {key}, {world.domains[body.domain_id]})
    elif kind == "grant_permission":
        body = command.grant_permission
        permission = primitive_pb2.GrantablePermission.Name(body.permission)
        _require(world, creator, f"can_grant_{permission}", index)
        if body.account_id not in world.accounts:
            raise Refused(f"no account {body.account_id}", index, 3)
        if (creator, body.account_id, permission) in world.grants:  # irohad 1.6 (RocksDB) refuses a repeat
            raise Refused(f"{creator} already granted {permission} to {body.account_id}", index, 1007)
        world.grants.add((creator, body.account_id, permission))
    elif kind == "set_account_detail":
        body = command.set_account_detail
        target = world.accounts.get(body.account_id)
        if target is None:
            raise Refused(f"no account {body.account_id}", index, 3)
        allowed = (
            creator == body.account_id
            or "can_set_detail" in world.permissions(creator)
            or (body.account_id, creator, "can_set_my_account_detail") in world.grants
        )
        if not allowed:
            raise Refused(f"{creator} may not set details of {body.account_id}", index, 2)
        target.details.setdefault(creator, {})[body.key] = body.value
    else:
        raise Refused(f"{kind} is not modelled by the test double", index, 1)
