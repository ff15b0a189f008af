"""``edgesep sweep`` and ``edgesep worker``: device fleets on Ray (the optional ``fleet`` extra)."""
from __future__ import annotations

from typing import Optional

import click

from edgesep.cli.app import cli, device_options


@cli.command()
@click.argument("plan", required=False, metavar="PLAN.toml")
@click.option("--out", "out_dir", metavar="DIR", help="Folder for sweep.db, the artifacts and the report.")
@click.option("--address", metavar="auto|HOST:PORT",
              help="Join a Ray cluster (default: an embedded Ray on 127.0.0.1, dashboard off).")
@click.option("--resume", is_flag=True, help="Skip every job already recorded ok in DIR/sweep.db.")
@click.option("--report", is_flag=True, help="Render DIR/report.md and plots from the database.")
@click.option("--csv", "as_csv", is_flag=True, help="Export the job rows to DIR/sweep.csv.")
@click.option("--parquet", is_flag=True, help="Export the job rows to DIR/sweep.parquet (needs pyarrow).")
def sweep(plan: Optional[str], out_dir: Optional[str], address: Optional[str], resume: bool, report: bool,
          as_csv: bool, parquet: bool) -> None:
    """Measure a fleet: every model of PLAN.toml on every device, on Ray; 'sweep --report DIR' only renders."""
    from edgesep.fleet.commands import sweep_command

    sweep_command(plan, out_dir, address, resume, report, as_csv, parquet, echo=click.echo)


@cli.command()
@click.option("--address", metavar="HOST:PORT", help="The head node to join.")
@click.option("--head", is_flag=True, help="Start the head node of a new cluster instead.")
@click.option("--port", type=click.IntRange(1, 65535), default=6379, show_default=True, help="With --head: its port.")
@click.option("--device", "targets", multiple=True, metavar="TARGET", help="A device attached here (repeatable).")
@click.option("--listen", metavar="ADDR", help="Bind Ray to this network address (default: 127.0.0.1 only).")
@click.option("--num-cpus", type=click.IntRange(min=0), help="CPUs this node offers to export work.")
@device_options("worker")
def worker(address: Optional[str], head: bool, port: int, targets: tuple[str, ...], listen: Optional[str],
           num_cpus: Optional[int], device_options: dict) -> None:
    """Run a Ray node on this host that offers its devices to 'edgesep sweep --address' (until Ctrl-C)."""
    from edgesep.fleet.commands import worker_command

    code = worker_command(address, head, port, targets, listen, num_cpus, device_options, echo=click.echo)
    if code:
        raise click.exceptions.Exit(code)
