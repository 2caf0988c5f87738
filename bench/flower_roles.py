"""Flower's side of the round benchmark, run inside .venv-flwr (flwr==1.41.0, see mk/bench.mk).

A real Flower server (the legacy `flwr.server.start_server`, gRPC, Flower's own TLS on, FedAvg) and
real Flower clients (`flwr.client.start_client` with a NumPyClient) on loopback. A client answers
each fit at once with the arrays it received, as the edgefed and raw-TLS workers do, so a round is
pure framework: the server sends the model to every client, every client sends it back, the server
averages. The server prints one JSON line: the wall time of each round (configure_fit to the end of
aggregate_fit) and its peak RSS.

    .venv-flwr/bin/python bench/flower_roles.py --role server|client --pki DIR --port P --workers N --size MB
"""

from __future__ import annotations

import os

# Read by flwr at import time: no telemetry events leave this machine.
os.environ["FLWR_TELEMETRY_ENABLED"] = "0"

import argparse
import json
import logging
import socket
import threading
import time
from pathlib import Path
from typing import Any

import flwr
from common import model, peak_rss_mb
from flwr.client import NumPyClient, start_client
from flwr.common import ndarrays_to_parameters
from flwr.server import Server, ServerConfig, start_server
from flwr.server.client_manager import SimpleClientManager
from flwr.server.strategy import FedAvg

MAX_MESSAGE = 1 << 30  # 64 MB models fit Flower's 512 MB default too; both ends must agree


class TimedFedAvg(FedAvg):
    """Flower's FedAvg, timing each fit round from configure_fit to the end of aggregate_fit."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.times: list[float] = []
        self.failures = 0
        self._started = 0.0

    def configure_fit(self, server_round: int, parameters: Any, client_manager: Any) -> Any:
        self._started = time.perf_counter()
        return super().configure_fit(server_round, parameters, client_manager)

    def aggregate_fit(self, server_round: int, results: Any, failures: Any) -> Any:
        aggregated = super().aggregate_fit(server_round, results, failures)
        self.times.append(time.perf_counter() - self._started)
        self.failures += len(failures)
        return aggregated


class EchoClient(NumPyClient):
    """Sends back what it received: the round measures the framework, not training."""

    def get_parameters(self, config: dict[str, Any]) -> list[Any]:
        raise RuntimeError("the server holds the initial parameters")

    def fit(self, parameters: list[Any], config: dict[str, Any]) -> tuple[list[Any], int, dict[str, Any]]:
        return parameters, 1, {}


def announce_when_listening(port: int, deadline_s: float = 60.0) -> None:
    """Print 'listening' once the gRPC port accepts connections (start_server blocks, so poll)."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                print("listening", flush=True)
                return
        except OSError:
            time.sleep(0.05)
    print("never listened", flush=True)


def run_server(args: argparse.Namespace) -> None:
    pki = Path(args.pki)
    strategy = TimedFedAvg(
        fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=args.workers, min_evaluate_clients=0,
        min_available_clients=args.workers, accept_failures=False,
        initial_parameters=ndarrays_to_parameters(model(args.size)),
    )
    server = Server(client_manager=SimpleClientManager(), strategy=strategy)
    server.set_max_workers(args.workers)  # every client served at once, as edgefed and raw TLS do
    watcher = threading.Thread(target=announce_when_listening, args=(args.port,), daemon=True)
    watcher.start()
    start_server(
        server_address=f"127.0.0.1:{args.port}",
        server=server,
        config=ServerConfig(num_rounds=args.rounds, round_timeout=args.round_timeout),
        grpc_max_message_length=MAX_MESSAGE,
        certificates=(
            (pki / "ca.crt").read_bytes(),
            (pki / "nodes" / "chief" / "tls.crt").read_bytes(),
            (pki / "nodes" / "chief" / "tls.key").read_bytes(),
        ),
    )
    if strategy.failures or len(strategy.times) != args.rounds:
        raise SystemExit(f"flower: {strategy.failures} failed fits, {len(strategy.times)} of {args.rounds} rounds")
    print(json.dumps({"times": strategy.times, "peak_rss_mb": peak_rss_mb(), "flwr": flwr.__version__}), flush=True)


def run_client(args: argparse.Namespace) -> None:
    start_client(
        server_address=f"127.0.0.1:{args.port}",
        client=EchoClient().to_client(),
        grpc_max_message_length=MAX_MESSAGE,
        root_certificates=(Path(args.pki) / "ca.crt").read_bytes(),
        max_retries=50,
        max_wait_time=60.0,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--role", choices=["server", "client"], required=True)
    parser.add_argument("--pki", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--size", type=int, required=True, help="model size in MiB")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--round-timeout", type=float, default=600.0)
    args = parser.parse_args()
    # Flower logs every round at INFO and warns that start_server/start_client are deprecated.
    logging.getLogger("flwr").setLevel(logging.ERROR)
    {"server": run_server, "client": run_client}[args.role](args)


if __name__ == "__main__":
    main()
