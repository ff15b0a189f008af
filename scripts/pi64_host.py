"""Host-side plumbing of the emulated Pi (helper of scripts/emulated_pi.py): one-line errors, progress on
stderr, commands, binfmt_misc, mounts and the processes of a chroot.

Standard library only, like emulated_pi.py and pi64_rootfs.py.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Optional, Sequence


class PiError(Exception):
    """A failure of the emulated Pi's setup, said in one line (the CLI prints it as ``emulated_pi: error: ...``).

    ``output`` holds the whole output of the command that failed, when one did.
    """

    output = ""


# ---------------------------------------------------------------- progress on stderr

class Progress:
    """Numbered steps on stderr; on a terminal the current step's elapsed time and last log line tick along."""

    def __init__(self, total: int) -> None:
        self.total, self.index, self.label, self.detail = total, 0, "", ""
        self.tty = sys.stderr.isatty()
        self.started = self.step_started = time.monotonic()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def step(self, label: str) -> None:
        self._end_line()
        self.index, self.label, self.detail, self.step_started = self.index + 1, label, "", time.monotonic()
        if not self.tty:
            print(f"emulated_pi: [{self.index}/{self.total}] {label}", file=sys.stderr, flush=True)
        elif self._thread is None:
            self._thread = threading.Thread(target=self._tick, daemon=True)
            self._thread.start()

    def note(self, line: str) -> None:
        self.detail = line.strip()[:60]

    def _line(self) -> str:
        secs = int(time.monotonic() - self.step_started)
        return f"emulated_pi: [{self.index}/{self.total}] {self.label} {secs // 60}:{secs % 60:02d} {self.detail}"

    def _tick(self) -> None:
        while not self._stop.wait(0.5):
            print("\r\033[K" + self._line(), end="", file=sys.stderr, flush=True)

    def _end_line(self) -> None:
        if self.tty and self.index:
            print("\r\033[K" + self._line(), file=sys.stderr, flush=True)

    def done(self) -> float:
        self._stop.set()
        if self._thread:
            self._thread.join()
        self._end_line()
        self.index = 0
        return time.monotonic() - self.started


def run(argv: Sequence[str], what: str, progress: Optional[Progress] = None, log: Optional[Path] = None,
        env: Optional[dict] = None, timeout: float = 1800) -> str:
    """Run a command, feeding its output lines to ``progress`` and ``log``; PiError with its last line on failure."""
    lines: list[str] = []
    try:
        proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                errors="replace", stdin=subprocess.DEVNULL, env=env)
    except FileNotFoundError:
        raise PiError(f"{what}: {argv[0]} not found") from None
    deadline = time.monotonic() + timeout
    try:
        with open(log or os.devnull, "a", buffering=1) as out:  # line-buffered: the log can be followed
            for line in proc.stdout:
                lines.append(line)
                out.write(line)
                if progress and line.strip():
                    progress.note(line)
                if time.monotonic() > deadline:
                    proc.kill()
    except BaseException:  # interrupted: the command goes too (mmdebstrap then undoes its own mounts)
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise
    code = proc.wait()
    if code != 0:
        last = next((ln.strip() for ln in reversed(lines) if ln.strip()), f"exit {code}")
        error = PiError(f"{what} failed: {last[:200]}" + (f" (log: {log})" if log else ""))
        error.output = "".join(lines)
        raise error
    return "".join(lines)


# ---------------------------------------------------------------- host checks

def check_root() -> None:
    if os.geteuid() != 0:
        raise PiError("must run as root (it uses chroot, mounts and binfmt_misc); try: sudo "
                      + " ".join([Path(sys.executable).name, *sys.argv]))


def check_space(folder: Path, need: int, what: str) -> None:
    """PiError when ``folder``'s disk has less than ``need`` bytes free."""
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if free < need:
        raise PiError(f"no space: {free / 2**30:.1f} GiB free in {folder}, {what} needs {need / 2**30:.0f} GiB "
                      "(set EDGESEP_PI64_CACHE to a folder on a bigger disk)")


BINFMT = Path("/proc/sys/fs/binfmt_misc")


