#!/usr/bin/env python3
"""An emulated aarch64 Raspberry Pi on this machine: arm64 Debian under qemu-user, reached over SSH.

    python scripts/emulated_pi.py up [--json]      # build (~6-9 min) or restore (~30 s) and start it
    python scripts/emulated_pi.py status [--json]  # exit 0 when up, 3 when not
    python scripts/emulated_pi.py down             # stop it: no mounts, processes or listeners left
    python scripts/emulated_pi.py build            # only build the cache (a running instance keeps running)

``up --json`` prints what edgesep needs to reach it::

    {"target": "ssh://pi@127.0.0.1:PORT", "ssh_config": PATH,
     "pythons": {"ai-edge-litert": "/home/pi/venv-litert/bin/python",
                 "tflite-runtime": "/home/pi/venv-tflite/bin/python"}, "machine": "aarch64"}

then ``edgesep bench m.tflite --device TARGET --ssh-config PATH --remote-python PYTHON``. The device is a
chroot of the rootfs described in pi64_rootfs.py, with its own arm64 OpenSSH server on 127.0.0.1 (a free port,
key-only login for user ``pi``, a fresh host key per ``up`` pinned in the client's known_hosts) and
``QEMU_CPU=cortex-a76`` for every program it starts. Latency measured there is emulated (hundreds of times
slower than a Pi): it proves the ssh path, the runner and the aarch64 runtimes, not timing.

Needs root (chroot, mounts, binfmt_misc), Debian's qemu-user-static and binfmt-support, and for a build
mmdebstrap and zstd. Helpers: pi64_rootfs.py (the recipe, build and cache), pi64_host.py (progress,
commands, binfmt_misc, mounts, processes). Everything it writes is under ``$EDGESEP_PI64_CACHE`` (default
~/.cache/edgesep/pi64): ``rootfs-<recipe hash>.tar.zst`` (the cache), ``build-<hash>/`` while building
(removed after a failure), ``live/`` (the running instance, removed by ``down``), and the logs of the last
build and sshd start (``build.log``, ``sshd.log``).
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pi64_host as host  # noqa: E402  (the helpers beside this script)
import pi64_rootfs as fs  # noqa: E402
from pi64_host import PiError  # noqa: E402

SSHD_CONFIG = "/etc/ssh/edgesep_sshd_config"
HOST_KEY = "/etc/ssh/edgesep_host_ed25519"
START_TIMEOUT = 120.0  # seconds for the emulated sshd to listen and accept a first login


def live() -> Path:
    return fs.home() / "live"


def rootfs() -> Path:
    return live() / "rootfs"


def pythons() -> dict:
    return {name: f"/home/{fs.USER}/{folder}/bin/python" for name, (folder, _) in fs.VENVS.items()}


@contextlib.contextmanager
def locked() -> Iterator[None]:
    """One up/down at a time per cache folder."""
    fs.home().mkdir(parents=True, exist_ok=True)
    with open(fs.home() / "lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


# ---------------------------------------------------------------- state

STATE_KEYS = {"pid": int, "port": int, "rootfs": str, "target": str, "ssh_config": str, "pythons": dict}


def read_state() -> Optional[dict]:
    """live/state.json, or None when it is missing or damaged (then the instance counts as stale)."""
    try:
        state = json.loads((live() / "state.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict) or not all(isinstance(state.get(k), t) and not isinstance(state.get(k), bool)
                                              for k, t in STATE_KEYS.items()) or "machine" not in state:
        return None
    return state


def write_state(state: dict) -> None:
    tmp = live() / "state.json.tmp"
    tmp.write_text(json.dumps(state, indent=1) + "\n")
    os.replace(tmp, live() / "state.json")


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


def is_up(state: Optional[dict]) -> bool:
    """The recorded sshd still runs in our rootfs and accepts connections."""
    return bool(state) and state["pid"] in host.processes_in(rootfs()) and listening(state["port"])


def public(state: dict) -> dict:
    return {key: state[key] for key in ("target", "ssh_config", "pythons", "machine")}


# ---------------------------------------------------------------- up

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    for old in (path, Path(f"{path}.pub")):
        old.unlink(missing_ok=True)
    host.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edgesep-pi64", "-f", str(path)], "ssh-keygen")
    return Path(f"{path}.pub").read_text().strip()


def write_keys(port: int) -> Path:
    """Fresh host and client keys; the client's ssh_config pins the host key; returns the ssh_config path."""
    host_pub = keygen(rootfs() / HOST_KEY.lstrip("/"))
    client_pub = keygen(live() / "id_ed25519")
    ssh_dir = rootfs() / "home" / fs.USER / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    (ssh_dir / "authorized_keys").write_text(client_pub + "\n")
    for path, mode in ((ssh_dir, 0o700), (ssh_dir / "authorized_keys", 0o600)):
        os.chown(path, fs.UID, fs.UID)
        path.chmod(mode)
    (live() / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub}\n")
    config = live() / "ssh_config"
    config.write_text(
        f"# the emulated Pi of scripts/emulated_pi.py (port {port}); host-key checking stays on\n"
        f"Host 127.0.0.1 pi64\n  HostName 127.0.0.1\n  Port {port}\n  User {fs.USER}\n"
        f"  IdentityFile {live() / 'id_ed25519'}\n  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {live() / 'known_hosts'}\n  GlobalKnownHostsFile /dev/null\n"
        "  StrictHostKeyChecking yes\n  PasswordAuthentication no\n  KbdInteractiveAuthentication no\n")
    config.chmod(0o600)
    return config


