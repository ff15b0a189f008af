"""Test helpers for the ssh device: a real OpenSSH server on 127.0.0.1, and cached "device" virtualenvs.

``start_sshd(workdir)`` runs Debian's /usr/sbin/sshd on a free port with throw-away host and client keys, its
own sshd_config (key auth only, no PAM, internal sftp unless ``sftp=False``, ``TMPDIR`` of every session set to
``workdir/device-tmp`` so tests can see what the device side leaves behind) and a client ssh_config that keeps
host-key checking on (``StrictHostKeyChecking yes`` with the real host key in its own known_hosts).

``device_venv(name, requirements)`` makes a virtualenv with exactly ``requirements`` under
``$EDGESEP_TEST_CACHE/venvs`` (the test run's own folder, see conftest; keyed by the requirements and this
Python), and returns its python.
"""
from __future__ import annotations

import dataclasses
import fcntl
import getpass
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

SSHD = "/usr/sbin/sshd"
ALIAS = "edgesep-device"
CACHE = Path(os.environ.get("EDGESEP_TEST_CACHE") or Path.home() / ".cache" / "edgesep-test")  # conftest sets it


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (connections are refused at once)."""
    return _free_port()


def _keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edgesep-test", "-f", str(path)],
                   check=True, capture_output=True)
    return (path.with_suffix(".pub") if path.suffix else Path(f"{path}.pub")).read_text().strip()


def client_config(path: Path, *, port: int, user: str, identity: Path, known_hosts: Path) -> Path:
    """Write an ssh_config for the test server: alias ``edgesep-device``, host-key checking on."""
    path.write_text(
        f"Host {ALIAS}\n  HostName 127.0.0.1\n  Port {port}\n\n"
        f"Host *\n  User {user}\n  IdentityFile {identity}\n  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {known_hosts}\n  GlobalKnownHostsFile /dev/null\n"
        f"  StrictHostKeyChecking yes\n  PasswordAuthentication no\n  KbdInteractiveAuthentication no\n")
    path.chmod(0o600)
    return path


@dataclasses.dataclass
class SSHServer:
    """A running sshd and the client files to reach it."""

    workdir: Path
    port: int
    user: str
    config: Path  # client ssh_config: right key, right host key
    wrong_key_config: Path  # a key the server does not accept
    wrong_host_key_config: Path  # known_hosts holding another host key
    device_tmp: Path  # TMPDIR of every ssh session
    process: subprocess.Popen

    @property
    def target(self) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}"

    @property
    def alias_target(self) -> str:
        return f"ssh://{ALIAS}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_sshd(workdir: Path, *, sftp: bool = True, path: Optional[str] = None) -> SSHServer:
    """Start sshd on 127.0.0.1 (see the module docstring); raises RuntimeError with its log if it fails.

    ``sftp=False`` starts it without an SFTP subsystem (as dropbear and minimal images come); ``path`` sets
    the sessions' PATH (e.g. one without scp).
    """
    workdir = Path(workdir)
    workdir.chmod(0o700)
    host_pub = _keygen(workdir / "host_ed25519")
    client_pub = _keygen(workdir / "client_ed25519")
    _keygen(workdir / "stranger_ed25519")
    other_host_pub = _keygen(workdir / "other_host_ed25519")
    (workdir / "authorized_keys").write_text(client_pub + "\n")
    device_tmp = workdir / "device-tmp"
    device_tmp.mkdir(mode=0o755)
    port = _free_port()
    user = getpass.getuser()
    (workdir / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {workdir / 'host_ed25519'}\nPidFile {workdir / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {workdir / 'authorized_keys'}\nPubkeyAuthentication yes\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\n"
        + ("Subsystem sftp internal-sftp\n" if sftp else "")
        + f"SetEnv TMPDIR={device_tmp}" + (f" PATH={path}" if path else "") + "\nMaxStartups 50\nMaxSessions 50\n"
        "LogLevel ERROR\n")
    known = workdir / "known_hosts"
    known.write_text(f"[127.0.0.1]:{port} {host_pub}\n")
    other_known = workdir / "other_known_hosts"
    other_known.write_text(f"[127.0.0.1]:{port} {other_host_pub}\n")
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege-separation dir
    log = open(workdir / "sshd.log", "wb")
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(workdir / "sshd_config")], stdout=log, stderr=log,
                            stdin=subprocess.DEVNULL)
    _wait_for_port(port, proc, workdir / "sshd.log")
    return SSHServer(
        workdir=workdir, port=port, user=user,
        config=client_config(workdir / "ssh_config", port=port, user=user,
                             identity=workdir / "client_ed25519", known_hosts=known),
        wrong_key_config=client_config(workdir / "ssh_config_stranger", port=port, user=user,
                                       identity=workdir / "stranger_ed25519", known_hosts=known),
        wrong_host_key_config=client_config(workdir / "ssh_config_other_host", port=port, user=user,
                                            identity=workdir / "client_ed25519", known_hosts=other_known),
        device_tmp=device_tmp, process=proc)


def _wait_for_port(port: int, proc: subprocess.Popen, log: Path, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited ({proc.returncode}): {log.read_text(errors='replace')[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"sshd did not listen on port {port}: {log.read_text(errors='replace')[-2000:]}")


def device_venv(name: str, requirements: tuple[str, ...]) -> Path:
    """Python of a cached venv holding exactly ``requirements`` (built once; RuntimeError if pip fails)."""
    key = hashlib.sha256("\n".join([sys.executable, sys.version, *requirements]).encode()).hexdigest()[:12]
    root = CACHE / "venvs"
    root.mkdir(parents=True, exist_ok=True)
    target = root / f"{name}-{key}"
    python = target / "bin" / "python"
    with open(root / f"{name}-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / ".edgesep-ready").is_file():
            return python
        shutil.rmtree(target, ignore_errors=True)
        outside = _pip_can_target_another_python()  # then the venv needs no pip of its own (no ensurepip)
        subprocess.run([sys.executable, "-m", "venv", *(["--without-pip"] if outside else []), str(target)],
                       check=True, capture_output=True)
        pip = [sys.executable, "-m", "pip", "--python", str(python)] if outside else [str(python), "-m", "pip"]
        proc = subprocess.run([*pip, "install", "-q", "--disable-pip-version-check", *requirements],
                              capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            shutil.rmtree(target, ignore_errors=True)
            raise RuntimeError(f"pip install {' '.join(requirements)} failed: {proc.stderr.strip()[-500:]}")
        (target / ".edgesep-ready").write_text(" ".join(requirements) + "\n")
    return python


def _pip_can_target_another_python() -> bool:
    """Whether this Python's pip installs into another interpreter's environment (``pip --python``, pip >= 22.3).

    A device venv made without pip and filled that way skips ensurepip, about 3 s of CPU per venv."""
    from importlib import metadata

    try:
        version = tuple(int(part) for part in metadata.version("pip").split(".")[:2])
    except (metadata.PackageNotFoundError, ValueError):
        return False
    return version >= (22, 3)
