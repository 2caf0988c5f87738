"""Secure aggregation (SecAgg, Bonawitz et al. 2017, with the threshold choice of SecAgg+): pure math
and per-round state machines, no sockets, no threads. docs/privacy.md says what it costs and rules out.

ring: shared-scale quantization into a 2^32 ring and PRG masks; shamir: threshold shares over a prime
field; keys: X25519 agreement, signatures, share encryption; messages: the validated messages of each
phase; protocol: the worker's and the chief's state machines for one round.
"""
