"""The seed's table: one node alone vs synchronous distributed SGD vs FedAvg, 6 nodes on shaped links.

The seed's post trained on 6 Raspberry Pis over Wi-Fi and reported that federated averaging needs
about 100x less bandwidth than distributed SGD and trains about 4x faster. This benchmark repeats it
with edgefed itself:
- single: one process trains the Keras classifier (edgefed/tf/trainer.py) on the whole training set;
- sync SGD: the chief and 5 workers (6 nodes) average after every local step (interval_steps = 1);
- FedAvg: the same 6 nodes average after every 100 local steps (interval_steps = 100);
- FedAvg over MPI (--modes mpi, issue 17): the same FedAvg as one `mpirun` job, rank i in namespace i,
  OpenMPI's TCP path only (`--mca btl tcp,self`, on the shaped 10.77.0.0/24 links), no TLS.
Every mode processes the same number of samples: each of the 6 nodes runs --steps minibatch steps
on its shard, the single node 6 x --steps on the whole set. Data: scikit-learn's bundled digits.

Network: each node runs in its own network namespace, joined to a hub namespace (a bridge) by a veth
pair shaped with tc tbf to --rate-mbit in both directions. Addresses are 10.77.0.0/24 and exist only
inside these namespaces. Latency: when the kernel has sch_netem, `tc netem` adds --latency-ms each
way on every link; when it does not, a relay in the hub (the seed's public port 7777 forwarded to the
chief's 3389) delays every chunk by --latency-ms each way, keeping order. The namespaces are removed
on exit, also after a failure or Ctrl-C.

Measured by the chief: wire bytes (rx + tx of its interface: every byte of the federation crosses
it, headers and TLS included), the wall time from the first step until the global model first
reaches --target accuracy on the test split, and the final accuracy. Snapshots of the global weights
are evaluated after the run, so evaluation never slows training.

    sudo .venv/bin/python bench/bench_seed_table.py [--steps 500] [--target 0.9] [--rate-mbit 20]
        [--latency-ms 5] [--max-seconds 240] [--no-doc]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import random
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from common import PLOTS, BenchFailure, load_average, machine, process_group, read_line, reap, spawn, update_doc

REPO = Path(__file__).resolve().parent.parent
NODES = 6  # the seed's six Raspberry Pis: the chief and 5 workers, all training
SUBNET = "10.77.0"
HUB_IP = f"{SUBNET}.1"
CHIEF_IP = f"{SUBNET}.10"
PUBLIC_PORT, PRIVATE_PORT = 7777, 3389
MODES = {"sync": 1, "fedavg": 100, "fedavg-int8": 100, "fedavg-topk": 100, "mpi": 100}  # interval_steps
COMPRESSION = {"fedavg-int8": "int8", "fedavg-topk": "topk:0.01+int8"}  # federation.compression (else none)
LABELS = {"single": "single node", "sync": "synchronous SGD (average every step)",
          "fedavg": "FedAvg (average every 100 steps)", "fedavg-int8": "FedAvg + int8 updates",
          "fedavg-topk": "FedAvg + top-1 % int8 updates", "mpi": "FedAvg over MPI (average every 100 steps)"}
COLORS = {"single": "tab:blue", "sync": "tab:orange", "fedavg": "tab:green", "fedavg-int8": "tab:red",
          "fedavg-topk": "tab:purple", "mpi": "tab:brown"}


# -- network namespaces ------------------------------------------------------------------------------
def run(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True, text=True, timeout=30)


def netem_available(namespace: str, device: str) -> bool:
    probe = subprocess.run(["tc", "-n", namespace, "qdisc", "add", "dev", device, "root", "netem", "delay", "1ms"],
                           capture_output=True, text=True, timeout=30)
    if probe.returncode == 0:
        run("tc", "-n", namespace, "qdisc", "del", "dev", device, "root")
    return probe.returncode == 0


@dataclass
class Testbed:
    prefix: str
    rate_mbit: float
    latency_ms: float
    netem: bool = False

    @property
    def hub(self) -> str:
        return f"{self.prefix}-hub"

    def node(self, index: int) -> str:
        return f"{self.prefix}-n{index}"

    def node_ip(self, index: int) -> str:
        return f"{SUBNET}.{10 + index}"

    def namespaces(self) -> list[str]:
        return [self.hub, *(self.node(i) for i in range(NODES))]

    def create(self) -> None:
        for namespace in self.namespaces():
            run("ip", "netns", "add", namespace)
            run("ip", "-n", namespace, "link", "set", "lo", "up")
        run("ip", "-n", self.hub, "link", "add", "br0", "type", "bridge")
        run("ip", "-n", self.hub, "addr", "add", f"{HUB_IP}/24", "dev", "br0")
        run("ip", "-n", self.hub, "link", "set", "br0", "up")
        for i in range(NODES):
            # Both ends are created inside the namespaces: nothing appears in the host's namespace.
            run("ip", "-n", self.hub, "link", "add", f"h{i}", "type", "veth", "peer", "name", "eth0",
                "netns", self.node(i))
            run("ip", "-n", self.hub, "link", "set", f"h{i}", "master", "br0", "up")
            run("ip", "-n", self.node(i), "addr", "add", f"{self.node_ip(i)}/24", "dev", "eth0")
            run("ip", "-n", self.node(i), "link", "set", "eth0", "up")
        self.netem = netem_available(self.node(0), "eth0")
        for i in range(NODES):
            self.shape(self.node(i), "eth0")  # node -> hub
            self.shape(self.hub, f"h{i}")  # hub -> node

    def shape(self, namespace: str, device: str) -> None:
        # tbf: rate with a queue of up to 100 ms; netem (when the kernel has it) adds the latency first.
        tbf = ["tbf", "rate", f"{self.rate_mbit}mbit", "burst", "32k", "latency", "100ms"]
        if self.netem and self.latency_ms > 0:
            jitter = f"{self.latency_ms / 5:.2f}ms"
            run("tc", "-n", namespace, "qdisc", "add", "dev", device, "root", "handle", "1:", "netem",
                "delay", f"{self.latency_ms / 2}ms", jitter)  # two links per path: half each
            run("tc", "-n", namespace, "qdisc", "add", "dev", device, "parent", "1:1", "handle", "10:", *tbf)
        else:
            run("tc", "-n", namespace, "qdisc", "add", "dev", device, "root", *tbf)

    def destroy(self) -> None:
        for namespace in self.namespaces():
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True, timeout=30)

    def exec_in(self, namespace: str) -> list[str]:
        return ["ip", "netns", "exec", namespace]


def remove_stale_testbeds(prefix: str) -> None:
    """Namespaces left by a run of this script that was killed with SIGKILL (its pid is in the name)."""
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=30).stdout
    for name in re.findall(rf"^({re.escape(prefix)}(\d+)-\S+)", listing, re.MULTILINE):
        namespace, pid = name
        if not Path(f"/proc/{pid}").exists():
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True, timeout=30)


@contextlib.contextmanager
def testbed(rate_mbit: float, latency_ms: float, prefix: str = "efb") -> Iterator[Testbed]:
    remove_stale_testbeds(prefix)
    bed = Testbed(f"{prefix}{os.getpid()}", rate_mbit, latency_ms)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(f"stopped by signal {signum}")

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        bed.create()
        yield bed
    finally:
        bed.destroy()
        for signum, handler in previous.items():
            signal.signal(signum, handler)


# -- the relay: the seed's port forward, with latency ---------------------------------------------------
async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay_s: float) -> None:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(maxsize=4096)

    async def take() -> None:
        due = 0.0
        while data := await reader.read(1 << 16):
            # Jitter of +-20 %, never reordering: a chunk leaves no earlier than the one before it.
            due = max(due, loop.time() + delay_s * random.uniform(0.8, 1.2))
            await queue.put((due, data))
        await queue.put((0.0, b""))

    async def give() -> None:
        while True:
            due, data = await queue.get()
            if not data:
                break
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
        with contextlib.suppress(OSError):
            writer.write_eof()

    with contextlib.suppress(ConnectionError):
        await asyncio.gather(take(), give())


async def _relay(listen: tuple[str, int], target: tuple[str, int], delay_s: float, lifetime_s: float) -> None:
    async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(*target)
        except OSError:
            client_writer.close()
            return
        for writer in (client_writer, server_writer):
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await asyncio.gather(_pipe(client_reader, server_writer, delay_s), _pipe(server_reader, client_writer, delay_s))
        for writer in (client_writer, server_writer):
            writer.close()

    server = await asyncio.start_server(handle, *listen)
    print("listening", flush=True)
    async with server:
        await asyncio.sleep(lifetime_s)


def run_relay(args: argparse.Namespace) -> None:
    asyncio.run(_relay((HUB_IP, PUBLIC_PORT), (CHIEF_IP, PRIVATE_PORT), args.latency_ms / 2000, args.max_seconds + 600))


# -- training roles (inside the namespaces) -----------------------------------------------------------
def make_trainer(args: argparse.Namespace) -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    # Seven TensorFlow processes share 2 cores: one thread each, as on a single-core budget.
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from edgefed.tf.trainer import KerasClassifierTrainer
    from edgefed.trainers.data import load_dataset

    trainer = KerasClassifierTrainer(load_dataset("digits", args.seed), learning_rate=args.learning_rate,
                                     batch_size=args.batch_size, seed=args.seed)
    # Trace the train and test functions now, so the timed run measures training, not graph building.
    initial = trainer.get_weights()
    trainer.train_steps(1)
    accuracy(trainer)
    trainer.set_weights(initial)
    return trainer


def accuracy(trainer: Any) -> tuple[float, float]:
    """(loss, accuracy) on the whole test split in one batch: the trainer's evaluate() gives the same
    numbers but costs ~50 ms a call in Keras 3, too slow for hundreds of snapshots."""
    dataset = trainer.dataset
    result = trainer.model.test_on_batch(dataset.x_test, dataset.y_test, return_dict=True)
    return float(result["loss"]), float(result["accuracy"])


def interface_bytes(device: str = "eth0") -> int:
    stats = Path("/sys/class/net") / device / "statistics"
    return int((stats / "rx_bytes").read_text()) + int((stats / "tx_bytes").read_text())


def node_config(args: argparse.Namespace, name: str, role: str, rounds: int) -> Any:
    from edgefed.config import config_from_dict

    return config_from_dict({
        "node": {"name": name, "role": role, "pki_dir": args.pki, "state_dir": f"{args.state}/{name}"},
        "federation": {"private_ip": CHIEF_IP, "private_port": PRIVATE_PORT, "public_ip": args.public_ip,
                       "public_port": args.public_port, "server_name": "chief", "wait_time": 300.0,
                       "min_workers": NODES - 1, "rounds": rounds, "round_timeout": 120.0,
                       "compression": COMPRESSION.get(args.mode, "none")},
        "ledger": {"enabled": False},
    })


def evaluate(trainer: Any, snapshots: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for snapshot in snapshots:
        trainer.set_weights(snapshot.pop("weights"))
        snapshot["loss"], snapshot["accuracy"] = accuracy(trainer)
    return snapshots


def mpi_transport(args: argparse.Namespace, name: str) -> Any:
    """The MPI transport in mode mpi (every rank constructs it at once), TLS (None) otherwise."""
    if args.mode != "mpi":
        return None
    from edgefed.transport.mpi import MpiTransport

    return MpiTransport(name)


def run_chief(args: argparse.Namespace) -> None:
    from edgefed.wiring import build_chief

    trainer = make_trainer(args)
    interval = MODES[args.mode]
    rounds = args.steps // interval
    chief = build_chief(node_config(args, "chief", "chief", rounds), ledger=False,
                        transport=mpi_transport(args, "chief"))
    chief.listen()
    print("listening", flush=True)
    info = chief.start(trainer.get_weights(), trainer.num_samples)
    trainer.use_shard(info.task_index, info.total)
    trainer.set_weights(info.weights)
    # The clock starts once every node holds the initial model.
    started, bytes_at_start = time.monotonic(), interface_bytes()
    snapshots = [{"seconds": 0.0, "steps": 0, "bytes": 0, "weights": trainer.get_weights()}]
    every = max(1, args.snapshot_steps // interval)
    steps, cut, finished = 0, False, info.finished
    while not finished:
        trainer.train_steps(interval)
        steps += interval
        cut = time.monotonic() - started > args.max_seconds
        result = chief.average(trainer.get_weights(), trainer.num_samples, final=True if cut else None)
        trainer.set_weights(result.weights)
        finished = result.finished
        if finished or (result.round % every == 0):
            snapshots.append({"seconds": time.monotonic() - started, "steps": steps,
                              "bytes": interface_bytes() - bytes_at_start, "weights": result.weights})
    seconds, wire = time.monotonic() - started, interface_bytes() - bytes_at_start
    app_bytes = chief.bytes_sent + chief.bytes_received
    chief.close()
    print(json.dumps({"mode": args.mode, "nodes": info.total, "steps": steps, "seconds": seconds, "bytes": wire,
                      "app_bytes": app_bytes, "cut_by_time": cut, "snapshots": evaluate(trainer, snapshots)}),
          flush=True)


def run_worker(args: argparse.Namespace) -> None:
    from edgefed.wiring import build_worker

    trainer = make_trainer(args)
    interval = MODES[args.mode]
    session = build_worker(node_config(args, args.name, "worker", args.steps // interval), ledger=False,
                           transport=mpi_transport(args, args.name))
    info = session.start(None, trainer.num_samples)
    trainer.use_shard(info.task_index, info.total)
    trainer.set_weights(info.weights)
    finished = info.finished
    deadline = time.monotonic() + args.max_seconds + 300
    while not finished and time.monotonic() < deadline:
        trainer.train_steps(interval)
        result = session.average(trainer.get_weights(), trainer.num_samples)
        trainer.set_weights(result.weights)
        finished = result.finished
    session.close()


def run_single(args: argparse.Namespace) -> None:
    trainer = make_trainer(args)
    trainer.use_shard(0, 1)
    total, every = args.steps * NODES, args.snapshot_steps * NODES
    started = time.monotonic()
    snapshots = [{"seconds": 0.0, "steps": 0, "bytes": 0, "weights": trainer.get_weights()}]
    steps, cut = 0, False
    while steps < total and not cut:
        trainer.train_steps(min(every, total - steps))
        steps = min(steps + every, total)
        cut = time.monotonic() - started > args.max_seconds
        snapshots.append({"seconds": time.monotonic() - started, "steps": steps, "bytes": 0,
                          "weights": trainer.get_weights()})
    seconds = time.monotonic() - started
    print(json.dumps({"mode": "single", "nodes": 1, "steps": steps, "seconds": seconds, "bytes": 0, "app_bytes": 0,
                      "cut_by_time": cut, "snapshots": evaluate(trainer, snapshots)}), flush=True)


# -- orchestration -----------------------------------------------------------------------------------
def role_command(args: argparse.Namespace, role: str, *extra: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--role", role, "--steps", str(args.steps),
            "--max-seconds", str(args.max_seconds), "--seed", str(args.seed), "--learning-rate",
            str(args.learning_rate), "--batch-size", str(args.batch_size), "--snapshot-steps",
            str(args.snapshot_steps), "--latency-ms", str(args.latency_ms), *extra]


def run_single_mode(args: argparse.Namespace) -> dict[str, Any]:
    deadline = time.monotonic() + args.max_seconds + 300
    with process_group() as children:
        child = spawn(role_command(args, "single"), child_env(), subprocess.PIPE)
        children.append(child)
        assert child.stdout is not None
        result = json.loads(read_line(child.stdout, deadline, "the single node's result"))
        reap(children, deadline)
    return dict(result)


def child_env() -> dict[str, str]:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def run_federated_mode(args: argparse.Namespace, bed: Testbed, pki_dir: str, mode: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"bench-seed-{mode}-") as state:
        return run_federated_nodes(args, bed, pki_dir, mode, state)


def mpi_job(args: argparse.Namespace, bed: Testbed, pki_dir: str, state: str) -> list[str]:
    """One mpirun job, rank i in namespace i (MPMD: `ip netns exec` starts each rank). mpirun runs in the
    hub namespace, its PMIx server listening on the bridge (PMIx's TCP would otherwise be on a loopback
    no rank's namespace shares); the ranks' own traffic goes over TCP on the shaped links only."""
    hostfile = Path(state) / "hostfile"
    hostfile.write_text(f"localhost slots={NODES}\n")
    mpirun = shutil.which("mpirun")
    if mpirun is None:
        raise BenchFailure("mpirun not found: install openmpi-bin (make setup does)")
    # This script runs as root (ip netns, tc); OpenMPI refuses root unless told.
    command = [*bed.exec_in(bed.hub), "env", f"PMIX_MCA_ptl_tcp_if_include={SUBNET}.0/24",
               "PMIX_MCA_ptl_tcp_remote_connections=1",
               mpirun, "--hostfile", str(hostfile), "--oversubscribe", "--allow-run-as-root",
               "--mca", "btl", "tcp,self", "--mca", "btl_tcp_if_include", f"{SUBNET}.0/24"]
    common = ["--pki", pki_dir, "--state", state, "--mode", "mpi", "--public-ip", CHIEF_IP,
              "--public-port", str(PRIVATE_PORT)]
    for i in range(NODES):
        role = ["chief"] if i == 0 else ["worker", "--name", f"w{i}"]
        command += [*([":"] if i else []), "-np", "1", *bed.exec_in(bed.node(i)),
                    *role_command(args, role[0], *common, *role[1:])]
    return command


def run_mpi_nodes(args: argparse.Namespace, bed: Testbed, pki_dir: str, state: str) -> dict[str, Any]:
    deadline = time.monotonic() + args.max_seconds + 300
    with process_group() as children:
        job = spawn(mpi_job(args, bed, pki_dir, state), child_env(), subprocess.PIPE)
        children.append(job)
        assert job.stdout is not None
        while not (line := read_line(job.stdout, deadline, "the MPI chief's result")).startswith("{"):
            continue  # "listening", mpirun's notices
        result = json.loads(line)
        reap([job], deadline)
    return dict(result)


def run_federated_nodes(args: argparse.Namespace, bed: Testbed, pki_dir: str, mode: str, state: str) -> dict[str, Any]:
    if mode == "mpi":
        return run_mpi_nodes(args, bed, pki_dir, state)
    common = ["--pki", pki_dir, "--state", state, "--mode", mode]
    if bed.netem:  # no relay: workers dial the chief directly
        common += ["--public-ip", CHIEF_IP, "--public-port", str(PRIVATE_PORT)]
    deadline = time.monotonic() + args.max_seconds + 300
    with process_group() as children:
        if not bed.netem:
            relay = spawn([*bed.exec_in(bed.hub), *role_command(args, "relay")], child_env(), subprocess.PIPE)
            children.append(relay)
            assert relay.stdout is not None
            read_line(relay.stdout, deadline, "the relay to listen")
        chief = spawn([*bed.exec_in(bed.node(0)), *role_command(args, "chief", *common)], child_env(), subprocess.PIPE)
        children.append(chief)
        assert chief.stdout is not None
        read_line(chief.stdout, deadline, "the chief to listen")
        workers = [
            spawn([*bed.exec_in(bed.node(i)), *role_command(args, "worker", *common, "--name", f"w{i}")], child_env())
            for i in range(1, NODES)
        ]
        children.extend(workers)
        result = json.loads(read_line(chief.stdout, deadline, f"the chief's {mode} result"))
        reap([chief, *workers], deadline)
    return dict(result)


def time_to_target(result: dict[str, Any], target: float) -> dict[str, Any] | None:
    return next((s for s in result["snapshots"] if s["accuracy"] >= target), None)


def summarize(results: dict[str, dict[str, Any]], target: float) -> dict[str, dict[str, Any]]:
    summary = {}
    for mode, result in results.items():
        hit = time_to_target(result, target)
        summary[mode] = {
            "steps": result["steps"], "seconds": result["seconds"], "bytes": result["bytes"],
            "app_bytes": result["app_bytes"], "final_accuracy": result["snapshots"][-1]["accuracy"],
            "cut_by_time": result["cut_by_time"],
            "target_seconds": hit["seconds"] if hit else None, "target_bytes": hit["bytes"] if hit else None,
            "target_steps": hit["steps"] if hit else None,
        }
    return summary


def megabytes(value: float | None) -> str:
    return "—" if value is None else f"{value / 1e6:.2f}"


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def write_markdown(summary: dict[str, dict[str, Any]], args: argparse.Namespace, bed_info: str, command: str,
                   elapsed: float, load: str, failures: dict[str, str]) -> str:
    target = args.target
    lines = [
        "## The seed's table: single node vs synchronous SGD vs FedAvg on shaped links (issue 9)",
        "",
        f"Command: `{command}` (part of `make bench`, as root), {elapsed / 60:.1f} min, load {load} at start  ",
        f"Machine: {machine()}  ",
        f"Network: {bed_info}  ",
        f"Model and data: the Keras classifier of `edgefed/tf/trainer.py` (dense 64 ReLU + softmax, plain SGD, "
        f"learning rate {args.learning_rate}, batch {args.batch_size}) on scikit-learn's bundled digits "
        "(1438 training / 359 test images; the seed used Fashion-MNIST, which cannot be downloaded here). "
        f"{NODES} nodes = the chief and {NODES - 1} workers, each training on its own shard; every mode processes "
        f"the same samples: {args.steps} steps per node ({args.steps * NODES} for the single node). "
        "TensorFlow runs one thread per process; the 6 nodes share the machine's 2 cores.  ",
        f"Time to target = wall time from the first step until the global model first scores ≥ {target:.2f} on "
        "the test split (checked on snapshots taken after averaging, evaluated after the run). Bytes = rx + tx "
        "of the chief's interface (all federation traffic crosses it; TCP/IP headers and TLS included), from the "
        "first step.",
        "",
        f"| mode | steps | steps to {target:.2f} | time to {target:.2f} s | bytes to {target:.2f} MB "
        "| total time s | total bytes MB | final accuracy |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for mode in ("single", *MODES):
        if mode not in summary and mode not in failures and mode in COMPRESSION:
            continue  # the compressed rows appear only when asked for (--modes)
        if mode not in summary:
            lines.append(f"| {LABELS[mode]} | {'failed: ' + failures[mode] if mode in failures else 'not run'} "
                         "| | | | | | |")
            continue
        row = summary[mode]
        steps = f"{row['steps']} (all data, one node)" if mode == "single" else str(row["steps"])
        reached = "not reached" if row["target_seconds"] is None else f"{row['target_seconds']:.1f}"
        target_steps = "—" if row["target_steps"] is None else str(row["target_steps"])
        cut = " (cut by --max-seconds)" if row["cut_by_time"] else ""
        lines.append(
            f"| {LABELS[mode]} | {steps}{cut} | {target_steps} | {reached} | "
            f"{megabytes(row['target_bytes']) if mode != 'single' else '0'} | {row['seconds']:.1f} | "
            f"{megabytes(row['bytes']) if mode != 'single' else '0'} | {row['final_accuracy']:.3f} |"
        )
    sync, fed = summary.get("sync"), summary.get("fedavg")
    if sync and fed:
        bytes_total = ratio(sync["bytes"], fed["bytes"])
        bytes_target = ratio(sync["target_bytes"], fed["target_bytes"])
        time_target = ratio(sync["target_seconds"], fed["target_seconds"])

        def judged(value: float | None, goal: float) -> str:
            if value is None:
                return "not measurable (a mode did not reach the target)"
            return f"{value:.1f}x — " + ("met" if value >= goal else "**missed**")

        lines += [
            "",
            "FedAvg vs synchronous SGD (targets: ≥ 90x fewer bytes, ≥ 4x less time to the same accuracy):",
            "",
            f"- bytes for the whole run (same samples): {judged(bytes_total, 90)}",
            f"- bytes to reach {target:.2f}: {judged(bytes_target, 90)}",
            f"- time to reach {target:.2f}: {judged(time_target, 4)}",
            f"- time for the whole run: {judged(ratio(sync['seconds'], fed['seconds']), 4)}",
            "",
            "How to read it: FedAvg talks once per 100 steps and synchronous SGD once per step, so for the same "
            "steps the bytes differ by about 100x; to a target, the ratio is about 100 x (steps synchronous SGD "
            "needed) / (steps FedAvg needed), and FedAvg's accuracy is only known at the end of a round (every 100 "
            "steps), so a target it just misses after one round costs it a second. The single node is the "
            "fastest here: the 6 nodes share 2 cores, so distributing the work buys no compute, where the seed's "
            "6 Raspberry Pis each had their own CPU and a single Pi was the slow part. Step times with 6 "
            "TensorFlow processes on 2 cores also depend on the machine's other load.",
        ]
    compressed = [(mode, setting, summary[mode]) for mode, setting in COMPRESSION.items() if mode in summary]
    if fed is not None and compressed:
        lines += ["", "Compressed updates vs FedAvg (the broadcast is still float32):", ""]
    for mode, setting, row in compressed if fed is not None else []:
        assert fed is not None
        whole = ratio(fed["bytes"], row["bytes"])
        to_target = ratio(fed["target_bytes"], row["target_bytes"])
        lines.append(f"- {LABELS[mode]} (`{setting}`): bytes for the whole run "
                     + (f"{whole:.1f}x fewer" if whole else "not measurable") + f"; bytes to {target:.2f} "
                     + (f"{to_target:.1f}x fewer" if to_target else "not measurable (a mode did not reach it)"))
    mpi = summary.get("mpi")
    if fed and mpi:
        time_ratio, bytes_ratio = ratio(fed["seconds"], mpi["seconds"]), ratio(fed["bytes"], mpi["bytes"])
        lines += ["", f"FedAvg over TLS vs over MPI (the same rounds): {time_ratio or 0:.2f}x the time, "
                  f"{bytes_ratio or 0:.2f}x the bytes on the chief's link. The MPI ranks connect directly: when the "
                  "kernel lacks netem, the TLS modes' latency comes from the relay and MPI's links have none."]
    lines += ["", "![accuracy vs time](bench/seed_accuracy.png)", ""]
    return "\n".join(lines) + "\n"


def plot(results: dict[str, dict[str, Any]], target: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (by_time, by_bytes) = plt.subplots(1, 2, figsize=(10, 3.8))
    for mode, result in results.items():
        points = result["snapshots"]
        marker = "." if mode.startswith("fedavg") or mode == "mpi" else None
        by_time.plot([p["seconds"] for p in points], [p["accuracy"] for p in points], color=COLORS[mode],
                     marker=marker, label=LABELS[mode])
        if mode != "single":
            sent = [p for p in points if p["bytes"] > 0]
            by_bytes.plot([p["bytes"] / 1e6 for p in sent], [p["accuracy"] for p in sent], color=COLORS[mode],
                          marker=marker, label=LABELS[mode])
    for axis in (by_time, by_bytes):
        axis.axhline(target, color="grey", linestyle=":", linewidth=1)
        axis.set_ylabel("test accuracy")
        axis.grid(True, alpha=0.3)
    by_time.set(xlabel="wall time (s)", xscale="symlog")
    by_bytes.set(xlabel="bytes on the chief's link (MB)", xscale="log")
    by_time.legend(fontsize=8)
    figure.tight_layout()
    PLOTS.mkdir(parents=True, exist_ok=True)
    figure.savefig(PLOTS / "seed_accuracy.png", dpi=110)
    plt.close(figure)


def timed(mode: str, run_mode: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run one mode; its result gains run_s, the wall time including process start and evaluation."""
    print(f"{mode}: running", file=sys.stderr, flush=True)
    started = time.monotonic()
    result = run_mode()
    result["run_s"] = round(time.monotonic() - started, 1)
    print(f"{mode}: {result['steps']} steps in {result['seconds']:.1f} s of training, {result['run_s']} s in all",
          file=sys.stderr, flush=True)
    return result


def orchestrate(args: argparse.Namespace) -> None:
    if os.geteuid() != 0:
        raise SystemExit("bench_seed_table.py needs root (ip netns, tc): run it as root or through sudo")
    started, load = time.monotonic(), load_average()
    results: dict[str, dict[str, Any]] = {}
    failures: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="bench-seed-pki-") as pki_dir:
        from edgefed import pki

        pki.init_ca(pki_dir)
        pki.issue_node(pki_dir, "chief", [CHIEF_IP])
        for i in range(1, NODES):
            pki.issue_node(pki_dir, f"w{i}")
        for mode in args.modes:
            if mode == "single":
                results[mode] = timed(mode, lambda: run_single_mode(args))
        bed_info = "none (single node only)"
        if any(mode in MODES for mode in args.modes):
            with testbed(args.rate_mbit, args.latency_ms, args.netns_prefix) as bed:
                latency = (f"tc netem {args.latency_ms / 2} ms ± 20 % on each link (two links per path)" if bed.netem
                           else "this kernel has no sch_netem (tc netem: 'Specified qdisc kind is unknown'), so a "
                           "relay in the hub namespace (the seed's public port 7777 -> the chief's 3389) delays each "
                           f"direction by {args.latency_ms / 2} ms ± 20 %, in order")
                bed_info = (f"{NODES} network namespaces on a bridge in a hub namespace, each link tc tbf "
                            f"{args.rate_mbit} Mbit/s each way; added round-trip latency {args.latency_ms} ms: "
                            f"{latency}")
                for mode in args.modes:
                    if mode in MODES:
                        try:
                            results[mode] = timed(mode, functools.partial(run_federated_mode, args, bed, pki_dir,
                                                                          mode))
                        except BenchFailure as exc:
                            failures[mode] = str(exc)
                            print(f"{mode}: {exc}", file=sys.stderr)
    elapsed = time.monotonic() - started
    summary = summarize(results, args.target)
    print(json.dumps(summary, indent=1))
    command = "python bench/bench_seed_table.py " + shlex.join(sys.argv[1:])
    section = write_markdown(summary, args, bed_info, command.strip(), elapsed, load, failures)
    print(section)
    if not args.no_doc:
        PLOTS.mkdir(parents=True, exist_ok=True)
        (PLOTS / "seed_table.json").write_text(json.dumps({"summary": summary, "runs": results}, indent=1) + "\n")
        plot(results, args.target)
        update_doc(section, "bench_seed_table")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--role", choices=["chief", "worker", "single", "relay"], help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=sorted(MODES), help=argparse.SUPPRESS)
    parser.add_argument("--pki", help=argparse.SUPPRESS)
    parser.add_argument("--state", help=argparse.SUPPRESS)
    parser.add_argument("--name", help=argparse.SUPPRESS)
    parser.add_argument("--public-ip", default=HUB_IP, help=argparse.SUPPRESS)
    parser.add_argument("--public-port", type=int, default=PUBLIC_PORT, help=argparse.SUPPRESS)
    parser.add_argument("--modes", nargs="+", choices=["single", *MODES], default=["single", *MODES],
                        help="fedavg-int8 / fedavg-topk: FedAvg with federation.compression int8 / topk:0.01+int8")
    parser.add_argument("--steps", type=int, default=500, help="minibatch steps per node (a multiple of 100)")
    parser.add_argument("--target", type=float, default=0.9, help="test accuracy every mode is timed to")
    parser.add_argument("--rate-mbit", type=float, default=20.0)
    parser.add_argument("--latency-ms", type=float, default=5.0, help="added round-trip latency, chief <-> worker")
    parser.add_argument("--max-seconds", type=float, default=240.0, help="training time cap per mode")
    parser.add_argument("--snapshot-steps", type=int, default=5, help="steps between accuracy snapshots")
    parser.add_argument("--learning-rate", type=float, default=0.1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-doc", action="store_true", help="print the section, do not update docs/")
    parser.add_argument("--netns-prefix", default="efb",
                        help="network namespaces are named PREFIX<pid>-hub, PREFIX<pid>-n0, ... (unique per run)")
    args = parser.parse_args()
    if args.steps % 100 or args.steps <= 0:
        parser.error("--steps must be a positive multiple of 100 (FedAvg averages every 100 steps)")
    roles = {"chief": run_chief, "worker": run_worker, "single": run_single, "relay": run_relay}
    if args.role:
        roles[args.role](args)
    else:
        orchestrate(args)


if __name__ == "__main__":
    main()
