"""``compare --profile``: where each form's time goes, per block, on every device.

After the compare's own sessions, every variant is benched once more per device with ``--profile`` (its own
timed runs for the sum/whole check, then the per-op profile of ``edgesep.devices.profile``). Ops are grouped by
the builders' layer names that survive conversion (``block3_dw``, ``block3_pw``, ``block3_sep``) and split by
what they compute (depthwise, pointwise, other), so one table and one plot answer "why is fused faster
here?". Writes ``profile.json`` (every op of every variant and device, and the block rows), ``profile.md``
and one ``profile_blocks_<device>.png`` per device into the report folder. The report.json of the compare
itself is not touched: its latencies stay those of the compare's sessions.
"""
from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from edgesep.compare.store import device_slug
from edgesep.devices.base import BenchConfig, BenchResult

PROFILE_JSON = "profile.json"
PROFILE_MD = "profile.md"


def profile_variants(doc: Mapping[str, Any], out: Path, targets: Sequence[str],
                     device_options: Mapping[str, Mapping[str, Any]], bench: BenchConfig) -> dict[str, Any]:
    """Profile every variant of a finished compare ``doc`` on every target; returns the profile document
    ``{"devices": {target: {"results": [...], "blocks": [...], "plot": "profile_blocks_....png"}}}``, also
    written as ``out/profile.json`` with ``out/profile.md`` and the plots."""
    from edgesep.io import write_json, write_text
    from edgesep.report.profile import block_markdown, block_plot, block_rows, profile_lines

    variants = list(doc.get("variants") or [])
    paths = [Path(v["file"]) for v in variants]
    config = dataclasses.replace(bench, data=None, profile=True)
    devices: dict[str, Any] = {}
    for target in targets:
        options = dict(device_options.get(target) or {})
        try:
            results = _bench_profiled(target, options, paths, config)
        except Exception as e:  # noqa: BLE001 - one device's failure leaves the others' profiles
            devices[target] = {"error": str(e) or type(e).__name__, "results": [], "blocks": []}
            continue
        reports = [{**r.to_dict(), "label": v["name"], "variant": v["id"]} for r, v in zip(results, variants)]
        rows = block_rows(reports)
        plot = f"profile_blocks_{device_slug(target)}.png"
        if rows:
            block_plot(rows, out / plot, title=f"where the time goes per block on {target}")
        devices[target] = {"error": None, "results": reports, "blocks": rows, "plot": plot if rows else None}
    document = {"devices": devices}
    write_json(out / PROFILE_JSON, document)
    write_text(out / PROFILE_MD, _markdown(devices, block_markdown, profile_lines))
    return document


def _bench_profiled(target: str, options: dict, paths: list[Path], config: BenchConfig) -> list[BenchResult]:
    """One bench session of ``paths`` on ``target`` with ``--profile`` (timed runs, then the profile)."""
    from edgesep.bench import profile_session
    from edgesep.devices import parse_target

    device = parse_target(target, **options)
    try:
        device.prepare(paths)
        results = device.run(config)
    finally:
        device.cleanup()
    with tempfile.TemporaryDirectory(prefix="edgesep-compare-profile-") as tmp:
        profile_session(results, paths, target, options, config, Path(tmp))
    return results


def _markdown(devices: Mapping[str, Any], block_markdown, profile_lines) -> str:
    lines = ["# edgesep compare --profile: where the time goes", "",
             "Each variant benched once more per device with `--profile` (its own timed runs for the check), "
             "ops grouped by block (the builders' layer names) and by what they compute.", ""]
    for target, section in devices.items():
        lines += [f"## {target}", ""]
        if section.get("error"):
            lines += [f"Profile failed: {section['error']}", ""]
            continue
        if section.get("blocks"):
            lines += [block_markdown(section["blocks"]), f"![per block]({section['plot']})", ""]
        for r in section["results"]:
            lines += [f"- **{r['label']}**: " + "; ".join(profile_lines(r)[:3])]
        lines.append("")
    return "\n".join(lines)


def profile_tables(document: Mapping[str, Any]) -> list:
    """The per-block tables (one per device) as rich renderables, then each variant's check line."""
    from edgesep.report.profile import block_table, profile_lines

    out: list = []
    for target, section in (document.get("devices") or {}).items():
        if section.get("error"):
            out.append(f"profile on {target} failed: {section['error']}")
            continue
        if section.get("blocks"):
            out.append(block_table(section["blocks"], title=f"where the time goes per block on {target}"))
        out += [f"{r['label']}: {profile_lines(r)[0]}" for r in section["results"]]
    return out


def reports_of(document: Mapping[str, Any], target: str) -> Optional[list[dict[str, Any]]]:
    """The profiled results of one device, or None."""
    section = (document.get("devices") or {}).get(target)
    return None if section is None else section.get("results")
