"""Devices reached through a remote shell (ssh, adb shell): a private temp dir, files pushed once, cleanup.

``RemoteShellDevice`` needs two things from a subclass: ``_shell_argv(command)``, the host command that runs
a POSIX shell command string on the device, and ``_push(pairs)``, which copies local files to device paths;
``_connection_error(output)`` may turn the transport's failure signs into one line, and ``temp_parent`` names
where the temp dir goes (default ``$TMPDIR`` or /tmp).
Every command string it sends is built with ``shlex.quote`` from fixed words and device paths it made itself;
the remote Python is split with ``shlex.split`` and each word quoted again (a leading ``~/`` stays the device
user's home).
"""
from __future__ import annotations

import hashlib
import re
import secrets
import shlex
import subprocess
from pathlib import Path
from typing import Optional, Sequence

from edgesep.devices.base import DeviceError
from edgesep.errors import EXIT_USAGE
from edgesep.devices.harness import RUNNER_PATH, RunnerDevice, RunnerOutput

_SAFE_DIR = re.compile(r"^/[A-Za-z0-9._/+-]+$")
_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
EXIT_NOT_FOUND = 127
RUNNER_PID_FILE = ".runner.pid"
EXIT_NOT_EXECUTABLE = 126


def content_hash(path: Path) -> str:
    """sha256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def device_name(path: Path, digest: str) -> str:
    """A device-side file name: the content hash, then the local name made shell- and scp-safe."""
    safe = _NAME_CHARS.sub("_", path.name).strip("._") or "file"
    return f"{digest[:16]}-{safe[-60:]}"


def _quote_home(word: str) -> str:
    """``shlex.quote(word)``, except that a leading ``~/`` still means the device user's home."""
    if word.startswith("~/"):
        return '"$HOME"/' + shlex.quote(word[2:])
    return shlex.quote(word)


