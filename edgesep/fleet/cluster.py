"""Ray for edgesep: the embedded loopback instance, joining a cluster, and ``edgesep worker`` nodes.

A Ray cluster runs whatever code its clients submit and its ports have no authentication by default
(ShadowRay, CVE-2023-48022). So the embedded default binds 127.0.0.1 with the dashboard off, and
``edgesep worker`` (a worker node or, with ``--head``, the head) binds a network address only when the user
names it with ``--listen ADDR``; then it says how to protect it. Ray is imported only inside functions.
"""
from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import sys
from pathlib import Path
from typing import Iterator, Optional

from edgesep.errors import EdgesepError, UsageError

INSTALL_HINT = "pip install 'edgesep[fleet]'"
# Ray's single-machine mode: every address it resolves for this machine is the loopback one
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
AUTH_ENV = "RAY_AUTH_MODE"  # Ray's token authentication: "token" or "disabled"
TOKEN_FILE = os.path.join("~", ".ray", "auth_token")
DEFAULT_PORT = 6379
PROTECT_HINT = ("Ray has no authentication: anyone who reaches {addr} can run code on this machine. Keep it on "
                "a private network or firewall it to the cluster's hosts, reach it through an SSH tunnel "
                "(ssh -L), or turn on Ray's TLS on every node (RAY_USE_TLS=1, RAY_TLS_SERVER_CERT, "
                "RAY_TLS_SERVER_KEY, RAY_TLS_CA_CERT).")


class RayMissing(EdgesepError):
    """Ray is not installed (the ``fleet`` extra)."""


def require_ray(command: str = "edgesep sweep") -> None:
    """Raise one line with the install command when Ray cannot be imported (without importing it)."""
    import importlib.util

    try:
        found = importlib.util.find_spec("ray") is not None
    except ValueError:  # sys.modules["ray"] is None: blocked on purpose
        found = False
    if not found:
        raise RayMissing(f"{command} needs Ray, which is not installed: {INSTALL_HINT}")


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an IP, also a short form such as 127.1, or a name) is this machine's loopback address."""
    host = host.strip("[]")
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        return socket.inet_aton(host)[0] == 127
    except OSError:
        return False


def split_address(address: str) -> tuple[str, int]:
    """``HOST[:PORT]`` -> (host, port); the port defaults to Ray's 6379."""
    text = address.strip()
    host, sep, port = text.rpartition(":")
    if not sep or (text.startswith("[") and text.endswith("]")):
        host, port = text, str(DEFAULT_PORT)
    if not _valid_host(host) or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--address {address!r}: expected auto or HOST:PORT")
    return host.strip("[]"), int(port)


def _valid_host(host: str) -> bool:
    """An IPv4 address, a bracketed IPv6 address, or a DNS name."""
    if host.startswith("[") or host.endswith("]"):
        try:
            return host.startswith("[") and host.endswith("]") and ipaddress.ip_address(host[1:-1]).version == 6
        except ValueError:
            return False
    labels = host.split(".")
    return bool(host) and len(host) < 254 and all(
        label and len(label) < 64 and all(c.isalnum() or c == "-" for c in label) for label in labels)


def _loopback_mode() -> None:
    """Make Ray resolve this machine to 127.0.0.1 and bind there (read when Ray is imported)."""
    os.environ[LOOPBACK_ENV] = "0"
    if "ray" in sys.modules:  # imported earlier in this process: Ray read the setting already
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = False


JOIN_SECS = 20.0  # ray.init against a live gRPC server that is not a usable head: give up after this


@contextlib.contextmanager
def session(address: Optional[str], resources: dict[str, float], num_cpus: Optional[int] = None) -> Iterator[str]:
    """Start the embedded loopback Ray (``address`` None) or join a cluster; yields what was joined.

    The embedded instance binds 127.0.0.1 only, has no dashboard, offers ``resources`` (the plan's devices
    attached to this machine) and lives in a private temp folder. A joined address is probed first (seconds,
    not Ray's minutes of retries). On the way out, whatever happened: Ray is shut down, the processes this
    process started for it are ended by id, the temp folder is removed.
    """
    from edgesep.fleet.session import descendants, probe_head, ray_temp_dir, reap

    require_ray()
    if address is not None and address != "auto":
        probe_head(*split_address(address))
    with ray_temp_dir() as tmp:
        before = descendants()
        try:
            yield _connect(address, resources, num_cpus, tmp)
        finally:
            started = descendants() - before
            disconnect()
            reap(started)


