"""Android phones through the system ``adb`` client (Debian package ``adb`` or Android platform-tools).

Targets: ``adb`` (the only attached device) and ``adb:SERIAL`` (running the client and choosing the device:
``edgesep.devices.adb_client``). ``prepare()`` makes a private folder ``/data/local/tmp/edgesep.XXXXXX``
(mode 700) and pushes the models and a runner; ``run()`` measures and pulls the results back; ``cleanup()``
removes the folder (also after a failed prepare or run).

Two runners:

* ``benchmark_model``: TFLite's native benchmark tool, pushed from ``benchmark_binary`` (e.g. the prebuilt
  ``android_aarch64_benchmark_model``) or found on the device (``/data/local/tmp/benchmark_model`` or on
  PATH). edgesep's settings become its flags (``--num_threads``, ``--num_runs``, ``--warmup_runs``,
  ``--min_secs``, ``--max_secs``, ``--use_gpu``/``--use_nnapi``/``--use_xnnpack``,
  ``--enable_op_profiling``); it runs once per model (``edgesep.devices.adb_benchmark``) and its log is parsed
  by ``edgesep.devices.benchmark_model``, memory lines included. It prints summary statistics only, so those
  results have ``samples_ms=None`` and a note saying so.
* ``python``: edgesep's own ``runner.py`` where the device has ``python3`` (e.g. Termux), giving the same
  result fields as the SSH device.

``runner="auto"`` takes benchmark_model when a binary is given or found on the device (and no accuracy
data is asked for), else python3, else fails with what to install. ``cpu_mask`` (hex, e.g. ``f0`` for the
big cores of many phones) runs either runner under ``taskset``.

Device facts go in each result's ``host``: ``ro.product.model``, ABI, Android version, per-core
``cpuinfo_max_freq`` and the thermal zones before and after the run; a warning lands in
``extra["warnings"]`` when the temperature rose enough to suspect throttling.
"""
from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any, Optional, Sequence

from edgesep.devices.adb_benchmark import BenchmarkModelSession
from edgesep.devices.adb_client import (PROP_KEYS, AdbClient, AttachedDevice, adb_error, choose_device,
                                        describe_devices, find_adb, parse_devices_output, parse_kv, props_script)
from edgesep.devices.base import BenchConfig, BenchResult, DeviceError, ProgressFn
from edgesep.devices.harness import RunnerOutput, check_inputs
from edgesep.devices.remote import RemoteShellDevice
from edgesep.errors import EXIT_USAGE, last_line

__all__ = ["AdbDevice", "AttachedDevice", "choose_device", "describe_devices", "find_adb", "parse_devices_output",
           "parse_temps", "throttle_warning"]

REMOTE_BASE = "/data/local/tmp"
RUNNERS = ("auto", "benchmark_model", "python")
RC_MARK = "@edgesep-rc="
THROTTLE_RISE_C = 10.0   # a rise this large during one bench suggests the SoC clocked down
THROTTLE_HOT_C = 80.0    # or ending this hot


# ------------------------------------------------------------------------------------------------
# device facts

def parse_temps(text: str) -> dict[str, float]:
    """``{zone type: °C}`` from lines ``TYPE VALUE`` (millidegrees or degrees), skipping absurd readings."""
    temps: dict[str, float] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 2:
            continue
        try:
            value = float(parts[1])
        except ValueError:
            continue
        celsius = value / 1000.0 if abs(value) >= 1000 else value
        if -40.0 < celsius < 150.0:
            name, n = parts[0], 2
            while name in temps:
                name, n = f"{parts[0]}#{n}", n + 1
            temps[name] = celsius
    return temps


THERMAL_SCRIPT = ("for z in /sys/class/thermal/thermal_zone*; do [ -r \"$z/temp\" ] && "
                  "echo \"$(cat \"$z/type\" 2>/dev/null || basename \"$z\") $(cat \"$z/temp\" 2>/dev/null)\"; done")
FREQ_SCRIPT = ("for c in /sys/devices/system/cpu/cpu[0-9]*; do [ -r \"$c/cpufreq/cpuinfo_max_freq\" ] && "
               "echo \"$(basename \"$c\") $(cat \"$c/cpufreq/cpuinfo_max_freq\")\"; done")


