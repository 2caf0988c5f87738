"""Run the status probe on many hosts at once over SSH (paramiko), with host keys checked.

Every way a host can fail (no route, refused, timeout, unknown or changed host key, rejected
login, no `sh`) becomes a `Failure` with a kind and a sentence; nothing here raises for one host.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko
from paramiko.hostkeys import HostKeyEntry

from edgefed.fsutil import atomic_write_bytes
from edgefed.ops.inventory import InventoryHost
from edgefed.ops.probe import (
    Collected,
    Failure,
    FailureKind,
    ProbeOutput,
    Section,
    build_script,
    parse_output,
    remote_command,
)
from edgefed.ops.sshroute import Route, jump_host, route_for

log = logging.getLogger(__name__)

MAX_OUTPUT_BYTES = 4 * 1024 * 1024  # status files are small; a node printing more is misbehaving
DEFAULT_KNOWN_HOSTS = (Path("~/.ssh/known_hosts"), Path("/etc/ssh/ssh_known_hosts"))


@dataclass(frozen=True)
class SshOptions:
    connect_timeout: float = 10.0
    command_timeout: float = 30.0
    # Empty: each host's UserKnownHostsFile from its ssh args, else ~/.ssh/known_hosts and
    # /etc/ssh/ssh_known_hosts. Given: these files for every host.
    known_hosts: tuple[Path, ...] = ()
    accept_new_host_keys: bool = False
    forks: int = 16
    ssh_config: paramiko.SSHConfig | None = None  # ~/.ssh/config or --ssh-config, parsed


class KnownHosts:
    """The known_hosts files keys are checked against; newly accepted keys go to the first one."""

    _write_lock = threading.Lock()  # one for all instances: two may share a file

    def __init__(self, files: Sequence[Path | str] = ()) -> None:
        chosen = files or DEFAULT_KNOWN_HOSTS
        self.files = [Path(os.path.expanduser(str(path))) for path in chosen]

    @property
    def writable(self) -> Path:
        return self.files[0]

    def load_into(self, client: paramiko.SSHClient) -> None:
        for path in self.files:
            if path.exists():
                try:
                    # "system" host keys are read-only to paramiko: it never rewrites these files itself.
                    client.load_system_host_keys(str(path))
                except OSError as exc:
                    raise _ProbeError("ssh", f"cannot read known_hosts {path}: {exc.strerror or exc}") from exc

    def add(self, hostname: str, key: paramiko.PKey) -> None:
        line = HostKeyEntry([hostname], key).to_line()
        with self._write_lock:
            path = self.writable
            old = path.read_bytes() if path.exists() else b""
            if old and not old.endswith(b"\n"):
                old += b"\n"
            mode = path.stat().st_mode & 0o777 if path.exists() else 0o600
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            atomic_write_bytes(path, old + line.encode(), mode=mode)
        log.info("added %s host key for %s to %s", key.get_name(), hostname, path)


class UnknownHostKeyError(paramiko.SSHException):
    def __init__(self, hostname: str, key: paramiko.PKey) -> None:
        super().__init__(
            f"host key {key.get_name()} {key.fingerprint} of {hostname} is not in known_hosts;"
            " check it and rerun with --accept-new-host-keys to trust it"
        )


class _Policy(paramiko.MissingHostKeyPolicy):
    def __init__(self, known_hosts: KnownHosts, accept_new: bool) -> None:
        self.known_hosts = known_hosts
        self.accept_new = accept_new

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        if not self.accept_new:
            raise UnknownHostKeyError(hostname, key)
        self.known_hosts.add(hostname, key)


class _ProbeError(Exception):
    def __init__(self, kind: FailureKind, message: str) -> None:
        super().__init__(message)
        self.failure = Failure(kind, message)


ScriptBuilder = Callable[[InventoryHost], tuple[str, str]]  # host -> (nonce, script)
# After the script: the (address, port) the node itself should reach, from what the script printed.
FollowUp = Callable[[InventoryHost, ProbeOutput], tuple[str, int] | None]


def collect(
    hosts: Sequence[InventoryHost], options: SshOptions, build: ScriptBuilder = build_script,
    follow_up: FollowUp | None = None,
) -> list[Collected]:
    """Probe every host concurrently; results come back in the order of `hosts`."""
    if not hosts:
        return []

    def known_hosts(host: InventoryHost) -> KnownHosts:
        return KnownHosts(options.known_hosts or host.known_hosts_files)

    workers = max(1, min(options.forks, len(hosts)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="edgefed-ssh") as pool:
        return list(
            pool.map(lambda host: probe_host(host, options, known_hosts(host), build, follow_up), hosts)
        )


def probe_host(
    host: InventoryHost, options: SshOptions, known_hosts: KnownHosts, build: ScriptBuilder = build_script,
    follow_up: FollowUp | None = None,
) -> Collected:
    route = route_for(host, options.ssh_config)
    key_file = os.path.expanduser(route.key_file) if route.key_file else None
    client = paramiko.SSHClient()
    hops: list[paramiko.SSHClient] = []  # jump hosts' connections, closed after the target's
    try:
        _login(client, host, route, options, known_hosts, hops)
        output = _probe(client, host, options.command_timeout, build)
        target = follow_up(host, output) if follow_up is not None else None
        if target is not None:
            output.sections["reach"] = _reach_from_node(client, target, options.connect_timeout)
        return Collected(host, output, None)
    except (OSError, paramiko.SSHException, _ProbeError) as exc:
        transport = client.get_transport()
        if isinstance(exc, paramiko.SSHException) and transport is not None and not transport.remote_version:
            # paramiko gives up waiting for the server's greeting silently and then fails the login
            # with "No existing session": say what really happened.
            where = f"{host.address}:{host.port}"
            message = f"no SSH greeting from {where} within {options.connect_timeout:g}s (is sshd there?)"
            return Collected(host, None, Failure("timeout", message))
        return Collected(host, None, classify(exc, host, key_file, options))
    except Exception as exc:  # one host's surprise (a paramiko bug, EOFError) must not sink the report
        log.debug("probing %s failed", host.name, exc_info=True)
        return Collected(host, None, Failure("ssh", f"SSH with {host.address}:{host.port} failed: {exc!r}"))
    finally:
        client.close()
        for hop in reversed(hops):
            hop.close()


MAX_JUMPS = 4


def _login(
    client: paramiko.SSHClient, host: InventoryHost, route: Route, options: SshOptions, known_hosts: KnownHosts,
    hops: list[paramiko.SSHClient],
) -> None:
    """Connect and authenticate client to route, through its ProxyJump or ProxyCommand if any."""
    key_file = os.path.expanduser(route.key_file) if route.key_file else None
    if key_file is not None and not os.path.isfile(key_file):
        raise _ProbeError("auth", f"private key {key_file} (ansible_ssh_private_key_file) not found")
    sock: Any = None
    if route.proxy_jump is not None:
        if len(hops) >= MAX_JUMPS:
            raise _ProbeError("ssh", f"more than {MAX_JUMPS} ProxyJump hops (a loop in ssh_config?)")
        jump = jump_host(route.proxy_jump, host)
        hop = paramiko.SSHClient()
        hops.append(hop)
        try:
            _login(hop, jump, route_for(jump, options.ssh_config), options, known_hosts, hops)
            jump_transport = hop.get_transport()
            assert jump_transport is not None
            sock = jump_transport.open_channel(
                "direct-tcpip", (route.hostname, route.port), ("127.0.0.1", 0), timeout=options.connect_timeout
            )
        except (OSError, paramiko.SSHException, _ProbeError) as exc:
            failure = classify(exc, jump, key_file, options)
            raise _ProbeError(failure.kind, f"via ProxyJump {route.proxy_jump}: {failure.message}") from exc
    elif route.proxy_command is not None:
        command = route.proxy_command.replace("%h", route.hostname).replace("%p", str(route.port))
        sock = paramiko.ProxyCommand(command.replace("%r", route.user).replace("%%", "%"))
    known_hosts.load_into(client)
    client.set_missing_host_key_policy(_Policy(known_hosts, options.accept_new_host_keys))
    client.connect(
        hostname=route.hostname,
        port=route.port,
        username=route.user,
        password=host.password,
        key_filename=key_file,
        look_for_keys=key_file is None,
        allow_agent=True,
        timeout=options.connect_timeout,
        banner_timeout=options.connect_timeout,
        auth_timeout=options.connect_timeout,
        channel_timeout=options.command_timeout,
        sock=sock,
    )


def classify(exc: BaseException, host: InventoryHost, key_file: str | None, options: SshOptions) -> Failure:
    """Say in one sentence why a host could not be probed (the order matters: subclasses first)."""
    where = f"{host.address}:{host.port}"
    kind: FailureKind
    if isinstance(exc, _ProbeError):
        return exc.failure
    if isinstance(exc, UnknownHostKeyError):
        kind, message = "host-key-unknown", str(exc)
    elif isinstance(exc, paramiko.BadHostKeyException):
        kind = "host-key-changed"
        message = (
            f"host key of {where} CHANGED: got {exc.key.get_name()} {exc.key.fingerprint}, known_hosts has"
            f" {exc.expected_key.fingerprint}; refusing to connect (remove the old entry only if expected)"
        )
    elif isinstance(exc, paramiko.PasswordRequiredException):
        kind, message = "auth", f"private key {key_file} is encrypted; load it into ssh-agent"
    elif isinstance(exc, paramiko.AuthenticationException):
        used = f"key {key_file}" if key_file else "the agent and ~/.ssh keys"
        kind, message = "auth", f"{host.user}@{where} rejected the login with {used}: {exc}"
    elif isinstance(exc, TimeoutError):
        kind, message = "timeout", f"no answer from {where} within {options.connect_timeout:g}s"
    elif isinstance(exc, socket.gaierror):
        kind, message = "unreachable", f"cannot resolve {host.address}: {exc.strerror}"
    elif isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
        reasons = "; ".join(sorted({err.strerror or str(err) for err in exc.errors.values()}))
        kind, message = "unreachable", f"cannot connect to {where}: {reasons}"
    elif isinstance(exc, OSError):
        kind, message = "unreachable", f"cannot connect to {where}: {exc.strerror or exc}"
    else:
        kind, message = "ssh", f"SSH with {host.user}@{where} failed: {exc or type(exc).__name__}"
    return Failure(kind, message)


def _reach_from_node(client: paramiko.SSHClient, target: tuple[str, int], timeout: float) -> Section:
    """Can the node open a TCP connection to target? Asked of its sshd (a direct-tcpip channel), so the
    connection starts from the node, through its routes and firewall, with nothing installed there."""
    transport = client.get_transport()
    if transport is None:
        return Section("the SSH connection closed", 1)
    try:
        channel = transport.open_channel("direct-tcpip", target, ("127.0.0.1", 0), timeout=timeout)
    except paramiko.ChannelException as exc:
        # RFC 4254: 2 is "connect failed" (refused, no route or filtered, as seen from the node).
        reason = "refused or unreachable from the node" if exc.code == 2 else exc.text or "connection failed"
        return Section(reason, 1)
    except (paramiko.SSHException, OSError) as exc:
        return Section(str(exc) or type(exc).__name__, 1)
    channel.close()
    return Section("", 0)


def _probe(client: paramiko.SSHClient, host: InventoryHost, timeout: float, build: ScriptBuilder) -> ProbeOutput:
    where = f"{host.user}@{host.address}:{host.port}"
    nonce, script = build(host)
    text = _run(client, remote_command(script), timeout, where)
    output = parse_output(text, nonce)
    if output.get("clock") is None:
        tail = text.strip()[-300:] or "no output"
        raise _ProbeError("command", f"the status probe did not run on {where}: {tail}")
    return output


def _run(client: paramiko.SSHClient, command: str, timeout: float, where: str) -> str:
    """Run one command; return its output (stderr merged), bounded in time and size."""
    deadline = time.monotonic() + timeout
    too_slow = f"the status probe on {where} did not finish within {timeout:g}s"
    transport = client.get_transport()
    if transport is None:
        raise _ProbeError("ssh", f"the SSH connection to {where} closed before the probe ran")
    channel = transport.open_session(timeout=timeout)
    try:
        channel.set_combine_stderr(True)
        channel.exec_command(command)
        chunks: list[bytes] = []
        size = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _ProbeError("timeout", too_slow)
            channel.settimeout(remaining)
            try:
                data = channel.recv(65536)
            except TimeoutError:
                raise _ProbeError("timeout", too_slow) from None
            if not data:
                break
            size += len(data)
            if size > MAX_OUTPUT_BYTES:
                raise _ProbeError("command", f"the status probe on {where} printed over {MAX_OUTPUT_BYTES} bytes")
            chunks.append(data)
        return b"".join(chunks).decode("utf-8", errors="replace")
    finally:
        channel.close()