class RemoteShellDevice(RunnerDevice):
    """A device with a POSIX shell: runner, models and data go to a private ``mktemp -d`` dir (mode 700)."""

    # Word the shell expands to the parent of the temp dir; subclasses may use a fixed path instead.
    temp_parent = '"${TMPDIR:-/tmp}"'
    command_timeout = 120.0
    # Bound of the first command (making the temp dir); None: command_timeout. ssh sets it near ConnectTimeout,
    # since a server that accepts TCP and stalls after its banner would otherwise keep ssh waiting forever.
    first_contact_timeout: Optional[float] = None

    def __init__(self, target: str, remote_python: Optional[str] = None) -> None:
        super().__init__()
        self.target = target
        self.remote_python = remote_python or "python3"
        try:
            self.python_words = shlex.split(self.remote_python)
        except ValueError as e:  # unbalanced quotes
            raise DeviceError(f"--remote-python {self.remote_python!r}: {e}", exit_code=EXIT_USAGE) from None
        if not self.python_words:
            raise DeviceError("--remote-python must not be empty", exit_code=EXIT_USAGE)
        self.remote_dir: Optional[str] = None
        self._creating: Optional[str] = None  # name of a temp dir being made, until its path is known
        self._pushed: dict[str, str] = {}  # content hash -> device path
        self._runner_remote: Optional[str] = None

    # ---- what subclasses provide
    def _shell_argv(self, command: str) -> list[str]:
        """The host command that runs the shell ``command`` on the device."""
        raise NotImplementedError

    def _push(self, pairs: Sequence[tuple[Path, str]]) -> None:
        """Copy each local file to its device path (raising ``DeviceError`` on failure)."""
        raise NotImplementedError

    def _connection_error(self, output: RunnerOutput) -> Optional[str]:
        """A one-line message when the connection itself failed (subclasses know their tool's signs)."""
        return None

    # ---- shell helpers
    def shell(self, command: str, what: str, timeout: Optional[float] = None) -> str:
        """Run ``command`` on the device and return its stdout; ``DeviceError`` naming ``what`` on failure."""
        argv = self._shell_argv(command)
        timeout = timeout or self.command_timeout
        try:
            proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
        except FileNotFoundError:
            raise DeviceError(f"{argv[0]} not found on this machine: install it to reach {self.target}") from None
        except subprocess.TimeoutExpired:
            raise DeviceError(self._timeout_message(what, timeout)) from None
        if proc.returncode != 0:
            output = RunnerOutput(proc.returncode, None, proc.stderr.decode("utf-8", "replace").splitlines())
            raise DeviceError(self._connection_error(output)
                              or f"{what} on {self.target} failed ({proc.returncode}): {output.tail_text()}")
        return proc.stdout.decode("utf-8", "replace")

    def _timeout_message(self, what: str, timeout: float) -> str:
        """The one line for a command that did not end within ``timeout`` seconds."""
        return f"{what} on {self.target} timed out after {timeout:.0f} s"

    def _make_temp_dir(self) -> str:
        # The name is chosen here, before the device makes it (mkdir fails if it exists, like mktemp), so an
        # interruption between "made on the device" and "path received" still knows what to remove.
        self._creating = f"edgesep.{secrets.token_hex(4)}"
        command = (f"umask 077 && d={self.temp_parent}/{self._creating} && mkdir -m 700 \"$d\" "
                   f"&& printf '%s\\n' \"$d\"")
        try:
            made = self.shell(command, "creating a temp dir", timeout=self.first_contact_timeout)
        except DeviceError:  # the command failed: nothing was made (only an interruption leaves it unknown)
            self._creating = None
            raise
        lines = [ln.strip() for ln in made.splitlines() if ln.strip()]
        path = lines[-1] if lines else ""
        if not _SAFE_DIR.match(path) or not path.endswith("/" + self._creating) or ".." in path.split("/"):
            raise DeviceError(f"unexpected temp dir from mkdir on {self.target}: {path!r}")
        self._creating = None
        return path

    # ---- RunnerDevice hooks
    def _stage(self, models: Sequence[Path], data: Optional[Path]) -> tuple[list[str], Optional[str]]:
        if self.remote_dir is None:
            self.remote_dir = self._make_temp_dir()
        files = [RUNNER_PATH, *models, *([data] if data else [])]
        todo: list[tuple[Path, str]] = []
        remote: list[str] = []
        for path in files:
            digest = content_hash(path)
            if digest not in self._pushed:
                self._pushed[digest] = f"{self.remote_dir}/{device_name(Path(path), digest)}"
                todo.append((Path(path).resolve(), self._pushed[digest]))
            remote.append(self._pushed[digest])
        if todo:
            try:
                self._push(todo)
            except DeviceError:
                for _, dest in todo:
                    self._pushed = {k: v for k, v in self._pushed.items() if v != dest}
                raise
        self._runner_remote = remote[0]
        return remote[1:1 + len(models)], (remote[-1] if data else None)

    def _runner_argv(self, args: Sequence[str]) -> list[str]:
        """The runner command, tracked (see ``_tracked``)."""
        python = " ".join(_quote_home(w) for w in self.python_words)
        # TMPDIR points into the private folder, so what the interpreter packages write there (onnxruntime
        # leaves a .ses file in $TMPDIR on import) goes away with it
        tmpdir = f"TMPDIR={shlex.quote(self.remote_dir)} " if self.remote_dir else ""
        return self._shell_argv(self._tracked(f"{tmpdir}{python} {shlex.join([self._runner_remote, *args])}"))

    def _tracked(self, command: str) -> str:
        """``command`` (one simple command) run in the background with its PID in the private folder, so that
        ``cleanup`` can end it when the host went away mid-run (watchdog, Ctrl-C, SIGTERM); the shell stays in
        between and waits, so a runner killed by a signal ends as exit 128+N from the shell instead of taking
        the session down with it (ssh would then exit 255)."""
        pidfile = shlex.quote(f"{self.remote_dir}/{RUNNER_PID_FILE}")
        return f"{command} & echo $! > {pidfile}; wait $!; exit $?"

    def _transport_error(self, output: RunnerOutput) -> Optional[str]:
        return self._connection_error(output) or self._python_missing(output)

    def _python_missing(self, output: RunnerOutput) -> Optional[str]:
        """The message for a remote Python that is not there (exit 126/127 from the device's shell)."""
        if output.returncode in (EXIT_NOT_FOUND, EXIT_NOT_EXECUTABLE) and output.document is None:
            return (f"remote Python {self.remote_python!r} not found or not executable on {self.target} "
                    f"({output.tail_text(1)}): install Python 3.9+ with numpy there or pass --remote-python")
        return None

    def cleanup(self) -> None:
        """Remove the device temp dir (``rm -rf``); safe to call twice. Raises ``DeviceError`` if it fails."""
        if self.remote_dir is not None:
            path = shlex.quote(self.remote_dir)
        elif self._creating:  # interrupted while the folder was being made: its name is ours, its parent a word
            path = f"{self.temp_parent}/{self._creating}"
        else:
            return
        self.remote_dir = self._creating = None
        self._pushed.clear()
        self.shell(cleanup_script(path), "removing the temp dir")


def cleanup_script(quoted: str) -> str:
    """Shell script ending a runner still running from the private folder ``quoted`` (a shell word: its PID
    file, checked against the process's command line) and removing the folder."""
    return (f"p=$(cat {quoted}/{RUNNER_PID_FILE} 2>/dev/null) && case \"$(tr '\\000' ' ' < /proc/$p/cmdline "
            f"2>/dev/null)\" in *{quoted}/*) kill -9 \"$p\" 2>/dev/null;; esac; rm -rf -- {quoted}")
