"""An emulated Android device for tests: a TCP server speaking the adbd wire protocol.

No phone exists in CI, so the adb tests run Debian's real ``adb`` client against this server
(``adb connect 127.0.0.1:PORT``). It speaks what adbd speaks (AOSP ``protocol.txt``,
``SERVICES.TXT``, ``SYNC.TXT``, ``shell_protocol.h``, ``file_sync_protocol.h``):

* transport messages: 24-byte header (command, arg0, arg1, data_length, data_check, magic),
  CNXN (no auth) or AUTH (``unauthorized`` mode: tokens are never accepted), OPEN / OKAY /
  WRTE / CLSE with one write in flight per stream;
* ``shell:CMD`` (raw), ``shell,v2,...:CMD`` (the shell protocol: stdout/stderr/exit packets)
  and ``exec:CMD``, run by ``/bin/sh -c`` in a sandbox; device paths under
  ``/data/local/tmp``, ``/sys/class/thermal`` and ``/sys/devices/system/cpu`` are mapped to
  folders of the sandbox (both ways: in commands and in what they print, not inside files they write);
* ``sync:`` with STAT, STA2/LST2, LIST, SEND, RECV, DATA, DONE, OKAY, FAIL and QUIT;
* ``getprop`` answering from a dict; the shell's PATH holds only a toybox-like set of tools, and
  ``python3`` only when the device is said to have one (Termux-like).

Modes: ``device`` (normal), ``unauthorized`` (answers CNXN with AUTH tokens, never accepts),
``offline`` (accepts TCP, never answers CNXN). ``disconnect_on`` unplugs the device (stops listening,
drops every connection) 0.3 s after a shell command containing that text starts: a cable pulled mid-run.

Run by hand: ``python tests/adbd_emu.py --root /tmp/phone`` then ``adb connect 127.0.0.1:PORT``.
"""
from __future__ import annotations

import argparse
import os
import queue
import re
import shlex
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Optional


def _cmd(name: str) -> int:
    return struct.unpack("<I", name.encode())[0]


A_CNXN, A_AUTH, A_OPEN, A_OKAY, A_CLSE, A_WRTE = (_cmd(n) for n in ("CNXN", "AUTH", "OPEN", "OKAY", "CLSE", "WRTE"))
A_VERSION = 0x01000001  # skips the payload checksum; we still send the byte sum (what older hosts check)
MAX_PAYLOAD = 256 * 1024
AUTH_TOKEN, AUTH_SIGNATURE, AUTH_RSAPUBLICKEY = 1, 2, 3

# shell protocol packet ids (shell_protocol.h)
SH_STDIN, SH_STDOUT, SH_STDERR, SH_EXIT, SH_CLOSE_STDIN, SH_WINSIZE = range(6)

SYNC_DATA_MAX = 64 * 1024
FEATURES = ("shell_v2", "cmd", "stat_v2", "fixed_push_mkdir")

DEFAULT_PROPS = {
    "ro.product.model": "Pixel 7",
    "ro.product.name": "panther",
    "ro.product.device": "panther",
    "ro.product.cpu.abi": "arm64-v8a",
    "ro.build.version.release": "14",
    "ro.build.version.sdk": "34",
    "ro.serialno": "EMU0001",
}

# a toybox-like tool set; python3 is added only for Termux-like devices
SHELL_TOOLS = (
    "sh", "cat", "ls", "mkdir", "rm", "rmdir", "chmod", "mktemp", "cp", "mv", "echo", "test", "[", "uname",
    "nproc", "taskset", "sleep", "head", "tail", "env", "true", "false", "dirname", "basename", "stat", "wc",
    "tr", "sed", "grep", "find", "sort", "kill", "id", "printf", "touch", "readlink", "xargs", "timeout", "cut",
    "date", "awk", "ln", "md5sum", "sha256sum",
)

# device path prefix -> folder under the emulator's root
MAPPED = ("/data/local/tmp", "/sys/class/thermal", "/sys/devices/system/cpu")


def _check(data: bytes) -> int:
    return sum(data) & 0xFFFFFFFF