def throttle_warning(before: dict[str, float], after: dict[str, float]) -> Optional[str]:
    """A warning when a thermal zone rose by ``THROTTLE_RISE_C`` or ended above ``THROTTLE_HOT_C``; else None."""
    rises = {k: after[k] - before[k] for k in after if k in before}
    if rises:
        zone = max(rises, key=rises.get)
        if rises[zone] >= THROTTLE_RISE_C:
            return (f"temperature rose {rises[zone]:.1f} °C during the run ({zone}: {before[zone]:.1f} -> "
                    f"{after[zone]:.1f} °C); the phone may have throttled its clocks: let it cool and rerun")
    if after:
        zone = max(after, key=after.get)
        if after[zone] >= THROTTLE_HOT_C:
            return (f"{zone} ended at {after[zone]:.1f} °C; the phone may have throttled its clocks: "
                    "let it cool and rerun")
    return None


# ------------------------------------------------------------------------------------------------
# the device

class AdbDevice(RemoteShellDevice):
    """An Android device reached through adb (see the module docstring).

    Args:
        serial: the adb serial; None means the only attached device.
        benchmark_binary: local path of TFLite's benchmark_model built for the phone, pushed and used.
        cpu_mask: hex CPU affinity mask for ``taskset`` (e.g. ``f0``).
        adb_path: the adb executable (default: ``adb`` on PATH).
        adb_server_port: the adb server port (default: adb's own, 5037 or ANDROID_ADB_SERVER_PORT).
        runner: ``auto``, ``benchmark_model`` or ``python``.
        op_profiling: ask benchmark_model for its per-op profile (``--enable_op_profiling``).
        remote_python: the device's Python for the python runner (default ``python3``).
    """

    temp_parent = REMOTE_BASE

    def __init__(self, serial: Optional[str] = None, benchmark_binary: Optional[str] = None,
                 cpu_mask: Optional[str] = None, adb_path: Optional[str] = None,
                 adb_server_port: Optional[int] = None, runner: str = "auto", op_profiling: bool = False,
                 remote_python: Optional[str] = None, **unused: Any):
        extra = sorted(k for k, v in unused.items() if v not in (None, False, (), ""))
        if extra:
            raise DeviceError(f"adb devices take no option {', '.join(extra)}", exit_code=EXIT_USAGE)
        if runner not in RUNNERS:
            raise DeviceError(f"unknown adb runner {runner!r}; use one of {', '.join(RUNNERS)}",
                              exit_code=EXIT_USAGE)
        mask = str(cpu_mask)[2:] if cpu_mask is not None and str(cpu_mask).startswith("0x") else cpu_mask
        if mask is not None and (not re.fullmatch(r"[0-9a-fA-F]+", str(mask)) or int(str(mask), 16) == 0):
            raise DeviceError(f"cpu mask {cpu_mask!r} is not a non-zero hex mask (e.g. f0 for CPUs 4-7)",
                              exit_code=EXIT_USAGE)
        if benchmark_binary is not None and not Path(benchmark_binary).is_file():
            raise DeviceError(f"benchmark binary {benchmark_binary} not found", exit_code=EXIT_USAGE)
        if runner == "python" and benchmark_binary:
            raise DeviceError("a benchmark binary was given but the python runner was asked for",
                              exit_code=EXIT_USAGE)
        super().__init__(f"adb:{serial}" if serial else "adb", remote_python)
        self.serial = serial
        self.benchmark_binary = Path(benchmark_binary) if benchmark_binary else None
        self.cpu_mask = mask
        self.client = AdbClient(adb_path, int(adb_server_port) if adb_server_port else None)
        self.runner = runner
        self.op_profiling = op_profiling
        self.facts: dict[str, Any] = {}
        self.chosen_runner: Optional[str] = None
        self.bm: Optional[BenchmarkModelSession] = None

    def check_answers(self) -> None:
        """DeviceError unless the phone is attached and online (``edgesep worker`` before offering it)."""
        choose_device(self.client.devices(), self.serial)

    # -- RemoteShellDevice hooks ------------------------------------------------------------------
    def _shell_argv(self, command: str) -> list[str]:
        return self.client.command("shell", command, serial=self.serial)

    def _push(self, pairs: Sequence[tuple[Path, str]]) -> None:
        for local, remote in pairs:
            self.push(local, remote)

    def _runner_argv(self, args: Sequence[str]) -> list[str]:
        words = [*self.python_words, self._runner_remote, *args]
        return self._shell_argv(f"cd {shlex.quote(self.remote_dir)} || exit 1; "
                                + self._tracked(f"{self.taskset_prefix()}{shlex.join(words)}"))

    def _connection_error(self, output: RunnerOutput) -> Optional[str]:
        """The adb client exits 0 with cut output when the device goes away: ask adb whether it is still there."""
        if output.document is not None:
            return None
        state = self.client.run("get-state", serial=self.serial, timeout=15)
        if state.returncode == 0 and state.stdout.strip() == "device":
            return None
        now = state.stdout.strip() or adb_error(state.stderr).replace("error: ", "") or "gone"
        return f"lost adb device {self.serial} during the command (adb now says: {now})"

    # -- shell, push, pull -------------------------------------------------------------------------
    def sh(self, script: str, timeout: float = 120.0) -> tuple[int, str, str]:
        """Runs a device shell script; returns (exit code, stdout, stderr).

        The exit code travels as a marker line, so a connection lost mid-command (which the adb client
        reports as a clean exit) is caught.

        Raises:
            DeviceError: the device went away or adb failed before the script ended.
        """
        proc = self.client.run("shell", f"{script}\necho \"{RC_MARK}$?\"", serial=self.serial, timeout=timeout)
        out = proc.stdout
        idx = out.rfind(RC_MARK)
        if idx < 0:
            raise DeviceError(self._connection_error(RunnerOutput(proc.returncode, None, []))
                              or f"adb shell on {self.serial} failed: {adb_error(proc.stderr + out) or 'no output'}")
        rc = int(out[idx + len(RC_MARK):].split()[0])
        return rc, out[:idx], proc.stderr

    def shell(self, command: str, what: str, timeout: Optional[float] = None) -> str:
        """Runs ``command``; its stdout, or ``DeviceError`` naming ``what`` (also when the device vanished)."""
        rc, out, err = self.sh(command, timeout=timeout or self.command_timeout)
        if rc != 0:
            raise DeviceError(f"{what} on {self.target} failed (exit {rc}): {last_line(err or out, default='')}")
        return out

    def push(self, local: Path, remote: str, timeout: float = 300.0) -> None:
        proc = self.client.run("push", str(local), remote, serial=self.serial, timeout=timeout)
        if proc.returncode != 0:
            raise DeviceError(f"adb push {Path(local).name} to {self.serial} failed: "
                              f"{adb_error(proc.stderr + proc.stdout)}")

    def pull(self, remote: str, local: Path, timeout: float = 300.0) -> None:
        proc = self.client.run("pull", remote, str(local), serial=self.serial, timeout=timeout)
        if proc.returncode != 0:
            raise DeviceError(f"adb pull {remote} from {self.serial} failed: "
                              f"{adb_error(proc.stderr + proc.stdout)}")

    # -- prepare -------------------------------------------------------------------------------
    def connect(self) -> AttachedDevice:
        """Resolves the target to one online device and reads its facts."""
        dev = choose_device(self.client.devices(), self.serial)
        self.serial = dev.serial
        self.target = f"adb:{dev.serial}"
        py = shlex.quote(self.python_words[0])
        out = self.shell(props_script(PROP_KEYS) + f"; echo @freq; {FREQ_SCRIPT}; echo @tools; "
                         f"command -v {py} >/dev/null 2>&1 && echo python=yes; "
                         "command -v taskset >/dev/null 2>&1 && echo taskset=yes; "
                         f"[ -x {REMOTE_BASE}/benchmark_model ] && echo bm={REMOTE_BASE}/benchmark_model || "
                         "{ p=$(command -v benchmark_model) && echo bm=$p; }; true", "reading device facts")
        props_part, _, rest = out.partition("@freq")
        freq_part, _, tools_part = rest.partition("@tools")
        props, tools = parse_kv(props_part), parse_kv(tools_part)
        freqs = {}
        for line in freq_part.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit() and parts[0][3:].isdigit():
                freqs[parts[0]] = int(parts[1])
        self.facts = {
            "serial": dev.serial, "model": props.get("ro.product.model") or dev.model,
            "manufacturer": props.get("ro.product.manufacturer") or None,
            "abi": props.get("ro.product.cpu.abi") or None, "android": props.get("ro.build.version.release") or None,
            "sdk": props.get("ro.build.version.sdk") or None, "platform": props.get("ro.board.platform") or None,
            "serialno": props.get("ro.serialno") or None,
            "cpu_max_khz": [freqs[k] for k in sorted(freqs, key=lambda c: int(c[3:]))],
            "has_python": tools.get("python") == "yes", "has_taskset": tools.get("taskset") == "yes",
            "benchmark_model_on_device": tools.get("bm"),
        }
        return dev

    def _pick_runner(self, models: Sequence[Path], data: Optional[Path]) -> str:
        has_bm = bool(self.benchmark_binary or self.facts.get("benchmark_model_on_device"))
        wants_python = self.runner == "python" or (self.runner == "auto" and (
            data is not None or not has_bm or any(Path(m).suffix.lower() != ".tflite" for m in models)))
        if wants_python and self.facts.get("has_python"):
            return "python"
        if self.runner == "python" or not has_bm:
            raise DeviceError(
                f"no runner on adb device {self.serial}: it has no {self.remote_python} and no benchmark_model "
                f"(in {REMOTE_BASE} or on PATH); pass --benchmark-binary PATH (TFLite's prebuilt "
                "android_aarch64_benchmark_model) or install python3 with numpy and ai-edge-litert (Termux)")
        if data is not None:
            raise DeviceError(f"accuracy data needs the python runner, and adb device {self.serial} has no "
                              f"{self.remote_python}")
        return "benchmark_model"

    def prepare(self, models: Sequence[Path], data: Optional[Path] = None) -> None:
        """Pushes the models, the runner and the data into a fresh private folder on the device."""
        check_inputs(models, data)
        self.bm = None
        self.connect()
        self.chosen_runner = self._pick_runner(models, data)
        if self.cpu_mask and not self.facts.get("has_taskset"):
            raise DeviceError(f"adb device {self.serial} has no taskset, so cpu mask {self.cpu_mask} cannot be applied")
        try:
            if self.chosen_runner == "python":
                super().prepare(models, data)
            else:
                self._models = [Path(m) for m in models]
                self.remote_dir = self._make_temp_dir()
                self.bm = BenchmarkModelSession(self)
                self.bm.stage(self._models, self.benchmark_binary)
        except BaseException:
            try:
                self.cleanup()
            except DeviceError:
                pass
            raise

    # -- run -----------------------------------------------------------------------------------
    def _thermal(self) -> dict[str, float]:
        try:
            return parse_temps(self.shell(THERMAL_SCRIPT + "; true", "reading thermal zones", timeout=30))
        except DeviceError:
            return {}

    def taskset_prefix(self) -> str:
        """``taskset MASK `` when a CPU mask was asked for, else empty."""
        return f"taskset {self.cpu_mask} " if self.cpu_mask else ""

    def run(self, config: BenchConfig, progress: Optional[ProgressFn] = None) -> list[BenchResult]:
        """Measures every prepared model; one result per model, in order."""
        if self.remote_dir is None:
            raise DeviceError("nothing to run: call prepare() with the models first")
        if config.delegate == "edgetpu":
            raise DeviceError("the edgetpu delegate runs on local or ssh:// targets (a Coral on a Linux host), "
                              "not through adb")
        before = self._thermal()
        if self.bm is not None:
            results = self.bm.run(config, progress)
        else:
            results = super().run(config, progress)
        after = self._thermal()
        warning = throttle_warning(before, after)
        host = {k: v for k, v in self.facts.items() if k not in ("has_python", "has_taskset")}
        host.update(runner=self.chosen_runner, cpu_mask=self.cpu_mask, temps_before=before, temps_after=after,
                    temp_c_before=max(before.values()) if before else None,
                    temp_c=max(after.values()) if after else None)
        for r in results:
            r.host = dict(r.host or {}, **host)
            r.extra.setdefault("runner", self.chosen_runner)
            if warning:
                r.extra.setdefault("warnings", []).append(warning)
        return results

    # -- cleanup -------------------------------------------------------------------------------
    def cleanup(self) -> None:
        """Removes the private folder (``rm -rf``); safe to call twice. Raises ``DeviceError`` if it fails."""
        self.bm = None
        super().cleanup()