def ensure_binfmt() -> str:
    """Make sure arm64 binaries run through qemu-user (mount binfmt_misc, enable qemu-aarch64); returns its entry.

    The entry must have the F flag (interpreter opened at registration), so arm64 programs run inside the
    chroot without a copy of qemu in it; Debian's qemu-user-static registers it that way.
    """
    if not (BINFMT / "register").exists():
        if subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)],
                          capture_output=True).returncode != 0:
            raise PiError(f"no binfmt_misc: cannot mount {BINFMT} (a container without it cannot run arm64 "
                          "binaries; run on a VM or host, or mount it there)")
    entry = BINFMT / "qemu-aarch64"
    if not entry.exists() or "enabled" not in entry.read_text():
        if not shutil.which("update-binfmts") or not Path("/usr/bin/qemu-aarch64-static").exists():
            raise PiError("qemu-user-static and binfmt-support are not installed "
                          "(apt-get install --no-install-recommends qemu-user-static binfmt-support)")
        subprocess.run(["update-binfmts", "--enable", "qemu-aarch64"], capture_output=True)
    if not entry.exists() or "enabled" not in entry.read_text():
        raise PiError("qemu-aarch64 is not registered with binfmt_misc (update-binfmts --enable qemu-aarch64 failed)")
    text = entry.read_text()
    flags = re.search(r"^flags: *(\S*)", text, re.M)
    if not flags or "F" not in flags.group(1):
        raise PiError("the qemu-aarch64 binfmt entry lacks the F flag (install Debian's qemu-user-static, "
                      "whose entry is fixed, so a chroot needs no qemu copy)")
    return text


# ---------------------------------------------------------------- mounts and chroot

def mounts_under(root: Path) -> list[str]:
    """Mount points at or below ``root``, deepest (most recent) first."""
    prefix = str(root.resolve())
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].encode().decode("unicode_escape")
            if point == prefix or point.startswith(prefix + "/"):
                found.append(point)
    return found[::-1]


def unmount_all(root: Path) -> None:
    """Unmount everything at or below ``root``; PiError naming what stays mounted."""
    for _ in range(3):
        points = mounts_under(root)
        if not points:
            return
        for point in points:
            subprocess.run(["umount", point], capture_output=True)
        time.sleep(0.2)
    for point in mounts_under(root):
        subprocess.run(["umount", "-l", point], capture_output=True)
    left = mounts_under(root)
    if left:
        raise PiError(f"cannot unmount {left[0]} (busy)")


def mount_all(rootfs: Path, cpuinfo: Path) -> None:
    """/proc (with an aarch64 cpuinfo over the host's), /dev and /dev/pts for programs run in the chroot.

    ai-edge-litert segfaults in allocate_tensors under qemu when /proc/cpuinfo is the host's x86 one.
    """
    unmount_all(rootfs)  # a half-mounted rootfs is mounted afresh
    steps = [["mount", "-t", "proc", "proc", str(rootfs / "proc")],
             ["mount", "--bind", str(cpuinfo), str(rootfs / "proc" / "cpuinfo")],
             ["mount", "--bind", "/dev", str(rootfs / "dev")],
             ["mount", "-t", "devpts", "-o", "newinstance,ptmxmode=0666", "devpts", str(rootfs / "dev" / "pts")]]
    try:
        for argv in steps:
            proc = subprocess.run(argv, capture_output=True, text=True)
            if proc.returncode != 0:
                raise PiError(f"{' '.join(argv)} failed: {proc.stderr.strip()[:200]}")
    except PiError:
        unmount_all(rootfs)
        raise


def processes_in(rootfs: Path) -> list[int]:
    """Pids whose root directory is ``rootfs`` or below it (the sshd and everything its sessions started)."""
    target, pids = str(rootfs.resolve()), []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                root = os.readlink(entry / "root")
                if root == target or root.startswith(target + "/"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def kill_all(rootfs: Path, grace: float = 5.0) -> None:
    """TERM, then KILL, every process running in ``rootfs``."""
    for sig, wait in ((15, grace), (9, 5.0)):
        pids = processes_in(rootfs)
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while processes_in(rootfs) and time.monotonic() < deadline:
            time.sleep(0.1)
    if processes_in(rootfs):
        raise PiError(f"processes in {rootfs} survive SIGKILL: {processes_in(rootfs)}")


def remove_tree(path: Path) -> None:
    """Delete a folder we made, after making sure nothing is mounted in it (never crosses into a mount)."""
    if path.exists():
        kill_all(path)
        unmount_all(path)
        shutil.rmtree(path)
