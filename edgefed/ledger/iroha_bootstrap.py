"""`edgefed ledger bootstrap-iroha`: prepares an Iroha 1 peer for the nodes of a PKI.

Creates the node role and the domain, one account per node whose signatory is its ledger key, and the
``can_set_my_account_detail`` grants the records need (edgefed.ledger.iroha explains the mapping).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519
from iroha import Iroha, primitive_pb2

from edgefed.ledger.errors import LedgerError
from edgefed.ledger.iroha import (
    NODE_ROLE,
    IrohaClient,
    IrohaKey,
    IrohaQueryError,
    account_id,
    account_name,
    iroha_public_key,
    iroha_signing_key,
)

# What a node's account may do: let others write its details, read the details of its domain.
NODE_PERMISSIONS = (
    primitive_pb2.can_grant_can_set_my_account_detail,
    primitive_pb2.can_get_domain_acc_detail,
    primitive_pb2.can_get_my_acc_detail,
)
# CreateDomain of an existing domain fails with error code 4 on irohad 1.6 with RocksDB (3 with
# Postgres, where 4 means "no such default role" - excluded here, the role was just seen).
DOMAIN_EXISTS = {3, 4}
GRANT_EXISTS = 1007  # irohad 1.6 (RocksDB): GrantPermission of a permission already granted


@dataclass(frozen=True)
class BootstrapStep:
    description: str
    outcome: str


def bootstrap(
    *,
    torii: str,
    domain: str,
    admin_account: str,
    admin_key: IrohaKey,
    node_keys: dict[str, ed25519.Ed25519PrivateKey],
    chief: str,
    commit_timeout: float,
    p2p: bool = False,
) -> list[BootstrapStep]:
    """Create the node role, the domain, one account per node, and the grants the records need.

    Every worker grants the chief can_set_my_account_detail (the chief writes its weight sends there),
    and the chief grants every worker the same (workers write their update sends on the chief's
    account). With p2p, every worker also grants every other worker, so that the sender of a p2p file
    transfer between two workers may write its send record on the receiver's account. Grants are
    signed by the granting node's own key, so NODE_KEYS must hold every node's private ledger key (the
    controller's PKI directory has them). Safe to run again: existing role and accounts are kept,
    an existing grant is reported as "already there".
    """
    if chief not in node_keys:
        raise LedgerError(f"the chief {chief!r} is not among the nodes to bootstrap: {sorted(node_keys)}")
    admin = IrohaClient(torii, admin_account, admin_key, commit_timeout)
    steps: list[BootstrapStep] = []

    def run(description: str, commands: list[Any], client: IrohaClient = admin) -> None:
        outcome = client.submit(commands)
        if not outcome.committed:
            raise LedgerError(f"bootstrap step '{description}' failed: {outcome.reason}")
        steps.append(BootstrapStep(description, outcome.status))

    create_domain = Iroha.command("CreateDomain", domain_id=domain, default_role=NODE_ROLE)
    if NODE_ROLE not in admin.query("GetRoles").roles_response.roles:
        create_role = Iroha.command("CreateRole", role_name=NODE_ROLE, permissions=NODE_PERMISSIONS)
        run(f"create role {NODE_ROLE} and domain {domain}", [create_role, create_domain])
    else:
        # Iroha 1 has no query for a domain: create it; an "already exists" refusal means it is there
        # (one peer may hold several deployments' domains, all with the one node role).
        outcome = admin.submit([create_domain])
        if outcome.committed:
            steps.append(BootstrapStep(f"create domain {domain} (role {NODE_ROLE} was there)", outcome.status))
        elif outcome.error_code in DOMAIN_EXISTS:
            steps.append(BootstrapStep(f"role {NODE_ROLE} and domain {domain}", "already there"))
        else:
            raise LedgerError(f"bootstrap step 'create domain {domain}' failed: {outcome.reason}")
    for node, key in sorted(node_keys.items()):
        account = account_id(node, domain)
        if _account_exists(admin, account):
            steps.append(BootstrapStep(f"account {account}", "already there"))
            continue
        run(
            f"create account {account}",
            [
                Iroha.command(
                    "CreateAccount",
                    account_name=account_name(node),
                    domain_id=domain,
                    public_key=iroha_public_key(key),
                )
            ],
        )
    clients = {
        node: IrohaClient(torii, account_id(node, domain), iroha_signing_key(key), commit_timeout)
        for node, key in node_keys.items()
    }
    grants: list[tuple[str, str]] = []  # (grantor, grantee)
    for node in sorted(node_keys):
        if node == chief:
            continue
        grants.append((node, chief))
        grants.extend((node, other) for other in sorted(node_keys) if p2p and other not in (node, chief))
    grants.extend((chief, node) for node in sorted(node_keys) if node != chief)
    # One transaction per grant: irohad 1.6 refuses a grant that exists (error code 1007), and one such
    # refusal would reject every other grant of the same transaction.
    for grantor, grantee in grants:
        description = f"{account_id(grantor, domain)} lets {account_id(grantee, domain)} set its details"
        permission = primitive_pb2.can_set_my_account_detail
        grant = Iroha.command("GrantPermission", account_id=account_id(grantee, domain), permission=permission)
        outcome = clients[grantor].submit([grant])
        if outcome.committed:
            steps.append(BootstrapStep(description, outcome.status))
        elif outcome.error_code == GRANT_EXISTS:
            steps.append(BootstrapStep(description, "already there"))
        else:
            raise LedgerError(f"bootstrap step '{description}' failed: {outcome.reason}")
    return steps


def _account_exists(client: IrohaClient, account: str) -> bool:
    try:
        client.query("GetAccount", account_id=account)
    except IrohaQueryError as exc:
        if exc.reason == "NO_ACCOUNT":
            return False
        raise
    return True
