"""`edgefed chief`, `edgefed worker` and `edgefed demo`."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any

from edgefed.attacks import ATTACKS
from edgefed.config import AGGREGATIONS, NodeConfig, load_config
from edgefed.errors import UsageError


def register(subcommands: Any) -> None:
    for role in ("chief", "worker"):
        parser = subcommands.add_parser(role, help=f"run this node as the federation's {role}")
        parser.add_argument("--config", required=True, help="node configuration (TOML, see docs/configuration.md)")
        parser.add_argument("--pki", help="PKI directory (overrides node.pki_dir)")
        parser.add_argument("--name", help="node name (overrides node.name)")
        parser.add_argument("--state-dir", help="state directory (overrides node.state_dir)")
        parser.add_argument("--exit-when-done", action="store_true",
                            help="exit when training ends instead of serving until stopped")
        parser.add_argument("--progress-jsonl", action="store_true",
                            help="print one JSON line per round on stdout")
        if role == "worker":
            parser.add_argument("--attack", choices=ATTACKS,
                                help="simulate a hostile worker that poisons its updates (demo and benchmarks)")
        parser.set_defaults(handler=_run_node, role=role)

    demo = subcommands.add_parser("demo", help="chief + N workers on loopback, trained on the digits data set")
    demo.add_argument("--workers", type=int, default=3)
    demo.add_argument("--rounds", type=int, default=5)
    demo.add_argument("--interval-steps", type=int, default=20, help="local steps between two averages")
    demo.add_argument("--trainer", choices=("numpy", "keras"), default="numpy")
    demo.add_argument("--state-dir", help="keep every node's state here (default: a temporary directory)")
    demo.add_argument("--json", action="store_true", help="end with one JSON line summarising the run")
    demo.add_argument("--no-ledger", action="store_true", help="run without the transfer ledger (for comparison)")
    demo.add_argument("--attackers", type=int, default=0, help="how many of the workers poison their updates")
    demo.add_argument("--attack", choices=ATTACKS, default="scale", help="what the attackers send (default: scale)")
    demo.add_argument("--aggregation", choices=AGGREGATIONS, default="fedavg",
                      help="how the chief combines updates (federation.aggregation)")
    demo.add_argument("--dp-epsilon", type=float, default=0.0, metavar="E",
                      help="differential privacy: every node clips and noises its updates to spend at most E "
                      "(delta 1e-5) over all rounds (federation.dp_epsilon, docs/privacy.md)")
    demo.add_argument("--compression", default="none",
                      help="how workers encode their updates: none, fp16, int8, topk:F, topk:F+int8 "
                           "(federation.compression, docs/compression.md)")
    demo.add_argument("--broadcast-compression", default="none", choices=("none", "fp16", "int8"),
                      help="how the chief sends the global weights: none, fp16, or an int8 delta "
                           "(federation.broadcast_compression, docs/compression.md)")
    demo.add_argument("--secure-aggregation", action="store_true",
                      help="the chief learns only the sum of each round's updates (federation.secure_aggregation, "
                           "docs/privacy.md)")
    demo.add_argument("--transport", choices=("tls", "mpi"), default="tls",
                      help="mutual TLS between processes, or one mpirun job (docs/mpi.md)")
    demo.set_defaults(handler=_demo)


def _with_overrides(config: NodeConfig, args: argparse.Namespace) -> NodeConfig:
    node = config.node
    changes = {
        key: value
        for key, value in (("pki_dir", args.pki), ("name", args.name), ("state_dir", args.state_dir))
        if value is not None
    }
    if node.role != args.role:

        raise UsageError(f"node.role is {node.role!r} in {args.config}, but `edgefed {args.role}` was run")
    return dataclasses.replace(config, node=dataclasses.replace(node, **changes))


def _run_node(args: argparse.Namespace) -> int:
    from edgefed.node import print_jsonl, run_node

    config = _with_overrides(load_config(args.config), args)
    run_node(config, exit_when_done=args.exit_when_done, progress=print_jsonl if args.progress_jsonl else None,
             attack=getattr(args, "attack", None), config_path=args.config)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from edgefed.demo import run_demo

    if args.transport == "mpi":
        if args.attackers or args.aggregation != "fedavg" or args.no_ledger or args.dp_epsilon \
                or args.compression != "none" or args.broadcast_compression != "none" or args.secure_aggregation:
            raise UsageError("--transport mpi runs the plain demo: no --attackers, --aggregation, --no-ledger, "
                             "--compression, --broadcast-compression, --dp-epsilon or --secure-aggregation")
        from edgefed.demo_mpi import run_mpi_demo

        result = run_mpi_demo(args.workers, args.rounds, args.state_dir, args.interval_steps, args.trainer,
                              out=sys.stderr if args.json else None)
    else:
        result = run_demo(
            args.workers, args.rounds, args.state_dir, args.interval_steps, args.trainer, ledger=not args.no_ledger,
            out=sys.stderr if args.json else None,  # --json: stdout holds the JSON document only
            attackers=args.attackers, attack=args.attack, aggregation=args.aggregation, dp_epsilon=args.dp_epsilon,
            compression=args.compression, broadcast_compression=args.broadcast_compression,
            secure_aggregation=args.secure_aggregation,
        )
    if args.json:
        print(json.dumps(result.summary))
    else:
        summary = result.summary
        print(f"accuracy {summary['accuracy']:.4f} after {summary['rounds']} rounds with {summary['workers']} "
              f"workers; {summary['bytes_sent']} bytes on the wire in {summary['seconds']:.1f}s")
        if summary.get("dp_epsilon") is not None:
            spent = "?" if summary["dp_epsilon_spent"] is None else f"{summary['dp_epsilon_spent']:.4g}"
            print(f"differential privacy: epsilon {spent} of {summary['dp_epsilon']:g} "
                  f"spent (delta {summary['dp_delta']:g}, clip norm {summary['dp_clip_norm']:g}, noise multiplier "
                  f"{summary['dp_noise_multiplier']:.3g})")
        if args.trainer == "keras" and args.state_dir:
            print(f"final model (.keras, .tflite, manifest.json) in {args.state_dir}/chief/model; "
                  f"try: edgefed predict --model {args.state_dir}/chief/model/model.tflite --input FILE.npy")
    return 0
