"""The BSMD ledger: every weight transfer recorded by both sides, signed, and verifiable.

records (signed TransferRecord) · outbox (durable SQLite queue on every node) · storage (its and the
chain's SQLite connections) · hooks (what the chief and worker processes plug in) · files (p2p file
transfers as records) · service (relay with retries) · backends (the interface, the chief's local chain)
· push (LEDGER_PUSH/ACK, both ends) · chain (the embedded hash chain) · iroha, iroha_bootstrap
(Hyperledger Iroha) · verify. See docs/ledger.md.
"""
