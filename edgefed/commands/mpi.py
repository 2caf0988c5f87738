"""`edgefed mpi`: one rank of an MPI job (`mpirun -np N+1 edgefed mpi --config FILE`); rank 0 is the chief."""

from __future__ import annotations

import argparse
from typing import Any

from edgefed.config import load_config
from edgefed.errors import UsageError


def register(subcommands: Any) -> None:
    parser = subcommands.add_parser("mpi", help="run this MPI rank as a node (rank 0 the chief, others workers)")
    parser.add_argument(
        "--config", required=True,
        help="node configuration; {rank} in the path is replaced by this rank's number (node{rank}.toml)",
    )
    parser.add_argument("--progress-jsonl", action="store_true", help="rank 0 prints one JSON line per round on stdout")
    parser.set_defaults(handler=_run_rank)


def _run_rank(args: argparse.Namespace) -> int:
    from edgefed.node import print_jsonl, run_node
    from edgefed.transport.mpi import CHIEF_RANK, rank_of_this_process

    rank = rank_of_this_process()
    path = str(args.config).replace("{rank}", str(rank))
    config = load_config(path)
    expected = "chief" if rank == CHIEF_RANK else "worker"
    if config.node.role != expected:
        raise UsageError(f"rank {rank} runs the {expected}, but node.role is {config.node.role!r} in {path}")
    from edgefed.transport.mpi import MpiTransport

    transport = MpiTransport(config.node.name)  # every rank at once: the ranks agree on their names
    # An MPI job ends with its training: nothing is left to serve once the ranks exit.
    progress = print_jsonl if args.progress_jsonl and rank == CHIEF_RANK else None  # the chief's view only
    run_node(config, exit_when_done=True, progress=progress, transport=transport)
    # No ledger service can reach an MPI chief: the job delivers every rank's records before it ends.
    from edgefed.mpi_ledger import deliver_outboxes

    deliver_outboxes(config, transport)
    return 0
