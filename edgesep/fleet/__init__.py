"""Device fleets: ``edgesep sweep`` over many models, devices and hosts, on Ray.

A plan (TOML) names models, devices and bench settings (``edgesep.fleet.plan``); the sweep exports every
model once as Ray tasks, measures every (artifact, device) pair on one Ray actor per device, placed on the
node that owns the device (``edgesep.fleet.tasks``), and records each finished job in ``DIR/sweep.db``
(``edgesep.fleet.store``); ``edgesep.fleet.report`` renders report.md, plots and CSV/Parquet from it.

Importing this package does not import Ray: only running a sweep or a worker does.
"""
from __future__ import annotations

from edgesep.fleet.plan import DeviceSpec, ModelSpec, PlanError, SweepPlan, device_resource, load_plan
from edgesep.fleet.sweep import SweepSummary, run_sweep

__all__ = ["DeviceSpec", "ModelSpec", "PlanError", "SweepPlan", "SweepSummary", "device_resource", "load_plan",
           "run_sweep"]