def pack_message(command: int, arg0: int, arg1: int, data: bytes = b"") -> bytes:
    """One transport message: the 24-byte little-endian header, then the payload."""
    header = struct.pack("<6I", command, arg0, arg1, len(data), _check(data), command ^ 0xFFFFFFFF)
    return header + data


class PathMap:
    """Maps device paths to host paths under ``root`` and back, in command text and output."""

    def __init__(self, root: Path):
        self.root = root
        self.pairs = [(dev, str(root) + dev) for dev in MAPPED]
        for _, host in self.pairs:
            Path(host).mkdir(parents=True, exist_ok=True)
        alt = "|".join(re.escape(d) for d, _ in self.pairs)
        self._to_host = re.compile(rf"(?<![\w/])({alt})(?=/|\b|$)")
        alt_h = "|".join(re.escape(h) for _, h in self.pairs)
        self._to_dev = re.compile(rf"({alt_h})")

    def host_text(self, text: str) -> str:
        return self._to_host.sub(lambda m: str(self.root) + m.group(1), text)

    def device_bytes(self, data: bytes) -> bytes:
        text = data.decode("utf-8", "surrogateescape")
        return self._to_dev.sub(lambda m: m.group(1)[len(str(self.root)):], text).encode("utf-8", "surrogateescape")

    def host_path(self, device_path: str) -> Optional[Path]:
        for dev, host in self.pairs:
            if device_path == dev or device_path.startswith(dev + "/"):
                return Path(host + device_path[len(dev):])
        return None


class Stream:
    """One open service: incoming WRTE payloads on a queue, OKAYs from the host as a semaphore."""

    def __init__(self, conn: "Connection", local_id: int, remote_id: int):
        self.conn, self.local_id, self.remote_id = conn, local_id, remote_id
        self.incoming: "queue.Queue[Optional[bytes]]" = queue.Queue()
        self.acked = threading.Semaphore(0)
        self.closed = threading.Event()
        self.proc: Optional[subprocess.Popen] = None
        self._buf = b""
        self._wlock = threading.Lock()

    def write(self, data: bytes) -> bool:
        """Sends data in WRTE messages, waiting for the host's OKAY after each; False once closed."""
        with self._wlock:
            for i in range(0, len(data), self.conn.max_payload):
                if self.closed.is_set():
                    return False
                self.conn.send(A_WRTE, self.local_id, self.remote_id, data[i:i + self.conn.max_payload])
                while not self.acked.acquire(timeout=0.2):
                    if self.closed.is_set():
                        return False
            return True

    def read_exact(self, n: int) -> Optional[bytes]:
        while len(self._buf) < n:
            chunk = self.incoming.get()
            if chunk is None:
                return None
            self._buf += chunk
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def close(self) -> None:
        if not self.closed.is_set():
            self.closed.set()
            self.conn.send(A_CLSE, self.local_id, self.remote_id)
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


