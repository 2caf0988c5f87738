"""The BSMD ledger: every weight transfer recorded by both sides, signed, and verifiable.

records (signed TransferRecord) · outbox (durable SQLite queue on every node) · service (relay with
retries) · backends (embedded hash chain on the chief, or Hyperledger Iroha) · verify · integration
(what the chief and worker processes plug in). See docs/ledger.md.
"""