def write_sshd_config(port: int) -> None:
    (rootfs() / SSHD_CONFIG.lstrip("/")).write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {HOST_KEY}\nPidFile none\n"
        "AuthorizedKeysFile .ssh/authorized_keys\nPubkeyAuthentication yes\nPasswordAuthentication no\n"
        f"KbdInteractiveAuthentication no\nUsePAM no\nPermitRootLogin no\nAllowUsers {fs.USER}\nUseDNS no\n"
        f"Subsystem sftp internal-sftp\nSetEnv QEMU_CPU={fs.QEMU_CPU}\nMaxStartups 30:50:60\n"
        "LoginGraceTime 120\nLogLevel ERROR\n")
    (rootfs() / "run" / "sshd").mkdir(mode=0o755, parents=True, exist_ok=True)


def start_sshd(port: int, config: Path) -> int:
    """Start the chrooted arm64 sshd and wait until a real login answers ``uname -m``; returns its pid."""
    log = open(fs.home() / "sshd.log", "wb")  # outside live/: kept to read after a failed start
    proc = subprocess.Popen(["chroot", str(rootfs()), "/usr/sbin/sshd", "-D", "-e", "-f", SSHD_CONFIG],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=fs.chroot_env(),
                            start_new_session=True)
    log.close()
    deadline = time.monotonic() + START_TIMEOUT
    while not listening(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = (fs.home() / "sshd.log").read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise PiError(f"the emulated sshd did not start: {tail[0][:200]}")
        time.sleep(0.2)
    try:
        probe = subprocess.run(["ssh", "-F", str(config), "-o", "BatchMode=yes", "-p", str(port),
                                f"{fs.USER}@127.0.0.1", "uname -m"], capture_output=True, text=True,
                               stdin=subprocess.DEVNULL, timeout=START_TIMEOUT)
    except FileNotFoundError:
        raise PiError("ssh not found on this machine: apt-get install openssh-client") from None
    except subprocess.TimeoutExpired:
        raise PiError(f"the first login to the emulated Pi took over {START_TIMEOUT:.0f} s") from None
    if probe.returncode != 0 or probe.stdout.strip() != "aarch64":
        detail = (probe.stderr.strip().splitlines() or [probe.stdout.strip() or "no output"])[-1]
        raise PiError(f"login to the emulated Pi failed: {detail[:200]} (sshd log: {fs.home() / 'sshd.log'})")
    return proc.pid


def provide_rootfs(progress: host.Progress) -> None:
    """``live/rootfs`` from the cached tarball, or built (and cached) first; a failed build leaves nothing."""
    live().mkdir(parents=True, exist_ok=True)
    cpuinfo = live() / "cpuinfo"
    cpuinfo.write_text(fs.aarch64_cpuinfo(os.cpu_count() or 1))
    if fs.tarball().is_file():
        host.check_space(fs.home(), fs.NEEDED_FREE["restore"], "restoring the rootfs")
        fs.restore(rootfs(), progress)
        return
    build_cache(progress, cpuinfo, keep=rootfs())


def build_cache(progress: host.Progress, cpuinfo: Path, keep: Optional[Path] = None) -> None:
    """Build the rootfs of the current recipe and cache it; the built tree is moved to ``keep`` (else removed)."""
    # arch-test: mmdebstrap only recommends it, but a foreign-architecture build stops at once without it
    for tool, package in (("mmdebstrap", "mmdebstrap"), ("arch-test", "arch-test"), ("zstd", "zstd"),
                          ("ssh-keygen", "openssh-client")):
        if not shutil.which(tool):
            raise PiError(f"{tool} not found: apt-get install --no-install-recommends {package}")
    host.check_space(fs.home(), fs.NEEDED_FREE["build"], "building the rootfs")
    staging = fs.home() / f"build-{fs.recipe_key()}"
    host.remove_tree(staging)
    staging.mkdir(parents=True)
    log = fs.home() / "build.log"  # kept (outside the staging folder) to read after a failure
    log.write_text("")
    try:
        built = fs.build(staging, cpuinfo, progress, log)
        if keep is not None:
            os.replace(built, keep)
    finally:
        host.remove_tree(staging)


def build_only() -> int:
    """``build``: cache the current recipe's rootfs without touching a running instance (switch with down, up)."""
    host.check_root()
    host.ensure_binfmt()
    with locked():
        if fs.tarball().is_file():
            print(f"emulated_pi: already cached: {fs.tarball()}", file=sys.stderr)
            return 0
        progress = host.Progress(total=6)
        staging_cpuinfo = fs.home() / f"cpuinfo-{fs.recipe_key()}"
        staging_cpuinfo.write_text(fs.aarch64_cpuinfo(os.cpu_count() or 1))
        try:
            build_cache(progress, staging_cpuinfo)
        except BaseException:
            progress.done()
            raise
        finally:
            staging_cpuinfo.unlink(missing_ok=True)
        print(f"emulated_pi: built {fs.tarball()} in {progress.done():.0f} s", file=sys.stderr)
    return 0


def start(progress: host.Progress) -> dict:
    """Mount, key, and start the device on a free port; returns its state (also written to live/state.json)."""
    port = free_port()
    config = write_keys(port)
    write_sshd_config(port)
    host.mount_all(rootfs(), live() / "cpuinfo")
    progress.step(f"starting the arm64 sshd on 127.0.0.1:{port} and logging in once (emulated handshake)")
    pid = start_sshd(port, config)
    state = {"target": f"ssh://{fs.USER}@127.0.0.1:{port}", "ssh_config": str(config), "pythons": pythons(),
             "machine": "aarch64", "port": port, "pid": pid, "rootfs": str(rootfs()),
             "recipe": fs.recipe_key(), "qemu_cpu": fs.QEMU_CPU}
    write_state(state)
    return state


def up(as_json: bool) -> int:
    host.check_root()
    host.ensure_binfmt()
    with locked():
        state = read_state()
        if not is_up(state):
            teardown()
            progress = host.Progress(total=2 if fs.tarball().is_file() else 7)
            try:
                provide_rootfs(progress)
                state = start(progress)
            except BaseException:
                progress.done()
                teardown()
                raise
            secs = progress.done()
            print(f"emulated_pi: up in {secs:.0f} s", file=sys.stderr)
    show(public(state), as_json)
    return 0


# ---------------------------------------------------------------- down, status

def teardown() -> list[str]:
    """Stop every process in the live rootfs, unmount, delete live/ and stale build folders; what it did."""
    done = []
    for folder in [live(), *sorted(fs.home().glob("build-*"))]:
        if folder.exists():
            pids = host.processes_in(folder)
            host.kill_all(folder)
            mounts = host.mounts_under(folder)
            host.remove_tree(folder)
            done.append(f"removed {folder} ({len(pids)} processes stopped, {len(mounts)} mounts undone)")
    return done


def down() -> int:
    host.check_root()
    with locked():
        for line in teardown() or ["already down"]:
            print(f"emulated_pi: {line}", file=sys.stderr)
    return 0


def status(as_json: bool) -> int:
    state = read_state()
    up_now = is_up(state) if state else False
    doc = dict(public(state), rootfs=state["rootfs"], pid=state["pid"]) if up_now else {}
    building = any(fs.home().glob("build-*"))
    doc.update(state="up" if up_now else "building" if building else "stale" if live().exists() else "down",
               cache=str(fs.tarball()), cached=fs.tarball().is_file())
    if as_json:
        print(json.dumps(doc))
    else:
        print(f"{doc['state']}" + (f": {doc['target']} (--ssh-config {doc['ssh_config']})" if up_now else "")
              + f"; cache {'present' if doc['cached'] else 'absent'}: {doc['cache']}")
    return 0 if up_now else 3


def show(doc: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(doc))
        return
    print(f"emulated Pi up: {doc['target']}\n  --ssh-config {doc['ssh_config']}")
    for name, python in doc["pythons"].items():
        print(f"  --remote-python {python}   # {name}")


def _interrupted(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="emulated_pi.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("up", "build or restore, then start it"), ("status", "is it up? (exit 0 up, 3 not)"),
                       ("down", "stop it and remove the live rootfs (the cache stays)"),
                       ("build", "build and cache the current recipe's rootfs; a running one stays up")):
        cmd = sub.add_parser(name, help=text)
        if name in ("up", "status"):
            cmd.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupted)  # a killed `up` cleans up as after Ctrl-C
    try:
        if fs.home().exists() and not fs.home().is_dir():
            raise PiError(f"the cache folder {fs.home()} (EDGESEP_PI64_CACHE) is a file, not a folder")
        if args.command == "up":
            return up(args.json)
        if args.command == "build":
            return build_only()
        return down() if args.command == "down" else status(args.json)
    except PiError as e:
        print(f"emulated_pi: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # the cache folder unusable (not writable, a file in its path, disk full)
        print(f"emulated_pi: error: {e.filename or fs.home()}: {e.strerror or e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("emulated_pi: error: interrupted (cleaned up)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
