"""``run_sweep``: a plan, an output folder and a Ray cluster (embedded by default) -> ``DIR/sweep.db``.

Importing this module does not import Ray; ``run_sweep`` does, and says how to install it when missing.
"""
from __future__ import annotations

import dataclasses
import socket
import time
from pathlib import Path
from typing import Any, Callable, Optional

from edgesep.errors import UsageError
from edgesep.fleet.plan import DeviceSpec, SweepPlan
from edgesep.fleet.store import DB_NAME, SweepStore


@dataclasses.dataclass(frozen=True)
class SweepSummary:
    """What one run of a plan did: counts per status, failed jobs and exports (one line each)."""

    out: str
    sweep_id: int
    address: str
    counts: dict[str, int]
    failures: tuple[tuple[str, str, str], ...]
    export_errors: tuple[str, ...]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def local_names() -> set[str]:
    """Names a plan's ``host`` may use for the machine the sweep runs on."""
    return {"localhost", "127.0.0.1", socket.gethostname(), socket.getfqdn()}


def embedded_resources(plan: SweepPlan) -> dict[str, float]:
    """The device resources the embedded instance offers: devices without ``host`` or attached here."""
    here = local_names()
    return {d.resource: 1.0 for d in plan.devices if d.host is None or d.host in here}


def _absent_hint(address: Optional[str]) -> Callable[[DeviceSpec], str]:
    def hint(spec: DeviceSpec) -> str:
        where = spec.host or "its host"
        if address is None:
            return (f"{spec.target} is attached to {where}, not this machine: run 'edgesep worker --device "
                    f"{spec.target}' there and the sweep with --address")
        return (f"no node of the cluster offers {spec.resource}: run 'edgesep worker --address HEAD:PORT --device "
                f"{spec.target}' on {where}")
    return hint


def run_sweep(plan: SweepPlan, out, *, address: Optional[str] = None, resume: bool = False,
              progress: Optional[Callable[[dict[str, Any]], None]] = None) -> SweepSummary:
    """Export every model once, measure every (artifact, device) pair, record each finished job.

    Args:
        plan: a checked plan (``edgesep.fleet.load_plan``).
        out: output folder: ``sweep.db`` and ``artifacts/``.
        address: None for an embedded loopback Ray; ``auto`` or ``HOST:PORT`` to join a cluster.
        resume: skip every job already recorded ``ok`` with the same key (else ``out`` must hold no sweep).
        progress: called with a snapshot (jobs queued/running/ok/failed per device) as work moves.
    """
    from edgesep.fleet.cluster import offered_resources, require_ray, session
    from edgesep.io import check_writable_dir, locked_dir

    require_ray()
    out = check_writable_dir(Path(out))
    t0 = time.monotonic()
    with locked_dir(out):
        if (out / DB_NAME).is_file() and not resume:
            raise UsageError(f"{out / DB_NAME} exists: add --resume to continue that sweep, or choose another --out")
        with session(address, embedded_resources(plan) if address is None else {}) as joined:
            store = SweepStore(out)  # only once Ray is up: a failed start leaves no database behind
            try:
                return _run(plan, out, store, joined, address, resume, progress, offered_resources(), t0)
            finally:
                store.close()


def _run(plan: SweepPlan, out: Path, store: SweepStore, joined: str, address: Optional[str], resume: bool,
         progress, offered: dict[str, float], t0: float) -> SweepSummary:
    from edgesep.fleet.cluster import head_addresses
    from edgesep.fleet.driver import Sweep
    from edgesep.fleet.session import HeadWatch

    sweep_id = store.begin_sweep(plan, joined)
    sweep = Sweep(plan, out, store, sweep_id, resume=resume, offered=offered, absent_hint=_absent_hint(address),
                  progress=progress, head=HeadWatch(head_addresses()))
    try:
        counts = sweep.run()
    except KeyboardInterrupt:
        store.end_sweep(sweep_id, "interrupted")
        raise
    except BaseException:  # a plan's garbage model, a lost cluster: the run is over, never left 'running'
        store.end_sweep(sweep_id, "failed")
        raise
    failures = store.failures(sweep_id)
    store.end_sweep(sweep_id, "failed" if failures or sweep.export_errors else "done")
    return SweepSummary(out=str(out), sweep_id=sweep_id, address=joined, counts=counts, failures=tuple(failures),
                        export_errors=tuple(sweep.export_errors), seconds=round(time.monotonic() - t0, 3))
