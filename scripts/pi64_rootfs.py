"""The emulated Pi's root filesystem: its recipe, build, cache and mounts (helper of scripts/emulated_pi.py).

The rootfs is Debian bookworm for arm64 (``mmdebstrap --variant=apt``) with python3, python3-venv,
openssh-server and ca-certificates, a user ``pi`` and two virtualenvs installed offline from wheels that the
host downloads for the rootfs' Python (3.11, manylinux aarch64): ``/home/pi/venv-litert`` (ai-edge-litert,
numpy 2) and ``/home/pi/venv-tflite`` (tflite-runtime 2.14.0, numpy 1.26.4). Docs, man pages and locales are
never unpacked (dpkg ``path-exclude``). A finished rootfs is cached as ``rootfs-<key>.tar.zst``, where the key
hashes the recipe below: change the recipe and the next ``up`` builds a new one.

Everything lives in one folder (``$EDGESEP_PI64_CACHE``, default ~/.cache/edgesep/pi64); nothing outside it
is written, except the binfmt_misc registration of qemu-aarch64 (see ``ensure_binfmt``).

This module and emulated_pi.py use only the standard library: they set the device up before (and without)
edgesep being installed, as a user would prepare a real Pi.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Optional, Sequence

SUITE = "bookworm"
PACKAGES = ("python3", "python3-venv", "openssh-server", "ca-certificates")
EXCLUDES = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*", "/usr/share/locale/*",
            "/usr/share/lintian/*", "/usr/share/linda/*")
PLATFORMS = ("manylinux2014_aarch64",) + tuple(f"manylinux_2_{n}_aarch64" for n in (17, 24, 27, 28, 31, 34, 35, 36))
VENVS = {  # runtime name -> (venv folder under /home/pi, exact requirements)
    "ai-edge-litert": ("venv-litert", ("ai-edge-litert==2.3.0", "numpy>=2,<3")),
    "tflite-runtime": ("venv-tflite", ("tflite-runtime==2.14.0", "numpy==1.26.4")),
}
RECIPE_VERSION = 1  # bump when the build steps change in a way the constants above do not show
USER, UID = "pi", 1000
FALLBACK_MIRROR = "http://deb.debian.org/debian"
QEMU_CPU = "cortex-a76"  # a Raspberry Pi 5's core; about 10x faster than qemu's default "max" for litert
NEEDED_FREE = {"build": 3 << 30, "restore": 1 << 30}  # bytes free in the cache folder


class PiError(Exception):
    """A failure of the emulated Pi's setup, said in one line (the CLI prints it as ``emulated_pi: error: ...``)."""


def home() -> Path:
    """The one folder the emulated Pi owns (tarball cache, build staging, the live instance)."""
    return Path(os.environ.get("EDGESEP_PI64_CACHE") or Path.home() / ".cache" / "edgesep" / "pi64").absolute()


def recipe_key() -> str:
    """Hash of everything that shapes the cached rootfs (not the mirror: any Debian mirror gives the same)."""
    recipe = {"suite": SUITE, "arch": "arm64", "variant": "apt", "packages": PACKAGES, "excludes": EXCLUDES,
              "platforms": PLATFORMS, "venvs": VENVS, "user": [USER, UID], "version": RECIPE_VERSION}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def tarball() -> Path:
    return home() / f"rootfs-{recipe_key()}.tar.zst"


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
    with open(log, "a") if log else open(os.devnull, "w") as out:
        for line in proc.stdout:
            lines.append(line)
            out.write(line)
            if progress and line.strip():
                progress.note(line)
            if time.monotonic() > deadline:
                proc.kill()
    code = proc.wait()
    if code != 0:
        last = next((ln.strip() for ln in reversed(lines) if ln.strip()), f"exit {code}")
        raise PiError(f"{what} failed: {last[:200]}" + (f" (log: {log})" if log else ""))
    return "".join(lines)


# ---------------------------------------------------------------- host checks

def check_root() -> None:
    if os.geteuid() != 0:
        raise PiError("must run as root (it uses chroot, mounts and binfmt_misc); try: sudo "
                      + " ".join([Path(sys.executable).name, *sys.argv]))


