"""``edgesep worker``: a real Ray node (``ray start --block``) offering this host's devices, or the head.

Three shapes, each a node with its own raylet, object store and node IP:
- the head (``--head``): on 127.0.0.1 unless ``--listen ADDR``; Ray's token authentication on by default;
- a worker joining a head on another host: binds the network only at ``--listen ADDR``;
- a worker joining a head on this machine: on its own loopback address (``--listen 127.0.0.2``), so one
  machine can hold a head and several "hosts" that each own their devices; all traffic stays on 127/8.
The node runs in its own session with a private temp folder; on Ctrl-C or SIGTERM edgesep stops it, ends
the processes it started by id and removes the folder. Ray is not imported here (``ray start`` is a child).
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import time
from typing import Callable, Optional

from edgesep.errors import EdgesepError, UsageError
from edgesep.supervise import python_module
from edgesep.fleet.cluster import (AUTH_ENV, DEFAULT_PORT, LOOPBACK_ENV, PROTECT_HINT, TOKEN_FILE, is_loopback,
                                   split_address, token_mode)

WORKER_PORTS = (10002, 19999)  # Ray's default range for its worker processes' ports
STARTED = "Ray runtime started"
STOP_SECS = 30.0
# Ray (2.60 too) cannot bind a node to one loopback address but 127.0.0.1: every gRPC server of a node (the
# raylet's node manager and object manager, each worker process) is built with listen_to_localhost_only =
# (node_ip_address == "127.0.0.1") and GrpcServer::Run (src/ray/rpc/grpc_server.cc) then listens on
# "127.0.0.1:PORT", else on "0.0.0.0:PORT" (gRPC makes that the dual-stack [::]). The raylet has no flag and no
# RAY_ setting naming a bind address (the gflags, RayConfig entries and RAY_* environment names in Ray 2.60's
# raylet and _raylet.so were checked; _system_config only sets RayConfig entries); the pull requests binding
# the node IP (ray-project/ray#55484, #59852) do not show in Ray 2.60's raylet, which on 127.0.0.2 listens on
# [::] (test_fleet_nodes checks every socket). So a worker on 127.0.0.2 says so, once it has seen such a socket.
RAYLET_WILDCARD = ("Ray listens on every interface at port(s) {ports} of this node (its raylet; its worker processes "
                   "too): Ray binds them to one address only when that is exactly 127.0.0.1 (here {addr}) and has no "
                   "setting to change it; on a machine others can reach, firewall them or use a private network")


@dataclasses.dataclass(frozen=True)
class NodeCommand:
    """How to start one node: the argv of ``ray start``, its environment, and what to tell the user."""

    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    bind: str
    port: int
    head: bool
    head_address: Optional[tuple[str, int]]
    warnings: tuple[str, ...]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def node_command(address: Optional[str], listen: Optional[str], resources: dict[str, float], head: bool,
                 port: int = DEFAULT_PORT, num_cpus: Optional[int] = None) -> NodeCommand:
    """The node ``edgesep worker`` would start.

    Raises:
        UsageError: a network address would be bound without ``--listen``, a port Ray's workers use, ...
    """
    ray_start = [*python_module("edgesep.fleet.raynode"), "start"]
    if head:
        bind, head_address, env, warnings = _head(listen, port)
        argv = [*ray_start, "--head", f"--port={port}", "--include-dashboard=false"]
    else:
        bind, head_address, env, warnings = _joining(address, listen)
        argv = [*ray_start, f"--address={head_address[0]}:{head_address[1]}"]
    argv += [f"--node-ip-address={bind}", f"--resources={json.dumps(resources)}", "--disable-usage-stats",
             "--block", *([f"--num-cpus={num_cpus}"] if num_cpus is not None else [])]
    return NodeCommand(argv=tuple(argv), env=tuple(env.items()), bind=bind, port=port if head else 0, head=head,
                       head_address=head_address, warnings=tuple(warnings))


def _head(listen: Optional[str], port: int):
    if WORKER_PORTS[0] <= port <= WORKER_PORTS[1]:
        raise UsageError(f"--port {port}: Ray's worker processes use ports {WORKER_PORTS[0]}-{WORKER_PORTS[1]}; "
                         f"choose one outside (default {DEFAULT_PORT})")
    bind = listen or "127.0.0.1"
    if is_loopback(bind) and bind not in ("127.0.0.1", "localhost"):
        raise UsageError(f"--listen {bind}: a head on loopback is on 127.0.0.1 (Ray binds other loopback "
                         "addresses on every interface)")
    _check_local(bind)
    env = {AUTH_ENV: os.environ.get(AUTH_ENV, "token")}
    warnings = []
    if is_loopback(bind):
        env[LOOPBACK_ENV] = "0"  # Ray's single-machine mode: every port on 127.0.0.1
        bind = "127.0.0.1"
    elif env[AUTH_ENV] == "token":
        warnings.append(f"Ray listens on {bind}: token authentication is on, but Ray's traffic is not encrypted: "
                        "keep it on a private network or turn on Ray's TLS (RAY_USE_TLS=1 and its certificates)")
    else:
        warnings.append(PROTECT_HINT.format(addr=bind))
    return bind, None, env, warnings


def _joining(address: Optional[str], listen: Optional[str]):
    if not address:
        raise UsageError("edgesep worker needs --address HEAD:PORT (or --head to start the head)")
    host, head_port = split_address(address)
    env = {LOOPBACK_ENV: "1"}  # a node joining a cluster: Ray's multi-node mode
    if is_loopback(host):
        if listen is None or not is_loopback(listen) or listen in ("127.0.0.1", "localhost"):
            raise UsageError("the head is on this machine: give this node its own loopback address, e.g. --listen "
                             "127.0.0.2 (or give the devices to the head itself)")
        _check_local(listen)
        return listen, ("127.0.0.1" if host == "localhost" else host, head_port), env, []
    if listen is None:
        raise UsageError(f"joining {host} binds this node's Ray ports on the network: add --listen ADDR "
                         "(this host's address on a network you trust)")
    _check_local(listen)
    return listen, (host, head_port), env, [PROTECT_HINT.format(addr=listen)]


def _check_local(addr: str) -> None:
    import socket

    try:
        with socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET) as s:
            s.bind((addr.strip("[]"), 0))
    except OSError:
        raise UsageError(f"--listen {addr}: not an address of this machine") from None


def run_node(node: NodeCommand, say: Callable[[str], None]) -> int:
    """Run the node until Ctrl-C or SIGTERM (raised here as KeyboardInterrupt); returns ray's exit code.

    Whatever ends it, the node's processes are stopped (SIGTERM to ``ray start``, then by id) and its temp
    folder removed.
    """
    from edgesep.fleet.session import probe_head, ray_temp_dir
    from edgesep.io import open_log

    if node.head_address is not None:
        probe_head(*node.head_address)
    env = {**os.environ, **dict(node.env), "RAY_USAGE_STATS_ENABLED": "0"}
    if node.head:
        _ensure_token(env)
        say(f"edgesep: Ray token authentication is on; copy {TOKEN_FILE} to every host that joins (workers and "
            "sweeps use it when it is there)" if env[AUTH_ENV] == "token" else
            f"edgesep: Ray token authentication is off ({AUTH_ENV}={env[AUTH_ENV]})")
    else:
        token_mode(env)
    for warning in node.warnings:
        say("edgesep: warning: " + warning)
    with ray_temp_dir() as tmp:
        env["TMPDIR"] = str(tmp)  # the node's model cache and scratch files go with it
        argv = [*node.argv, f"--temp-dir={tmp}"]  # its own session folder, also beside a head on this machine
        log = tmp / "ray-start.log"
        with open_log(log) as f:
            child = subprocess.Popen(argv, env=env, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        try:
            return _watch(child, log, node, say)
        finally:
            _stop(child)


def _ensure_token(env: dict) -> None:
    if env[AUTH_ENV] == "token" and not os.path.isfile(os.path.expanduser(TOKEN_FILE)):
        subprocess.run([*python_module("edgesep.fleet.raynode"), "get-auth-token", "--generate"],
                       capture_output=True, env=env, check=False, timeout=120)


def _watch(child: subprocess.Popen, log, node: NodeCommand, say: Callable[[str], None]) -> int:
    from edgesep.errors import last_line
    from edgesep.fleet.session import read_text

    from edgesep.interrupt import checkpoint

    up = False
    while child.poll() is None:
        checkpoint()  # a signal whose exception was swallowed while the node started
        if not up and STARTED in read_text(log):
            up = True
            _say_wildcard(child, node, say)
            where = f"head on {node.bind}:{node.port}" if node.head else \
                f"node {node.bind} joined {node.head_address[0]}:{node.head_address[1]}"
            say(f"edgesep: {where}; Ctrl-C stops it")
        time.sleep(0.2)
    if not up or child.returncode:
        said = [ln for ln in read_text(log).splitlines() if ln.strip() and "INFO" not in ln]
        raise EdgesepError(f"ray start failed (exit {child.returncode}): {last_line(chr(10).join(said[-3:]))}")
    return child.returncode


def _say_wildcard(child: subprocess.Popen, node: NodeCommand, say: Callable[[str], None]) -> None:
    """Warn when the node, on loopback, listens on every interface (Ray does so but on 127.0.0.1): the ports seen."""
    from edgesep.fleet.cluster import is_loopback
    from edgesep.fleet.session import descendants, wildcard_ports

    if not is_loopback(node.bind):
        return  # bound to a network address on purpose: the protection hint was given
    ports = wildcard_ports(descendants(child.pid))
    if ports:
        say("edgesep: warning: " + RAYLET_WILDCARD.format(ports=", ".join(map(str, ports)), addr=node.bind))


def _stop(child: subprocess.Popen) -> None:
    from edgesep.fleet.session import descendants, reap

    family = descendants(child.pid)
    if child.poll() is None:
        child.terminate()  # ray start --block stops its processes on SIGTERM
        try:
            child.wait(timeout=STOP_SECS)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    reap(family)  # whatever outlived it (agents, workers), by id
