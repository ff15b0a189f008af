"""What edgesep does around Ray so a sweep or a node leaves nothing behind and never hangs on a wrong address.

- ``probe_head``: before ``ray.init`` joins a cluster, one TCP connect and one HTTP/2 greeting, each bounded by
  seconds, tell "nothing listens", "something that is not a Ray head listens" and "a gRPC server answers"
  apart (Ray itself would retry for minutes and flood stderr).
- ``ray_temp_dir``: a private, short Ray temp folder (Ray's AF_UNIX socket paths must stay under 108 bytes),
  removed again with everything Ray and the exports put there.
- ``descendants`` / ``reap``: the processes this process started (Ray's raylet and its agents), ended by id.
- ``captured_stderr``: file descriptor 2 sent to a file while Ray connects, so its retries do not flood the
  terminal; the caller turns what was said into one line.
- ``HeadWatch``: whether the head a sweep runs on (its GCS, and the raylet of the driver's node) still answers;
  Ray itself would wait 60 s for a dead GCS and then end the process without a word from edgesep.
Never imports Ray.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import tempfile
import time
from pathlib import Path
from typing import Iterator, Optional

from edgesep.errors import EdgesepError

CONNECT_SECS = 3.0
# Ray's longest socket path is TEMP/session_YYYY-MM-DD_HH-MM-SS_UUUUUU_PID/sockets/plasma_store.N
SESSION_SUFFIX = 68
UNIX_PATH_MAX = 107
HTTP2_GREETING = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
TOKEN_WORDS = ("InvalidAuthToken", "Unauthenticated", "UNAUTHENTICATED", "auth token", "authentication")


def probe_head(host: str, port: int, timeout: float = CONNECT_SECS) -> None:
    """Raise one line unless a gRPC server (a Ray head's GCS) answers at ``host:port`` within ``timeout`` s."""
    where = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(HTTP2_GREETING)
            reply = _read(s, 9)
    except socket.timeout:
        raise EdgesepError(f"no Ray head at {where}: no answer within {timeout:g} s (check --address; start "
                           "the head with 'edgesep worker --head')") from None
    except OSError as e:
        raise EdgesepError(f"no Ray head at {where}: {e.strerror or e} (check --address; start the head with "
                           "'edgesep worker --head')") from None
    if len(reply) < 9 or reply[3] != 0x04:  # a gRPC (HTTP/2) server opens with a SETTINGS frame
        raise EdgesepError(f"no Ray head at {where}: something else listens there (it does not speak gRPC); "
                           "check --address")


def _read(s: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


class HeadLost(EdgesepError):
    """The Ray head (GCS) or the raylet of the driver's node stopped answering: the sweep cannot go on."""


class HeadWatch:
    """Connects to the head's ports (the GCS, the driver's raylet) at most every ``every`` seconds.

    A port that refuses twice, half a second apart, means the process behind it is gone (a loaded one still
    accepts: the kernel queues the connection).
    """

    def __init__(self, addresses: list[tuple[str, int]], every: float = 1.0) -> None:
        self.addresses, self.every, self.checked = list(addresses), every, time.monotonic()

    def check(self, now: bool = False) -> None:
        """Raise ``HeadLost`` (one line naming the address) when a port has stopped answering."""
        if not self.addresses or (not now and time.monotonic() - self.checked < self.every):
            return
        self.checked = time.monotonic()
        down = [a for a in self.addresses if not answers(*a)]
        if down:
            time.sleep(0.5)
            down = [a for a in down if not answers(*a)]
        if down:
            host, port = down[0]
            what = "the head's GCS" if down[0] == self.addresses[0] else "the raylet of this node"
            raise HeadLost(f"the Ray head is gone: nothing answers at {host}:{port} ({what})")


def answers(host: str, port: int, timeout: float = CONNECT_SECS) -> bool:
    """Whether a TCP connect to ``host:port`` succeeds (a refused or timed-out one: False)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wildcard_ports(pids: set[int]) -> list[int]:
    """Ports on which ``pids`` listen on every interface (0.0.0.0 or ::), read from /proc (Linux; else [])."""
    inodes = set()
    for pid in pids:
        try:
            for fd in os.scandir(f"/proc/{pid}/fd"):
                link = os.readlink(fd.path)
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
        except OSError:
            continue
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for fields in (line.split() for line in lines):
            host, _, port = fields[1].partition(":")
            if fields[3] == "0A" and fields[9] in inodes and not host.strip("0"):  # LISTEN on all-zero address
                ports.add(int(port, 16))
    return sorted(ports)


def join_failure(address: str, said: str) -> str:
    """One line for a failed join: the address, and the token when Ray's words point at authentication."""
    from edgesep.errors import last_line

    if any(word in said for word in TOKEN_WORDS):
        return (f"cannot join the Ray cluster at {address}: the head refused this process's auth token (copy the "
                "head's ~/.ray/auth_token here and leave RAY_AUTH_MODE unset, or set it as on the head)")
    return f"cannot join the Ray cluster at {address}: {last_line(said, default='Ray did not connect')}"


@contextlib.contextmanager
def ray_temp_dir() -> Iterator[Path]:
    """A new private folder for Ray's session (sockets, logs, spilled objects) and the exports' scratch files.

    Under $TMPDIR when Ray's socket paths fit there, else under /tmp; removed on exit, whatever happened.
    """
    base = tempfile.gettempdir()
    if len(base) + len("/edgesep-ray-xxxxxxxx") + SESSION_SUFFIX > UNIX_PATH_MAX:
        base = "/tmp"
        if not os.access(base, os.W_OK):
            raise EdgesepError(f"$TMPDIR ({tempfile.gettempdir()}) is too long for Ray's socket paths (at most "
                               f"{UNIX_PATH_MAX - SESSION_SUFFIX - 21} characters) and /tmp is not writable")
    path = Path(tempfile.mkdtemp(prefix="edgesep-ray-", dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def descendants(pid: Optional[int] = None) -> set[int]:
    """Every live process below ``pid`` (default: this process), from /proc."""
    root = os.getpid() if pid is None else pid
    children: dict[int, set[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, set()).add(int(entry))
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), set()) - found:
            found.add(child)
            todo.append(child)
    return found


def reap(pids: set[int], grace: float = 2.0) -> None:
    """SIGTERM ``pids``, then SIGKILL whichever is still there after ``grace`` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = set()
        for pid in pids:
            try:
                os.kill(pid, sig)
                alive.add(pid)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + grace
        while alive and time.monotonic() < deadline:
            alive = {pid for pid in alive if _alive(pid)}
            time.sleep(0.05)
        pids = alive
        if not pids:
            return


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@contextlib.contextmanager
def captured_stderr(path: Path) -> Iterator[Path]:
    """Send file descriptor 2 (Ray's C++ logging too) to ``path`` inside the block."""
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.dup2(fd, 2)
        yield path
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(fd)


def read_text(path: Path) -> str:
    """The text of ``path``, or "" when it cannot be read."""
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""