def check_space(folder: Path, need: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if free < NEEDED_FREE[need]:
        raise PiError(f"no space: {free / 2**30:.1f} GiB free in {folder}, the {need} needs "
                      f"{NEEDED_FREE[need] / 2**30:.0f} GiB (set EDGESEP_PI64_CACHE to a bigger disk)")


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


def debian_mirror() -> str:
    """The Debian mirror apt already uses on this host (from /etc/apt/sources.list*), else deb.debian.org."""
    uris: list[str] = []
    for path in ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*.list"))]:
        for line in Path(path).read_text(errors="replace").splitlines() if os.path.isfile(path) else []:
            parts = re.sub(r"\[[^]]*\]", "", line.split("#")[0]).split()
            if len(parts) >= 3 and parts[0] == "deb":
                uris.append(parts[1])
    for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
        for stanza in re.split(r"\n\s*\n", Path(path).read_text(errors="replace")):
            fields = dict(re.findall(r"^([A-Za-z-]+):[ \t]*(.*)$", stanza, re.M))
            if "deb" in fields.get("Types", "").split() and fields.get("Enabled", "yes").lower() != "no":
                uris.extend(fields.get("URIs", "").split())
    for uri in uris:
        if uri.rstrip("/").endswith("/debian") and uri.startswith(("http://", "https://")):
            return uri
    return FALLBACK_MIRROR


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
    if mounts_under(rootfs):
        return
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


def aarch64_cpuinfo(cores: int) -> str:
    """A Raspberry Pi 5 style /proc/cpuinfo (Cortex-A76 cores), one entry per host core; it names the emulation."""
    core = ("processor\t: {n}\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 "
            "atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp\nCPU implementer\t: 0x41\n"
            "CPU architecture: 8\nCPU variant\t: 0x4\nCPU part\t: 0xd0b\nCPU revision\t: 1\n\n")
    return "".join(core.format(n=n) for n in range(cores)) + (
        "Revision\t: 0000\nModel\t\t: edgesep emulated Pi (qemu-aarch64, cortex-a76)\n")


def chroot_env() -> dict:
    return {"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "LANG": "C.UTF-8", "HOME": "/root",
            "QEMU_CPU": QEMU_CPU}


def in_chroot(rootfs: Path, argv: Sequence[str], what: str, progress: Optional[Progress] = None,
              log: Optional[Path] = None, user: bool = False) -> str:
    env = chroot_env()
    spec = ["--userspec", f"{UID}:{UID}"] if user else []
    if user:
        env.update(HOME=f"/home/{USER}", USER=USER)
    return run(["chroot", *spec, str(rootfs), *argv], what, progress, log, env)


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


# ---------------------------------------------------------------- build

def download_wheels(dest: Path, progress: Progress, log: Path) -> None:
    """aarch64 cp311 wheels of every venv's requirements, fetched on the host (one folder per venv)."""
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    for name, (folder, reqs) in VENVS.items():
        progress.note(name)
        run([sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--only-binary=:all:",
             "--python-version", "3.11", *platforms, "-d", str(dest / folder), *reqs],
            f"pip download {' '.join(reqs)}", progress, log)


def debootstrap(rootfs: Path, cpuinfo: Path, progress: Progress, log: Path) -> None:
    """mmdebstrap arm64; a maintainer script killed by qemu ("qemu_thread_create") is finished once by dpkg."""
    argv = ["mmdebstrap", "--mode=root", "--arch=arm64", "--variant=apt", f"--include={','.join(PACKAGES)}",
            *[f"--dpkgopt=path-exclude={p}" for p in EXCLUDES], "--dpkgopt=path-include=/usr/share/doc/*/copyright",
            SUITE, str(rootfs), debian_mirror()]
    try:
        run(argv, "mmdebstrap", progress, log, timeout=3600)
        return
    except PiError as first:
        if not (rootfs / "var/lib/dpkg/status").is_file() or not shutil.which("chroot"):
            raise
        progress.note(f"retrying: dpkg --configure -a ({first})")
    unmount_all(rootfs)
    mount_all(rootfs, cpuinfo)
    try:
        in_chroot(rootfs, ["dpkg", "--configure", "-a"], "dpkg --configure -a (after mmdebstrap failed)",
                  progress, log)
        missing = [p for p in ("usr/bin/python3", "usr/sbin/sshd") if not (rootfs / p).exists()]
        if missing:
            raise PiError(f"mmdebstrap failed and the retry left no {missing[0]} (log: {log})")
    finally:
        unmount_all(rootfs)


def configure(rootfs: Path, wheels: Path, progress: Progress, log: Path) -> None:
    """User pi, no host keys (each ``up`` makes its own), and the two venvs installed offline from ``wheels``."""
    in_chroot(rootfs, ["useradd", "--create-home", "--uid", str(UID), "--user-group", "--shell", "/bin/bash", USER],
              "useradd pi", progress, log)
    # "*": no password, yet not locked ("!"), which sshd refuses even for key logins when UsePAM is off
    in_chroot(rootfs, ["usermod", "--password", "*", USER], "usermod pi", progress, log)
    for key in rootfs.glob("etc/ssh/ssh_host_*"):
        key.unlink()
    shutil.rmtree(rootfs / "var/lib/apt/lists", ignore_errors=True)
    (rootfs / "var/lib/apt/lists/partial").mkdir(parents=True)
    shutil.copytree(wheels, rootfs / "tmp/wheels")
    subprocess.run(["chmod", "-R", "a+rX", str(rootfs / "tmp/wheels")], check=True)
    for name, (folder, reqs) in VENVS.items():
        progress.step(f"installing {name} into /home/{USER}/{folder} (emulated pip)")
        venv = f"/home/{USER}/{folder}"
        in_chroot(rootfs, ["python3", "-m", "venv", venv], f"python3 -m venv {venv}", progress, log, user=True)
        in_chroot(rootfs, [f"{venv}/bin/pip", "install", "--disable-pip-version-check", "--no-index",
                           "--find-links", f"/tmp/wheels/{folder}", *reqs], f"pip install {' '.join(reqs)}",
                  progress, log, user=True)
    shutil.rmtree(rootfs / "tmp/wheels")
    shutil.rmtree(rootfs / "root/.cache", ignore_errors=True)
    shutil.rmtree(rootfs / f"home/{USER}/.cache", ignore_errors=True)


SMOKE = ("import platform, numpy\ntry:\n    import ai_edge_litert.interpreter as m; n = 'ai_edge_litert'\n"
         "except ImportError:\n    import tflite_runtime.interpreter as m; n = 'tflite_runtime'\n"
         "import importlib.metadata as md\n"
         "print(platform.machine(), n, md.version(n.replace('_', '-')), numpy.__version__)\n")


def smoke_test(rootfs: Path, progress: Progress, log: Path) -> dict:
    """Import each venv's runtime in the chroot; {runtime: "aarch64 <package> <version> <numpy>"}."""
    seen = {}
    for name, (folder, _) in VENVS.items():
        progress.note(name)
        out = in_chroot(rootfs, [f"/home/{USER}/{folder}/bin/python", "-c", SMOKE], f"importing {name}",
                        progress, log, user=True)
        seen[name] = out.strip().splitlines()[-1]
        if not seen[name].startswith("aarch64 "):
            raise PiError(f"{name} in the rootfs does not run as aarch64: {seen[name]}")
    return seen


def build(staging: Path, cpuinfo: Path, progress: Progress) -> Path:
    """Build the rootfs in ``staging/rootfs`` and cache it as a tarball; returns the rootfs (still in staging)."""
    log = staging / "build.log"
    rootfs = staging / "rootfs"
    progress.step("downloading aarch64 wheels on the host (pip download)")
    download_wheels(staging / "wheels", progress, log)
    progress.step(f"building Debian {SUITE} arm64 (mmdebstrap under qemu; the longest step)")
    debootstrap(rootfs, cpuinfo, progress, log)
    mount_all(rootfs, cpuinfo)
    try:
        configure(rootfs, staging / "wheels", progress, log)
        progress.step("checking both runtimes import as aarch64")
        smoke_test(rootfs, progress, log)
    finally:
        kill_all(rootfs)
        unmount_all(rootfs)
    progress.step(f"caching the rootfs as {tarball().name} (tar | zstd -3)")
    partial = tarball().with_suffix(".partial")
    run(["tar", "-C", str(rootfs), "--numeric-owner", "--one-file-system", "-I", "zstd -3 -T0", "-cf",
         str(partial), "."], "tar | zstd", progress, log)
    os.replace(partial, tarball())
    return rootfs


def restore(rootfs: Path, progress: Progress) -> None:
    """Unpack the cached tarball into ``rootfs`` (an empty or missing folder)."""
    rootfs.mkdir(parents=True, exist_ok=True)
    progress.step(f"restoring the rootfs from {tarball()}")
    run(["tar", "-C", str(rootfs), "--numeric-owner", "-I", "zstd -T0", "-xpf", str(tarball())],
        "restoring the cached rootfs", progress)
