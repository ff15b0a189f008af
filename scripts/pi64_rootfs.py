"""The emulated Pi's root filesystem: its recipe, build and cache (helper of scripts/emulated_pi.py).

The rootfs is Debian bookworm for arm64 (``mmdebstrap --variant=apt``) with python3, python3-venv,
openssh-server and ca-certificates, a user ``pi`` and two virtualenvs installed offline from wheels that the
host downloads for the rootfs' Python (3.11, manylinux aarch64): ``/home/pi/venv-litert`` (ai-edge-litert and
onnxruntime, numpy 2) and ``/home/pi/venv-tflite`` (tflite-runtime 2.14.0, numpy 1.26.4; no onnxruntime: one venv with it is
enough, and each wheel costs a cold build its emulated ``pip install``). Docs, man pages and locales are
never unpacked (dpkg ``path-exclude``). A finished rootfs is cached as ``rootfs-<key>.tar.zst``, where the key
hashes the recipe below: change the recipe and the next ``up`` builds a new one.

Everything lives in one folder (``$EDGESEP_PI64_CACHE``, default ~/.cache/edgesep/pi64); nothing outside it
is written, except the binfmt_misc registration of qemu-aarch64 (see ``pi64_host.ensure_binfmt``).

This module, pi64_host.py and emulated_pi.py use only the standard library: they set the device up before
(and without) edgesep being installed, as a user would prepare a real Pi; so PiError is their own small error
type (like devices/runner.py, they ship without edgesep).
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
from pathlib import Path
from typing import Optional, Sequence

from pi64_host import PiError, Progress, kill_all, mount_all, run, unmount_all

SUITE = "bookworm"
PACKAGES = ("python3", "python3-venv", "openssh-server", "ca-certificates")
EXCLUDES = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*", "/usr/share/locale/*",
            "/usr/share/lintian/*", "/usr/share/linda/*")
PLATFORMS = ("manylinux2014_aarch64",) + tuple(f"manylinux_2_{n}_aarch64" for n in (17, 24, 27, 28, 31, 34, 35, 36))
VENVS = {  # runtime name -> (venv folder under /home/pi, exact requirements)
    "ai-edge-litert": ("venv-litert", ("ai-edge-litert==2.3.0", "numpy>=2,<3", "onnxruntime==1.32.0")),
    "tflite-runtime": ("venv-tflite", ("tflite-runtime==2.14.0", "numpy==1.26.4")),
}
RECIPE_VERSION = 1  # bump when the build steps change in a way the constants above do not show
USER, UID = "pi", 1000
FALLBACK_MIRROR = "http://deb.debian.org/debian"
QEMU_CPU = "cortex-a76"  # a Raspberry Pi 5's core; about 10x faster than qemu's default "max" for litert
NEEDED_FREE = {"build": 3 << 30, "restore": 1 << 30}  # bytes free in the cache folder


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
    try:
        return run(["chroot", *spec, str(rootfs), *argv], what, progress, log, env)
    except PiError as e:  # qemu-user could not start a thread (a busy machine): once more
        if "qemu_thread_create" not in e.output:
            raise
    if progress:
        progress.note(f"retrying after qemu_thread_create failed: {what}")
    return run(["chroot", *spec, str(rootfs), *argv], what, progress, log, env)


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
         "import importlib.metadata as md\ntry:\n    import onnxruntime as ort; o = 'onnxruntime ' + ort.__version__\n"
         "except ImportError:\n    o = ''\n"
         "print(platform.machine(), n, md.version(n.replace('_', '-')), numpy.__version__, o)\n")


def smoke_test(rootfs: Path, progress: Progress, log: Path) -> dict:
    """Import each venv's runtimes in the chroot; {runtime: "aarch64 <package> <version> <numpy> [onnxruntime V]"}."""
    seen = {}
    for name, (folder, _) in VENVS.items():
        progress.note(name)
        out = in_chroot(rootfs, [f"/home/{USER}/{folder}/bin/python", "-c", SMOKE], f"importing {name}",
                        progress, log, user=True)
        seen[name] = out.strip().splitlines()[-1]
        if not seen[name].startswith("aarch64 "):
            raise PiError(f"{name} in the rootfs does not run as aarch64: {seen[name]}")
        if any(r.startswith("onnxruntime") for r in VENVS[name][1]) and " onnxruntime " not in seen[name]:
            raise PiError(f"onnxruntime does not import in /home/{USER}/{folder}: {seen[name]}")
    return seen


def build(staging: Path, cpuinfo: Path, progress: Progress, log: Path) -> Path:
    """Build the rootfs in ``staging/rootfs`` and cache it as a tarball (older recipes' tarballs are removed);
    returns the rootfs (still in staging). Every command's output goes to ``log``."""
    rootfs = staging / "rootfs"
    progress.step("downloading aarch64 wheels on the host (pip download)")
    download_wheels(staging / "wheels", progress, log)
    progress.step(f"building Debian {SUITE} arm64 (mmdebstrap under qemu; the longest step)")
    debootstrap(rootfs, cpuinfo, progress, log)
    mount_all(rootfs, cpuinfo)
    try:
        configure(rootfs, staging / "wheels", progress, log)
        progress.step("checking the runtimes import as aarch64")
        smoke_test(rootfs, progress, log)
    finally:
        kill_all(rootfs)
        unmount_all(rootfs)
    progress.step(f"caching the rootfs as {tarball().name} (tar | zstd -3)")
    partial = tarball().with_suffix(".partial")
    run(["tar", "-C", str(rootfs), "--numeric-owner", "--one-file-system", "-I", "zstd -3 -T0", "-cf",
         str(partial), "."], "tar | zstd", progress, log)
    os.replace(partial, tarball())
    for old in home().glob("rootfs-*.tar.zst"):
        if old != tarball():
            old.unlink()
    return rootfs


def restore(rootfs: Path, progress: Progress) -> None:
    """Unpack the cached tarball into ``rootfs`` (an empty or missing folder)."""
    rootfs.mkdir(parents=True, exist_ok=True)
    progress.step(f"restoring the rootfs from {tarball()}")
    run(["tar", "-C", str(rootfs), "--numeric-owner", "-I", "zstd -T0", "-xpf", str(tarball())],
        "restoring the cached rootfs", progress)