def _connect(address: Optional[str], resources: dict[str, float], num_cpus: Optional[int], tmp: Path) -> str:
    from edgesep.fleet.session import captured_stderr, join_failure, read_text

    if address is None or is_loopback(split_address(address)[0]) or _auto_is_loopback(address):
        _loopback_mode()
    if address is not None:
        token_mode(os.environ)
    import ray

    quiet = {"log_to_driver": False, "logging_level": "ERROR", "namespace": "edgesep", "configure_logging": True}
    handlers = _signal_handlers()
    log = tmp / "connect.log"
    try:
        with captured_stderr(log), _deadline(JOIN_SECS), _environ(TMPDIR=str(tmp)):
            if address is None:  # Ray's processes, the exports' scratch files and the model cache go to tmp
                ray.init(address="local", include_dashboard=False, num_cpus=num_cpus, resources=resources,
                         _temp_dir=str(tmp), **quiet)
                return "embedded (127.0.0.1)"
            ray.init(address=address, **quiet)
    except JoinTimeout:
        raise EdgesepError(join_failure(address or "127.0.0.1", read_text(log) + f"\nno answer in {JOIN_SECS:g} s"))
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise EdgesepError(join_failure(address or "127.0.0.1", read_text(log) + "\n" + str(e))) from None
    finally:
        _restore(handlers)  # ray.init makes SIGTERM exit at once; edgesep records interrupted jobs first
    return address


class JoinTimeout(EdgesepError):
    """ray.init did not return within JOIN_SECS."""


@contextlib.contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    """Raise ``JoinTimeout`` in the main thread after ``seconds`` (no-op elsewhere)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise JoinTimeout()

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def _environ(**values: str) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _signal_handlers() -> dict:
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return {}
    return {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}


def _restore(handlers: dict) -> None:
    import signal

    for signum, handler in handlers.items():
        if handler is not None:
            signal.signal(signum, handler)


def token_mode(env: dict) -> None:
    """Turn Ray's token authentication on in ``env`` when a token is at hand and the user set no mode.

    Heads started by ``edgesep worker --head`` require the token (``~/.ray/auth_token``, copied to every
    host); Ray itself only uses it for ``--address auto``. ``RAY_AUTH_MODE`` set by the user always wins.
    """
    if AUTH_ENV in env:
        return
    if env.get("RAY_AUTH_TOKEN") or env.get("RAY_AUTH_TOKEN_PATH") or os.path.isfile(os.path.expanduser(TOKEN_FILE)):
        env[AUTH_ENV] = "token"


def _auto_is_loopback(address: str) -> bool:
    if address != "auto":
        return False
    recorded = os.environ.get("RAY_ADDRESS") or _recorded_address()
    return bool(recorded) and is_loopback(recorded.rpartition(":")[0])


def _recorded_address() -> Optional[str]:
    """The address ``ray start`` recorded for ``ray.init(address="auto")`` on this machine."""
    import tempfile

    try:
        with open(os.path.join(tempfile.gettempdir(), "ray", "ray_current_cluster")) as f:
            return f.read().strip() or None
    except OSError:
        return None


def _short(e: BaseException) -> str:
    from edgesep.errors import last_line

    return last_line(str(e) or type(e).__name__)


def disconnect() -> None:
    """Leave the cluster (stops the embedded instance); a no-op when Ray was never (fully) imported."""
    ray = sys.modules.get("ray")
    try:
        if ray is not None and ray.is_initialized():
            ray.shutdown()
    except AttributeError:  # Ctrl-C during `import ray`: a half-initialized module, nothing started
        pass


def offered_resources() -> dict[str, float]:
    """Custom ``edgesep/...`` resources the live nodes of the cluster offer (total, not free)."""
    import ray

    return {k: v for k, v in ray.cluster_resources().items() if k.startswith("edgesep/")}


def head_addresses() -> list[tuple[str, int]]:
    """(host, port) of the GCS this process is connected to and of the raylet of its own node."""
    import ray

    context = ray.get_runtime_context()
    host, _, port = context.gcs_address.rpartition(":")
    me = context.get_node_id()
    raylet = [(n["NodeManagerAddress"], int(n["NodeManagerPort"])) for n in ray.nodes() if n["NodeID"] == me]
    return [(host.strip("[]"), int(port)), *raylet]


def nodes_offering(resource: str) -> set[str]:
    """Ids of the live nodes that offer ``resource``."""
    import ray

    return {n["NodeID"] for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get(resource, 0) >= 1}
