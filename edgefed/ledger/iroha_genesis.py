"""The genesis block of a single-peer Iroha 1.6 for one edgefed deployment (block 1, as irohad reads it).

It registers the peer (its internal address and public key), the roles ``admin`` and
``edgefed_node``, the deployment's domain and its admin account ``admin@DOMAIN``: what
`edgefed ledger bootstrap-iroha` then builds on (the node accounts and their grants, signed by each
node's own key). Used by the lab's Iroha option (scripts/iroha/genesis.py) and by tests/iroha.
"""

from __future__ import annotations

from google.protobuf import json_format
from iroha import Iroha, block_pb2, primitive_pb2

from edgefed.ledger.iroha import NODE_ROLE
from edgefed.ledger.iroha_bootstrap import NODE_PERMISSIONS

DOMAIN = "edgefed"
ADMIN_PERMISSIONS = (
    "can_add_peer", "can_create_role", "can_create_domain", "can_create_account", "can_append_role",
    "can_get_roles", "can_get_all_accounts", "can_get_all_acc_detail", "can_get_blocks",
    "can_get_domain_acc_detail", "can_get_my_acc_detail", "can_grant_can_set_my_account_detail",
)


def genesis_block(peer_address: str, peer_key: str, admin_key: str, domain: str = DOMAIN) -> dict[str, object]:
    """Block 1 as irohad reads it (the JSON form of block_pb2.Block); keys are 64 hex characters."""
    perms = primitive_pb2.RolePermission.Value
    commands = [
        Iroha.command("AddPeer", peer=primitive_pb2.Peer(address=peer_address, peer_key=peer_key)),
        Iroha.command("CreateRole", role_name="admin", permissions=[perms(p) for p in ADMIN_PERMISSIONS]),
        Iroha.command("CreateRole", role_name=NODE_ROLE, permissions=list(NODE_PERMISSIONS)),
        Iroha.command("CreateDomain", domain_id=domain, default_role=NODE_ROLE),
        Iroha.command("CreateAccount", account_name="admin", domain_id=domain, public_key=admin_key),
        Iroha.command("AppendRole", account_id=f"admin@{domain}", role_name="admin"),
    ]
    block = block_pb2.Block()
    tx = block.block_v1.payload.transactions.add()
    tx.payload.reduced_payload.commands.extend(commands)
    tx.payload.reduced_payload.quorum = 1
    block.block_v1.payload.tx_number = 1
    block.block_v1.payload.height = 1
    block.block_v1.payload.prev_block_hash = "0" * 64
    return json_format.MessageToDict(block)
