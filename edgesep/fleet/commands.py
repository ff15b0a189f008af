"""What ``edgesep sweep`` and ``edgesep worker`` do, so that ``edgesep.cli`` stays a thin parser."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence

from edgesep.errors import EdgesepError, OutputError, UsageError

Echo = Callable[..., None]


def sweep_command(plan: Optional[str], out_dir: Optional[str], address: Optional[str], resume: bool, report: bool,
                  as_csv: bool, parquet: bool, echo: Echo) -> None:
    """Run a plan into ``--out`` (and/or render ``--report``/``--csv``/``--parquet`` from its database).

    ``edgesep sweep --report DIR`` (a folder instead of a plan) only renders.
    """
    if plan is not None and Path(plan).is_dir():
        if out_dir is not None and Path(out_dir) != Path(plan):
            raise UsageError("give the sweep folder once: edgesep sweep --report DIR")
        plan, out_dir = None, plan
    if plan is not None and out_dir is None and (report or as_csv or parquet) and not Path(plan).exists():
        raise OutputError(f"{plan}: no such sweep folder or plan")
    if out_dir is None:
        raise UsageError("--out DIR is required (the folder for sweep.db and the artifacts)")
    if plan is None and not (report or as_csv or parquet):
        raise UsageError("give a PLAN.toml to run, or --report/--csv/--parquet to render an earlier sweep")
    if plan is None and (resume or address):
        raise UsageError("--resume and --address go with a PLAN.toml")
    if parquet:
        from edgesep.fleet.report import require_pyarrow

        require_pyarrow()  # before any work
    summary = None
    if plan is not None:
        summary = _run(plan, out_dir, address, resume, echo)
    _outputs(Path(out_dir), report, as_csv, parquet, echo)
    if summary is not None:
        _failures(summary, echo)


def _run(plan_path: str, out_dir: str, address: Optional[str], resume: bool, echo: Echo):
    from edgesep.fleet.cluster import require_ray, split_address
    from edgesep.fleet.plan import load_plan
    from edgesep.report.live import SweepProgress
    from edgesep.fleet.sweep import run_sweep

    plan = load_plan(plan_path)
    if address not in (None, "auto"):
        split_address(address)
    require_ray()
    with SweepProgress() as progress:
        summary = run_sweep(plan, out_dir, address=address, resume=resume, progress=progress)
    counts = summary.counts
    echo(f"sweep {summary.sweep_id} on {summary.address}: {counts.get('ok', 0)} ok, {counts.get('failed', 0)} "
         f"failed, {counts.get('requeued', 0)} requeued, {counts.get('skipped', 0)} already done; "
         f"{summary.seconds:.1f} s; results in {Path(out_dir) / 'sweep.db'}")
    return summary


def _outputs(out: Path, report: bool, as_csv: bool, parquet: bool, echo: Echo) -> None:
    from edgesep.fleet import report as render
    from edgesep.io import check_writable_dir

    if not (report or as_csv or parquet):
        return
    names = (["report.md", render.HEATMAP, render.RATIOS] if report else []) + (["sweep.csv"] if as_csv else []) \
        + (["sweep.parquet"] if parquet else [])
    if not out.is_dir():
        raise OutputError(f"{out}: no such sweep folder")
    check_writable_dir(out)  # before reading the database: a read-only folder is the folder's fault
    taken = next((name for name in names if (out / name).is_dir()), None)
    if taken:
        raise OutputError(f"{out / taken} is a folder: move it away, the report writes a file there")
    if report:
        written = render.write_report(out)
        echo(f"wrote {', '.join(written)} to {out}")
        for warning in render.chance_warnings(render.report_rows(out)):
            echo(f"edgesep: warning: {warning}", err=True)
    if as_csv:
        echo(f"wrote {render.write_csv(out)}")
    if parquet:
        echo(f"wrote {render.write_parquet(out)}")


def _failures(summary, echo: Echo) -> None:
    for device, artifact, error in summary.failures:
        echo(f"edgesep: error: {device}: {artifact}: {error}", err=True)
    for line in summary.export_errors:
        echo(f"edgesep: error: export {line}", err=True)
    failed = len(summary.failures) + len(summary.export_errors)
    if failed:
        raise EdgesepError(f"{failed} jobs failed; the others' results are in {summary.out}/sweep.db")


def worker_command(address: Optional[str], head: bool, port: int, targets: Sequence[str], listen: Optional[str],
                   num_cpus: Optional[int], options: dict, echo: Echo) -> int:
    """Check the devices answer, then run a Ray node offering them (``--head``: the head node) until Ctrl-C.

    A worker on a loopback address of the head's machine offers ``local`` as ``edgesep/local:<its address>``
    (the plan names it ``target = 'local'``, ``host = '127.0.0.2'``).
    """
    from edgesep.devices import check_device, device_resource, options_for, parse_target
    from edgesep.fleet.cluster import is_loopback, require_ray
    from edgesep.fleet.worker import node_command, run_node

    if head and address:
        raise UsageError("--head starts a new cluster; it takes no --address")
    if not targets and not head:
        raise UsageError("name the devices this node owns: --device adb:SERIAL (repeatable)")
    require_ray("edgesep worker")
    host = listen if not head and listen and is_loopback(listen) else None
    resources = {}
    for target in targets:
        parse_target(target, **options_for(target, options))
        resources[device_resource(target, host)] = 1.0
    node = node_command(address, listen, resources, head, port, num_cpus)
    for target in targets:
        check_device(target, options_for(target, options))
        echo(f"{target}: answers; offered as {device_resource(target, host)}")
    return run_node(node, lambda line: echo(line, err=True))
