"""``ssh://[user@]host[:port]``: a Raspberry Pi or any Linux host, through the system ``ssh`` and ``scp``.

Using the system client means ~/.ssh/config, ssh-agent, ProxyJump and known_hosts all work as they do for the
user. edgesep always adds ``BatchMode=yes`` (never a password prompt), a connect timeout and keep-alives, and
never touches host-key checking: an unknown or changed host key is an error telling the user to check it.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import tempfile
from pathlib import Path
from typing import Optional, Sequence
from urllib.parse import urlsplit

from edgesep.devices.base import DeviceError
from edgesep.errors import EXIT_USAGE
from edgesep.devices.harness import RunnerOutput
from edgesep.devices.remote import RemoteShellDevice

SSH_FORM = "ssh://[user@]host[:port]"
DEFAULT_CONNECT_TIMEOUT = 10
_HOST = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9._-]*[A-Za-z0-9_])?$")
_IPV6 = re.compile(r"^[0-9A-Fa-f:.]+(%[A-Za-z0-9]+)?$")
_USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*\$?$")
SSH_EXIT_ERROR = 255

# (signs in ssh's stderr, message template); checked in order.
_FAILURES = (
    (("Host key verification failed", "REMOTE HOST IDENTIFICATION HAS CHANGED", "host key for"),
     "host key of {dest} is unknown or has changed ({detail}); check it and add it to known_hosts "
     "(e.g. connect once with ssh) - edgesep never disables host-key checking"),
    (("Permission denied", "Too many authentication failures", "no mutual signature"),
     "authentication refused by {dest} ({detail}); check the user, key or ssh-agent"),
    (("Connection refused", "Connection timed out", "timed out", "No route to host", "Network is unreachable",
      "Could not resolve hostname", "Name or service not known", "Connection closed by", "Connection reset",
      "kex_exchange_identification", "proxy"),
     "cannot reach {dest} ({detail})"),
)


def parse_ssh_url(url: str) -> tuple[Optional[str], str, Optional[int]]:
    """(user, host, port) of ``ssh://[user@]host[:port]``.

    Raises:
        DeviceError: the URL does not have that form (the message shows it).
    """
    bad = DeviceError(f"bad ssh target {url!r}; use {SSH_FORM}", exit_code=EXIT_USAGE)
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        raise bad from None
    if parts.scheme != "ssh" or parts.query or parts.fragment or parts.path not in ("", "/") or parts.password:
        raise bad
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        raise bad from None
    user = parts.username
    if not host or not (_HOST.match(host) or ("[" in parts.netloc and _IPV6.match(host))):
        raise bad
    if user is not None and not _USER.match(user):
        raise bad
    if port is not None and not 0 < port < 65536:
        raise bad
    return user, host, port


class SSHDevice(RemoteShellDevice):
    """A Linux host reached with the system ``ssh``/``scp``.

    Args:
        url: ``ssh://[user@]host[:port]``; user and port default to ssh's own (ssh_config, then defaults).
        ssh_config: an ssh_config file, passed as ``-F`` (then ~/.ssh/config is not read).
        remote_python: the device's Python command (default ``python3``); split like a shell would.
        connect_timeout: seconds for ssh's ``ConnectTimeout``.
    """

    def __init__(self, url: str, ssh_config: Optional[str] = None, remote_python: Optional[str] = None,
                 connect_timeout: float = DEFAULT_CONNECT_TIMEOUT) -> None:
        self.user, self.host, self.port = parse_ssh_url(url)
        super().__init__(url, remote_python)
        if ssh_config is not None and not Path(ssh_config).is_file():
            raise DeviceError(f"ssh config file not found: {ssh_config}", exit_code=EXIT_USAGE)
        self.ssh_config = str(Path(ssh_config).resolve()) if ssh_config else None
        self.connect_timeout = max(1, int(round(connect_timeout)))
        self.first_contact_timeout = float(self.connect_timeout + max(5, self.connect_timeout))
        self.destination = f"{self.user}@{self.host}" if self.user else self.host
        self.transfer: Optional[str] = None  # how files reached the device: scp, scp -O or ssh stream

    def check_answers(self) -> None:
        """DeviceError unless the host lets us log in (``edgesep worker`` before offering it)."""
        from edgesep.errors import last_line

        argv = ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={self.connect_timeout}"]
        argv += (["-F", self.ssh_config] if self.ssh_config else []) + (["-p", str(self.port)] if self.port else [])
        proc = subprocess.run(argv + [self.destination, "true"], capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise DeviceError(f"{self.target} does not answer: {last_line(proc.stderr, default='ssh failed')}")

    def _options(self) -> list[str]:
        options = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={self.connect_timeout}",
                   "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4"]
        return options + (["-F", self.ssh_config] if self.ssh_config else [])

    def _shell_argv(self, command: str) -> list[str]:
        """ssh running ``command`` under ``sh -c``, whatever the user's login shell is (bash, zsh, fish...)."""
        port = ["-p", str(self.port)] if self.port else []
        return ["ssh", *self._options(), "-T", "-x", *port, "--", self.destination, f"sh -c {shlex.quote(command)}"]

    def _scp_destination(self, remote_dir: str) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user}@{host}:{remote_dir}/" if self.user else f"{host}:{remote_dir}/"

    def _push(self, pairs: Sequence[tuple[Path, str]]) -> None:
        """Copy the files with scp (SFTP protocol); where the host has no SFTP subsystem (dropbear, minimal
        images: scp says "Connection closed") with the legacy scp protocol (``scp -O``), and where that fails
        too, streamed over the ssh channel (``cat > file``). ``transfer`` records which one worked."""
        failed = None
        for legacy in (False, True):
            proc = self._scp(pairs, legacy)
            if proc.returncode == 0:
                self.transfer = "scp -O" if legacy else "scp"
                return
            failed = RunnerOutput(proc.returncode, None, proc.stderr.decode("utf-8", "replace").splitlines())
            if self._known_failure(failed):  # the host is unreachable or refuses us: no other way will work
                raise DeviceError(self._known_failure(failed))
        try:
            self._stream(pairs)
        except DeviceError as e:
            raise DeviceError(f"copying files to {self.target} failed: {failed.tail_text(1)}; over the ssh "
                              f"channel: {e}") from None
        self.transfer = "ssh stream"

    def _scp(self, pairs: Sequence[tuple[Path, str]], legacy: bool) -> subprocess.CompletedProcess:
        """One scp call: the files are linked under their device names in a private local dir first."""
        with tempfile.TemporaryDirectory(prefix="edgesep-push-") as staging:
            sources = []
            for local, remote in pairs:
                link = Path(staging, os.path.basename(remote))
                os.symlink(Path(local).resolve(), link)
                sources.append(str(link))
            port = ["-P", str(self.port)] if self.port else []
            argv = ["scp", "-q", *(["-O"] if legacy else []), *self._options(), *port, "--", *sources,
                    self._scp_destination(self.remote_dir)]
            try:
                return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                                      timeout=self.command_timeout + 60 * len(pairs))
            except FileNotFoundError:
                raise DeviceError("scp not found on this machine: install openssh-client") from None
            except subprocess.TimeoutExpired:
                raise DeviceError(f"copying files to {self.target} timed out") from None

    def _stream(self, pairs: Sequence[tuple[Path, str]]) -> None:
        """Each file through ``cat > PATH`` on the device, fed on ssh's stdin."""
        for local, remote in pairs:
            argv = self._shell_argv(f"cat > {shlex.quote(remote)}")
            try:
                with open(local, "rb") as source:
                    proc = subprocess.run(argv, stdin=source, capture_output=True,
                                          timeout=self.command_timeout + 60)
            except subprocess.TimeoutExpired:
                raise DeviceError(f"streaming {Path(local).name} timed out") from None
            if proc.returncode != 0:
                output = RunnerOutput(proc.returncode, None, proc.stderr.decode("utf-8", "replace").splitlines())
                raise DeviceError(self._connection_error(output) or output.tail_text(1))

    def _timeout_message(self, what: str, timeout: float) -> str:
        if timeout == self.first_contact_timeout:
            return (f"cannot reach {self.target}: no SSH session within {timeout:.0f} s (ConnectTimeout "
                    f"{self.connect_timeout} s + {timeout - self.connect_timeout:.0f} s); the server accepted the "
                    "connection but did not complete the SSH handshake")
        return super()._timeout_message(what, timeout)

    def _known_failure(self, output: RunnerOutput) -> Optional[str]:
        """One line when ssh's stderr shows a known failure (host key, authentication, unreachable)."""
        lines = [ln.strip() for ln in output.stderr_tail if ln.strip() and not ln.startswith(("@", "INFO: "))]
        for signs, template in _FAILURES:
            for line in reversed(lines):
                if any(sign.lower() in line.lower() for sign in signs):
                    return template.format(dest=self.target, detail=line[:200])
        return None

    def _connection_error(self, output: RunnerOutput) -> Optional[str]:
        """One line for ssh's own failures (exit 255: refused, timed out, auth, host key)."""
        if output.returncode != SSH_EXIT_ERROR:
            return None
        known = self._known_failure(output)
        if known:
            return known
        lines = [ln.strip() for ln in output.stderr_tail if ln.strip() and not ln.startswith(("@", "INFO: "))]
        return f"ssh to {self.target} failed ({lines[-1][:200] if lines else 'no message from ssh'})"
