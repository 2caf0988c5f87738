"""Contracts every part of a node shares: transfer events and status files (with their schema).

Below federation, ledger, p2p and ops, which are siblings: each imports these, none imports another.
"""