class Connection:
    """One host connection (normally the adb server's)."""

    def __init__(self, emu: "AdbdEmulator", sock: socket.socket):
        self.emu, self.sock = emu, sock
        self.lock = threading.Lock()
        self.streams: dict[int, Stream] = {}
        self.next_id = 1
        self.max_payload = 4096
        self.online = False
        self.alive = True

    def send(self, command: int, arg0: int, arg1: int, data: bytes = b"") -> None:
        if not self.alive:
            return
        try:
            with self.lock:
                self.sock.sendall(pack_message(command, arg0, arg1, data))
        except OSError:
            self.alive = False

    def _recv_exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("host closed")
            buf += chunk
        return buf

    @staticmethod
    def _end_stream(s) -> None:
        """Mark a stream closed, wake its reader, and kill the command behind it (its process group)."""
        s.closed.set()
        s.incoming.put(None)
        if s.proc and s.proc.poll() is None:
            try:
                os.killpg(s.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def drop(self) -> None:
        """Pulls the cable: closes the socket and kills every running command."""
        self.alive = False
        for s in list(self.streams.values()):
            self._end_stream(s)
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()

    def serve(self) -> None:
        try:
            while self.alive:
                header = self._recv_exact(24)
                command, arg0, arg1, length, check, magic = struct.unpack("<6I", header)
                if magic != command ^ 0xFFFFFFFF:
                    raise ConnectionError("bad magic")
                data = self._recv_exact(length) if length else b""
                self.emu.log.append((command, arg0, arg1, data[:200]))
                self.handle(command, arg0, arg1, data)
        except (ConnectionError, OSError):
            pass
        finally:
            self.drop()

    def handle(self, command: int, arg0: int, arg1: int, data: bytes) -> None:
        mode = self.emu.mode
        if command == A_CNXN:
            self.max_payload = max(4096, min(arg1, MAX_PAYLOAD))
            if mode == "offline":
                return
            if mode == "unauthorized":
                self.send(A_AUTH, AUTH_TOKEN, 0, os.urandom(20))
                return
            self.online = True
            self.send(A_CNXN, A_VERSION, MAX_PAYLOAD, self.emu.banner())
        elif command == A_AUTH:
            if arg0 == AUTH_SIGNATURE:  # never accepted: ask again, as adbd does for unknown keys
                self.send(A_AUTH, AUTH_TOKEN, 0, os.urandom(20))
            # AUTH_RSAPUBLICKEY: adbd would show a dialog on the phone; nobody presses "allow"
        elif not self.online:
            return  # messages before CONNECT are ignored
        elif command == A_OPEN:
            self.open(arg0, data.rstrip(b"\0").decode("utf-8", "replace"))
        elif command == A_OKAY:
            s = self.streams.get(arg1)
            if s:
                s.acked.release()
        elif command == A_WRTE:
            s = self.streams.get(arg1)
            if s:
                s.incoming.put(data)
                self.send(A_OKAY, s.local_id, s.remote_id)
        elif command == A_CLSE:
            s = self.streams.pop(arg1, None)
            if s:
                self._end_stream(s)

    def open(self, remote_id: int, service: str) -> None:
        handler = self.emu.service_handler(service)
        if handler is None:
            self.send(A_CLSE, 0, remote_id)
            return
        local_id = self.next_id
        self.next_id += 1
        s = Stream(self, local_id, remote_id)
        self.streams[local_id] = s
        self.send(A_OKAY, local_id, remote_id)
        threading.Thread(target=self._run_service, args=(handler, s), daemon=True).start()

    def _run_service(self, handler: Callable[[Stream], None], s: Stream) -> None:
        try:
            handler(s)
        finally:
            self.streams.pop(s.local_id, None)
            s.close()


class AdbdEmulator:
    """The emulated phone: ``start()`` listens on 127.0.0.1, ``serial`` is what adb calls it.

    Args:
        root: folder standing for the device's file system (``root/data/local/tmp`` etc.).
        props: getprop answers (defaults: a Pixel 7 on Android 14, arm64-v8a).
        mode: ``device``, ``unauthorized`` or ``offline``.
        python: whether the device's shell has ``python3`` (like Termux).
        cpu_max_khz: per-core ``cpuinfo_max_freq`` files to create.
        thermal: ``{zone_type: millidegrees}`` thermal zones to create.
    """

    def __init__(self, root: Path, props: Optional[dict[str, str]] = None, mode: str = "device",
                 python: bool = True, cpu_max_khz: tuple[int, ...] = (1800000,) * 4 + (2850000,) * 4,
                 thermal: Optional[dict[str, int]] = None):
        if mode not in ("device", "unauthorized", "offline"):
            raise ValueError(f"unknown mode {mode!r}")
        self.root = Path(root)
        self.props = dict(DEFAULT_PROPS, **(props or {}))
        self.mode = mode
        self.paths = PathMap(self.root)
        self.disconnect_on: Optional[str] = None
        self.full_disk_on: Optional[str] = None  # a push whose path contains this fails: no space left
        self.log: list[tuple[int, int, int, bytes]] = []
        self.services_opened: list[str] = []
        self.connections: list[Connection] = []
        self._sock: Optional[socket.socket] = None
        self._bin = self.root / ".emu_bin"
        self._make_bin(python)
        self._make_sysfs(cpu_max_khz, thermal if thermal is not None else {"cpu-0-0": 41000, "battery": 30000})

    # -- device side set-up ------------------------------------------------------------------
    def _make_bin(self, python: bool) -> None:
        self._bin.mkdir(parents=True, exist_ok=True)
        for tool in SHELL_TOOLS:
            path = shutil.which(tool)
            if path:
                link = self._bin / tool
                if not link.exists():
                    link.symlink_to(path)
        if python and not (self._bin / "python3").exists():
            # a wrapper that execs this very interpreter: a symlink to a virtualenv's python would lose the
            # virtualenv (Python finds pyvenv.cfg next to the path it was started as) and with it the runtimes
            wrapper = self._bin / "python3"
            wrapper.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} \"$@\"\n")
            wrapper.chmod(0o755)
        props_file = self.root / ".emu_props"
        props_file.write_text("".join(f"{k}={v}\n" for k, v in self.props.items()))
        getprop = self._bin / "getprop"
        getprop.write_text(
            "#!/bin/sh\n"
            f'PROPS="{props_file}"\n'
            'if [ -z "$1" ]; then sed \'s/^\\([^=]*\\)=\\(.*\\)$/[\\1]: [\\2]/\' "$PROPS"; exit 0; fi\n'
            'grep -m1 "^$1=" "$PROPS" | cut -d= -f2-\n'
            "exit 0\n")
        getprop.chmod(0o755)

    def _make_sysfs(self, cpu_max_khz: tuple[int, ...], thermal: dict[str, int]) -> None:
        cpu = self.paths.host_path("/sys/devices/system/cpu")
        for i, khz in enumerate(cpu_max_khz):
            d = cpu / f"cpu{i}" / "cpufreq"
            d.mkdir(parents=True, exist_ok=True)
            (d / "cpuinfo_max_freq").write_text(f"{khz}\n")
        therm = self.paths.host_path("/sys/class/thermal")
        for i, (kind, milli) in enumerate(thermal.items()):
            d = therm / f"thermal_zone{i}"
            d.mkdir(parents=True, exist_ok=True)
            (d / "type").write_text(f"{kind}\n")
            (d / "temp").write_text(f"{milli}\n")

    def thermal_file(self, index: int) -> Path:
        """Host path of ``/sys/class/thermal/thermal_zoneN/temp`` (tests heat the phone with it)."""
        return self.paths.host_path(f"/sys/class/thermal/thermal_zone{index}/temp")

    def banner(self) -> bytes:
        p = self.props
        return (f"device::ro.product.name={p['ro.product.name']};ro.product.model={p['ro.product.model']};"
                f"ro.product.device={p['ro.product.device']};features={','.join(FEATURES)}").encode()

    # -- network -------------------------------------------------------------------------------
    def start(self, port: int = 0) -> "AdbdEmulator":
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", port))
        self._sock.listen(8)
        self._port = self._sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    @property
    def port(self) -> int:
        return self._port

    @property
    def serial(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._sock.accept()
            except OSError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = Connection(self, sock)
            self.connections.append(conn)
            threading.Thread(target=conn.serve, daemon=True).start()

    def drop_all(self) -> None:
        """Pulls the cable on every connection (the listening socket stays, like a phone replugged)."""
        for c in self.connections:
            c.drop()

    def unplug(self) -> None:
        """The cable is pulled: no new connections, every current one dropped."""
        if self._sock:
            self._sock.close()
        self.drop_all()

    def stop(self) -> None:
        if self._sock:
            self._sock.close()
        self.drop_all()

    # -- services ------------------------------------------------------------------------------
    def service_handler(self, service: str) -> Optional[Callable[[Stream], None]]:
        self.services_opened.append(service)
        if service == "sync:":
            return self._sync
        m = re.match(r"^shell(,[^:]*)?:(.*)$", service, re.S)
        if m:
            args = (m.group(1) or "").split(",")
            v2 = "v2" in args
            return lambda s: self._shell(s, m.group(2), v2)
        if service.startswith("exec:"):
            return lambda s: self._shell(s, service[5:], False)
        return None

    def _env(self) -> dict[str, str]:
        tmp = str(self.paths.host_path("/data/local/tmp"))
        return {"PATH": str(self._bin), "HOME": tmp, "TMPDIR": tmp, "LANG": "C.UTF-8"}

    def _shell(self, s: Stream, command: str, v2: bool) -> None:
        if self.disconnect_on and self.disconnect_on in command:
            threading.Timer(0.3, self.unplug).start()
        argv = ["/bin/sh", "-c", self.paths.host_text(command)] if command.strip() else ["/bin/sh"]
        s.proc = subprocess.Popen(argv, cwd=self.paths.host_path("/data/local/tmp"), env=self._env(),
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE if v2 else subprocess.STDOUT, start_new_session=True)
        threading.Thread(target=self._feed_stdin, args=(s, v2), daemon=True).start()
        pumps = [threading.Thread(target=self._pump, args=(s, s.proc.stdout, SH_STDOUT, v2), daemon=True)]
        if v2:
            pumps.append(threading.Thread(target=self._pump, args=(s, s.proc.stderr, SH_STDERR, v2), daemon=True))
        for t in pumps:
            t.start()
        for t in pumps:
            t.join()
        rc = s.proc.wait()
        if v2 and not s.closed.is_set():
            s.write(struct.pack("<BI", SH_EXIT, 1) + bytes([rc & 0xFF]))

    def _pump(self, s: Stream, pipe, packet_id: int, v2: bool) -> None:
        while True:
            data = pipe.read1(32 * 1024)
            if not data:
                return
            data = self.paths.device_bytes(data)
            if not s.write(struct.pack("<BI", packet_id, len(data)) + data if v2 else data):
                return

    def _feed_stdin(self, s: Stream, v2: bool) -> None:
        stdin = s.proc.stdin
        try:
            while True:
                if v2:
                    head = s.read_exact(5)
                    if head is None:
                        break
                    pid, n = struct.unpack("<BI", head)
                    data = s.read_exact(n) if n else b""
                    if data is None:
                        break
                    if pid == SH_CLOSE_STDIN:
                        break
                    if pid == SH_STDIN:
                        stdin.write(data)
                        stdin.flush()
                else:
                    data = s.incoming.get()
                    if data is None:
                        break
                    stdin.write(data)
                    stdin.flush()
        except (BrokenPipeError, OSError):
            pass
        finally:
            try:
                stdin.close()
            except OSError:
                pass

    # -- sync ----------------------------------------------------------------------------------
    def _sync(self, s: Stream) -> None:
        while True:
            head = s.read_exact(8)
            if head is None:
                return
            ident, n = head[:4].decode("latin-1"), struct.unpack("<I", head[4:])[0]
            if ident == "QUIT":
                return
            path = (s.read_exact(n) or b"").decode("utf-8", "surrogateescape")
            handler = {"STAT": self._sync_stat_v1, "STA2": self._sync_stat_v2, "LST2": self._sync_stat_v2,
                       "LIST": self._sync_list, "SEND": self._sync_send, "RECV": self._sync_recv}.get(ident)
            if handler is None:
                self._sync_fail(s, f"unknown sync request {ident!r}")
                return
            if handler(s, ident, path) is False:
                return

    @staticmethod
    def _sync_fail(s: Stream, msg: str) -> None:
        data = msg.encode()
        s.write(b"FAIL" + struct.pack("<I", len(data)) + data)

    def _stat(self, path: str, follow: bool) -> Optional[os.stat_result]:
        host = self.paths.host_path(path)
        if host is None:
            return os.stat("/") if path in ("/", "/data", "/data/local") else None
        try:
            return os.stat(host) if follow else os.lstat(host)
        except OSError:
            return None

    def _sync_stat_v1(self, s: Stream, ident: str, path: str) -> None:
        st = self._stat(path, follow=False)
        mode, size, mtime = (st.st_mode, st.st_size, int(st.st_mtime)) if st else (0, 0, 0)
        s.write(b"STAT" + struct.pack("<3I", mode, size & 0xFFFFFFFF, mtime))

    def _sync_stat_v2(self, s: Stream, ident: str, path: str) -> None:
        st = self._stat(path, follow=ident == "STA2")
        if st is None:
            s.write(ident.encode() + struct.pack("<IQQ4IQqqq", 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0))  # ENOENT
            return
        s.write(ident.encode() + struct.pack("<IQQ4IQqqq", 0, st.st_dev, st.st_ino, st.st_mode, st.st_nlink,
                                             st.st_uid, st.st_gid, st.st_size, int(st.st_atime),
                                             int(st.st_mtime), int(st.st_ctime)))

    def _sync_list(self, s: Stream, ident: str, path: str) -> None:
        host = self.paths.host_path(path)
        names = sorted(os.listdir(host)) if host and host.is_dir() else []
        for name in names:
            st = os.lstat(host / name)
            raw = name.encode()
            s.write(b"DENT" + struct.pack("<4I", st.st_mode, st.st_size & 0xFFFFFFFF, int(st.st_mtime), len(raw)) + raw)
        s.write(b"DONE" + struct.pack("<4I", 0, 0, 0, 0))

    def _sync_send(self, s: Stream, ident: str, spec: str) -> Optional[bool]:
        path, _, mode_text = spec.rpartition(",")
        host = self.paths.host_path(path)
        tmp = None
        if self.full_disk_on and self.full_disk_on in path:
            host = None
            reason = "No space left on device"
        else:
            reason = "Read-only file system"
        if host is not None:
            try:
                host.parent.mkdir(parents=True, exist_ok=True)
                tmp = open(str(host) + ".emu_part", "wb")
            except OSError:
                tmp = None
        while True:
            head = s.read_exact(8)
            if head is None:
                return False
            ident2, n = head[:4].decode("latin-1"), struct.unpack("<I", head[4:])[0]
            if ident2 == "DATA":
                chunk = s.read_exact(n)
                if chunk is None:
                    return False
                if tmp:
                    tmp.write(chunk)
            elif ident2 == "DONE":
                if tmp is None:
                    self._sync_fail(s, f"couldn't create file: {reason} ({path})")
                    return None
                tmp.close()
                os.replace(tmp.name, host)
                os.chmod(host, int(mode_text or "420") & 0o7777)
                os.utime(host, (n, n))
                s.write(b"OKAY" + struct.pack("<I", 0))
                return None
            else:
                self._sync_fail(s, f"invalid data message {ident2!r}")
                return False

    def _sync_recv(self, s: Stream, ident: str, path: str) -> None:
        host = self.paths.host_path(path)
        try:
            f = open(host, "rb") if host else None
        except OSError:
            f = None
        if f is None:
            self._sync_fail(s, f"open failed: No such file or directory")
            return
        with f:
            while True:
                chunk = f.read(SYNC_DATA_MAX)
                if not chunk:
                    break
                s.write(b"DATA" + struct.pack("<I", len(chunk)) + chunk)
        s.write(b"DONE" + struct.pack("<I", 0))


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description="emulated adbd on 127.0.0.1 (for tests)")
    ap.add_argument("--root", required=True, help="folder standing for the device's file system")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--mode", default="device", choices=("device", "unauthorized", "offline"))
    ap.add_argument("--no-python", action="store_true", help="the device's shell has no python3")
    ap.add_argument("--prop", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args(argv)
    props = dict(p.split("=", 1) for p in args.prop)
    emu = AdbdEmulator(Path(args.root), props=props, mode=args.mode, python=not args.no_python).start(args.port)
    print(f"adbd emulator listening on {emu.serial} (adb connect {emu.serial})", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        emu.stop()
    return 0


# ------------------------------------------------------------------------------------------------
# the client side: a private adb server for tests

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AdbServer:
    """A private adb server: own port, own HOME (so its RSA key lives in a temp folder)."""

    def __init__(self, home: Path):
        self.port = _free_port()
        self.env = dict(os.environ, HOME=str(home), ANDROID_ADB_SERVER_PORT=str(self.port))
        home.mkdir(parents=True, exist_ok=True)

    def adb(self, *args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        proc = subprocess.run(["adb", "-P", str(self.port), *args], capture_output=True, text=True,
                              env=self.env, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"adb {args} failed: {proc.stderr}")
        return proc

    def states(self) -> dict[str, str]:
        from edgesep.devices.adb_client import parse_devices_output

        return {d.serial: d.state for d in parse_devices_output(self.adb("devices").stdout)}

    def wait_state(self, serial: str, state: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.states().get(serial) != state:
            if time.monotonic() > deadline:
                raise AssertionError(f"{serial} never became {state}: {self.states()}")
            time.sleep(0.05)


if __name__ == "__main__":
    sys.exit(main())
