"""``edgesep compare``: the fused-vs-split experiment, from training to a report with verdicts.

Built-in experiment (``run_builtin``): the built-in network is built in both forms from one config, trained on
the same data with the same seed(s) and steps, exported (TFLite float32 and int8, ONNX; BN folded, every
artifact verified against Keras), then every artifact of seed 0 is measured on every device. Given model files
(``run_models``): those files are measured and compared with the first one.

On a device, the artifacts run in one session per runtime (all TFLite files interleaved round by round in one
runner process, then the ONNX files), so a device without ONNX Runtime loses only the ONNX rows and the two
forms of one precision always share a session: sample ``i`` of each is from the same round, and the latency
ratio is a paired bootstrap over those rounds. Devices run concurrently, one worker thread each; a device that
fails is reported in its own section. ``report.json`` (and ``report.md``) in the output folder are rewritten
atomically after each stage and device, and each finished session is stored under ``bench/`` so ``--resume``
reuses it without contacting the device.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import datetime
import hashlib
import json
import os
import re
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

from edgesep.devices.base import BenchConfig, DeviceError
from edgesep.devices.remote import content_hash
from edgesep.models import DEFAULT_BLOCKS

REPORT_VERSION = 1
FORMS = ("fused", "split")  # ratios are fused / split
# kind -> (format, precision, artifact file, label)
KINDS = {"float32": ("tflite", "float32", "model.tflite", "TFLite float32"),
         "int8": ("tflite", "int8", "model_int8.tflite", "TFLite int8"),
         "onnx": ("onnx", "float32", "model.onnx", "ONNX float32")}
BLOCK_PRESETS: dict[str, tuple[tuple[int, int], ...]] = {
    "default": DEFAULT_BLOCKS, "small": ((16, 1), (32, 2)), "tiny": ((8, 2),)}
MIN_INPUT_SIZE = 8
MAX_PAIRS = 10_000  # paired rounds resampled per ratio (more are thinned evenly)


def parse_blocks(spec: str) -> tuple[tuple[int, int], ...]:
    """Blocks from a preset name (``default``, ``small``, ``tiny``) or ``FILTERS[:STRIDE],...`` (e.g. ``32,64:2``).

    Raises:
        ValueError: neither a preset nor a valid list (the message lists the presets).
    """
    spec = (spec or "").strip()
    if spec in BLOCK_PRESETS:
        return BLOCK_PRESETS[spec]
    blocks = []
    for item in spec.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?::\s*([12]))?\s*", item)
        if not match or int(match.group(1)) < 1:
            raise ValueError(f"bad --blocks {spec!r}: use a preset ({', '.join(BLOCK_PRESETS)}) or "
                             "FILTERS[:STRIDE],... with stride 1 or 2, e.g. 32,64:2,128:2")
        blocks.append((int(match.group(1)), int(match.group(2) or 1)))
    return tuple(blocks)


@dataclasses.dataclass(frozen=True)
class CompareConfig:
    """The built-in experiment: one network config for both forms, trained alike.

    Attributes:
        width: channel multiplier.
        input_size: input height and width (3 channels).
        blocks: (filters, stride) per separable block.
        epochs: training epochs (same steps for both forms).
        seeds: trainings per form, seeds 0..seeds-1 (latency is measured on seed 0's artifacts).
        int8: also export and compare full-integer int8 models.
        data: training/calibration/test data (``digits``, an ImageFolder dir or a .npz).
    """

    width: float = 1.0
    input_size: int = 32
    blocks: tuple[tuple[int, int], ...] = DEFAULT_BLOCKS
    epochs: int = 8
    seeds: int = 1
    int8: bool = True
    data: str = "digits"

    def __post_init__(self):
        object.__setattr__(self, "blocks", tuple((int(f), int(s)) for f, s in self.blocks))
        if not self.width > 0:
            raise ValueError(f"width must be > 0, got {self.width}")
        if self.input_size < MIN_INPUT_SIZE:
            raise ValueError(f"input size must be >= {MIN_INPUT_SIZE}, got {self.input_size}")
        if self.epochs < 1 or self.seeds < 1:
            raise ValueError("epochs and seeds must be >= 1")
        if not self.blocks or any(f < 1 or s not in (1, 2) for f, s in self.blocks):
            raise ValueError(f"blocks must be (filters >= 1, stride 1 or 2) pairs, got {self.blocks}")

    @property
    def kinds(self) -> tuple[str, ...]:
        """Artifact kinds exported for seed 0 and measured on the devices."""
        return ("float32", "int8", "onnx") if self.int8 else ("float32", "onnx")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["blocks"] = [list(b) for b in self.blocks]
        return d


# ---------------------------------------------------------------- progress and the report document

class Progress:
    """Stage progress callbacks (a no-op here; the CLI draws a bar). Called from worker threads too."""

    def start(self, stage: str, total: float) -> None:
        """``stage`` begins with ``total`` units of work."""

    def update(self, stage: str, completed: float, total: Optional[float] = None, note: str = "") -> None:
        """``completed`` units of ``stage`` are done."""

    def finish(self, stage: str, ok: bool = True) -> None:
        """``stage`` ended (failed when not ``ok``)."""


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temp file in the same folder (made with the usual umask mode)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "x") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _dumps(doc: Any) -> str:
    return json.dumps(doc, allow_nan=False, default=_jsonable) + "\n"


def _jsonable(value):
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


class ReportStore:
    """The report document, changed under a lock; report.json and report.md are rewritten after each change."""

    def __init__(self, out_dir: Path, doc: dict[str, Any]) -> None:
        self.out_dir = Path(out_dir)
        self.doc = doc
        self._lock = threading.Lock()
        self._write()

    def update(self, change: Callable[[dict[str, Any]], None]) -> None:
        """Apply ``change`` to the document and write it out."""
        with self._lock:
            change(self.doc)
            self._write()

    def snapshot(self) -> dict[str, Any]:
        """A deep copy of the document."""
        with self._lock:
            return copy.deepcopy(self.doc)

    def _write(self) -> None:
        from edgesep.report import compare_markdown

        write_text_atomic(self.out_dir / "report.json", _dumps(self.doc))
        write_text_atomic(self.out_dir / "report.md", compare_markdown(self.doc))


class Stage:
    """``with Stage(store, progress, name, total):`` times a stage into ``doc["stages"]`` and the progress bar."""

    def __init__(self, store: ReportStore, progress: Progress, name: str, total: float) -> None:
        self.store, self.progress, self.name, self.total = store, progress, name, total

    def __enter__(self) -> "Stage":
        self.t0 = time.monotonic()
        self.store.update(lambda d: d["stages"].__setitem__(self.name, {"status": "running", "started": _now()}))
        self.progress.start(self.name, self.total)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        status = "done" if exc_type is None else ("interrupted" if exc_type is KeyboardInterrupt else "failed")
        seconds = round(time.monotonic() - self.t0, 3)
        self.store.update(lambda d: d["stages"][self.name].update(status=status, seconds=seconds))
        self.progress.finish(self.name, ok=exc_type is None)


def new_document(kind: str, targets: Sequence[str], bench: BenchConfig, **fields: Any) -> dict[str, Any]:
    """The empty report document of a compare run (``kind`` is ``builtin`` or ``models``)."""
    from edgesep import __version__

    return {"edgesep_version": __version__, "report_version": REPORT_VERSION, "kind": kind, "created": _now(),
            "status": "running", "bench_config": {k: v for k, v in bench.to_dict().items() if k != "data"},
            **fields, "stages": {}, "variants": [], "comparisons": [],
            "devices": {t: {"target": t, "status": "pending", "error": None, "results": {}, "comparisons": []}
                        for t in targets},
            "plots": []}


# ---------------------------------------------------------------- the built-in experiment: train, export

def _export_key(train_cache_key: str, export_config) -> str:
    blob = json.dumps({"train": train_cache_key, "export": export_config.to_dict()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _export_config(config: CompareConfig, seed: int):
    """Seed 0: every kind; other seeds: only int8 (they exist for the accuracy spread)."""
    from edgesep.converters.export import ExportConfig

    if seed == 0:
        return ExportConfig(precisions=("float32", "int8") if config.int8 else ("float32",), onnx=True)
    return ExportConfig(precisions=("int8",), onnx=False) if config.int8 else None


def _read_export(folder: Path, key: str) -> Optional[dict[str, Any]]:
    """The export.json in ``folder`` if it was made from the same trained model and export config."""
    try:
        doc = json.loads((folder / "export.json").read_text())
    except (OSError, ValueError):
        return None
    if doc.get("compare", {}).get("key") != key:
        return None
    if not all((folder / a["path"]).is_file() for a in doc.get("artifacts", [])):
        return None
    return doc


def _plan(config: CompareConfig, dataset, out: Path, resume: bool) -> list[dict[str, Any]]:
    """One job per (seed, form): configs, training cache key, export folder, and a reusable export (resume)."""
    from edgesep.models import ModelConfig
    from edgesep.train import TrainConfig, cache_key

    jobs = []
    for seed in range(config.seeds):
        for form in FORMS:
            model_cfg = ModelConfig(form=form, input_shape=(config.input_size, config.input_size, 3),
                                    num_classes=max(dataset.num_classes, 2), width=config.width, blocks=config.blocks)
            train_cfg = TrainConfig(epochs=config.epochs, seed=seed, data=config.data)
            export_cfg = _export_config(config, seed)
            key = _export_key(cache_key(model_cfg, train_cfg, dataset), export_cfg) if export_cfg else None
            folder = out / "artifacts" / f"seed{seed}" / form
            jobs.append({"seed": seed, "form": form, "model_config": model_cfg, "train_config": train_cfg,
                         "export_config": export_cfg, "export_key": key, "folder": folder, "model": None,
                         "export": _read_export(folder, key) if resume and key else None})
    return jobs


def _train(jobs: list[dict[str, Any]], dataset, store: ReportStore, progress: Progress) -> None:
    """Train (or take from the cache) every job's model, unless its export is reused."""
    from edgesep.train import train_builtin

    with Stage(store, progress, "train", len(jobs)):
        for i, job in enumerate(jobs):
            if job["export"] is not None:
                job["train"] = {**job["export"]["compare"]["train"], "resumed": True}
            else:
                progress.update("train", i, note=f"{job['form']} seed {job['seed']}")
                job["model"], info = train_builtin(job["model_config"], job["train_config"], dataset=dataset)
                job["train"] = {k: info.get(k) for k in ("cached", "test_accuracy", "cache_path")}
            progress.update("train", i + 1)


def _export_all(jobs: list[dict[str, Any]], dataset, store: ReportStore, progress: Progress) -> None:
    """Export every job that has an export config and no reused export; the Keras models are dropped after."""
    from edgesep.converters.export import export

    with Stage(store, progress, "export", len(jobs)):
        for i, job in enumerate(jobs):
            progress.update("export", i, note=f"{job['form']} seed {job['seed']}")
            if job["export"] is None and job["export_config"] is not None:
                extra = {"compare": {"key": job["export_key"], "train": job["train"], "seed": job["seed"],
                                     "form": job["form"]}}
                job["export"] = export(job["model"], job["folder"], job["export_config"], dataset, extra=extra)
            job["model"] = None
            progress.update("export", i + 1)


def _train_and_export(config: CompareConfig, dataset, out: Path, resume: bool, store: ReportStore,
                      progress: Progress) -> list[dict[str, dict[str, Any]]]:
    """Per seed, per form: the job with its training info and export document (``None``: nothing exported)."""
    from edgesep.converters._quiet import import_tensorflow

    import_tensorflow()
    jobs = _plan(config, dataset, out, resume)
    _train(jobs, dataset, store, progress)
    _export_all(jobs, dataset, store, progress)
    return [{job["form"]: job for job in jobs if job["seed"] == seed} for seed in range(config.seeds)]


def _artifact(doc: dict[str, Any], kind: str) -> Optional[dict[str, Any]]:
    fmt, precision = KINDS[kind][:2]
    return next((a for a in doc["artifacts"] if a["format"] == fmt and a["precision"] == precision), None)


def builtin_variants(seed0: dict[str, dict[str, Any]], kinds: Sequence[str], out: Path) -> list[dict[str, Any]]:
    """One record per (form, kind) of seed 0: file, size, ops, params, MACs, Keras and artifact accuracy."""
    variants = []
    for form in FORMS:
        job = seed0[form]
        doc = job["export"]
        for kind in kinds:
            art = _artifact(doc, kind)
            keras_acc, acc = doc.get("keras_accuracy"), art.get("accuracy")
            variants.append({
                "id": f"{form}/{kind}", "name": f"{form} {KINDS[kind][3]}", "form": form, "kind": kind,
                "label": KINDS[kind][3], "format": art["format"], "precision": art["precision"],
                "file": str((job["folder"] / art["path"]).resolve()),
                "path": str((job["folder"] / art["path"]).relative_to(out)),
                "bytes": art["bytes"], "sha256": art["sha256"], "ops": art["ops"],
                "params": doc["model"]["params"], "macs": doc["model"]["macs"],
                "keras_accuracy": keras_acc, "accuracy": acc,
                "accuracy_drop": None if keras_acc is None or acc is None else keras_acc - acc,
                "max_abs_error_vs_keras": art.get("max_abs_error_vs_keras")})
    return variants


def builtin_comparisons(kinds: Sequence[str]) -> list[dict[str, Any]]:
    """fused vs split, one pair per artifact kind."""
    return [{"label": KINDS[k][3], "kind": k, "a": f"fused/{k}", "b": f"split/{k}", "a_name": "fused",
             "b_name": "split"} for k in kinds]


def spread(values: Sequence[float]) -> dict[str, Any]:
    """Mean, std (n-1; 0 for one value), min and max of ``values``."""
    import numpy as np

    x = np.asarray(values, dtype=np.float64)
    return {"values": [float(v) for v in x], "n": int(x.size), "mean": float(x.mean()),
            "std": float(x.std(ddof=1)) if x.size > 1 else 0.0, "min": float(x.min()), "max": float(x.max())}


def accuracy_summary(seeds: list[dict[str, dict[str, Any]]], int8: bool) -> dict[str, Any]:
    """Keras and int8 accuracy per form over the seeds, the int8 drop's spread and the verdict."""
    from edgesep.report import accuracy_verdict

    forms = {}
    for form in FORMS:
        keras, quant = [], []
        for seed in seeds:
            job = seed[form]
            doc = job["export"]
            keras.append(doc["keras_accuracy"] if doc else job["train"]["test_accuracy"])
            art = _artifact(doc, "int8") if doc and int8 else None
            if art is not None and art.get("accuracy") is not None:
                quant.append(art["accuracy"])
        forms[form] = {"keras_accuracy": spread(keras)}
        if quant and len(quant) == len(keras):
            forms[form]["int8_accuracy"] = spread(quant)
            forms[form]["int8_drop"] = spread([k - q for k, q in zip(keras, quant)])
    summary: dict[str, Any] = {"seeds": len(seeds), "forms": forms}
    if all("int8_drop" in forms[f] for f in FORMS):
        a, b = forms["fused"]["int8_drop"], forms["split"]["int8_drop"]
        summary["difference"] = a["mean"] - b["mean"]
        summary["spread"] = max(a["max"] - a["min"], b["max"] - b["min"])
        summary["verdict"] = accuracy_verdict("fused", "split", a["values"], b["values"])
    else:
        summary["verdict"] = "int8 not exported (--no-int8)"
    return summary


# ---------------------------------------------------------------- benchmarking on the devices

def device_slug(target: str) -> str:
    """A file-name-safe form of a device target."""
    return re.sub(r"[^A-Za-z0-9.-]+", "_", target).strip("_") or "device"


def sessions(variants: Sequence[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    """Variants grouped by format (one device session per runtime), in the order the formats first appear."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for v in variants:
        groups.setdefault(v["format"], []).append(v)
    return list(groups.items())


def session_key(target: str, options: dict[str, Any], bench: BenchConfig, data_sha: Optional[str],
                group: Sequence[dict[str, Any]]) -> str:
    """What decides a session's results: device, its Python, the bench config, the data and the model bytes.

    Connection details (``ssh_config``) are left out: the same device reached another way measures the same.
    """
    blob = json.dumps({"target": target, "remote_python": options.get("remote_python"),
                       "bench": {k: v for k, v in bench.to_dict().items() if k != "data"}, "data": data_sha,
                       "models": [v["sha256"] for v in group]}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class SessionStore:
    """Finished sessions of one device in ``bench/<device>.json`` (session key -> results), for ``--resume``."""

    def __init__(self, folder: Path, target: str) -> None:
        self.path = Path(folder) / f"{device_slug(target)}.json"
        self.target = target

    def load(self) -> dict[str, Any]:
        try:
            doc = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return doc.get("sessions", {}) if doc.get("target") == self.target else {}

    def save(self, sessions_done: dict[str, Any]) -> None:
        write_text_atomic(self.path, _dumps({"target": self.target, "sessions": sessions_done}))


def _result_record(result, variant: dict[str, Any], session: str, resumed: bool = False) -> dict[str, Any]:
    record = result.to_dict()
    record.update(model=variant["path"], variant=variant["id"], session=session, resumed=resumed)
    return record


class DeviceBench:
    """Measures the variants on one device, session by session, reusing stored sessions when resuming."""

    def __init__(self, target: str, options: dict[str, Any], variants: Sequence[dict[str, Any]],
                 bench: BenchConfig, data_file: Optional[Path], store_dir: Path, resume: bool,
                 progress: Callable[[str, float, float], None]) -> None:
        self.target, self.options, self.variants = target, options, list(variants)
        self.bench = BenchConfig.from_dict({**bench.to_dict(), "data": str(data_file) if data_file else None})
        self.data_file = data_file
        self.data_sha = content_hash(data_file) if data_file else None
        self.store = SessionStore(store_dir, target)
        self.done = self.store.load() if resume else {}
        self.progress = progress

    def run(self) -> dict[str, Any]:
        """The device section: status, error, per-variant results and one entry per session."""
        from edgesep.devices import parse_target

        results: dict[str, Any] = {}
        entries: list[dict[str, Any]] = []
        todo = []
        for fmt, group in sessions(self.variants):
            key = session_key(self.target, self.options, self.bench, self.data_sha, group)
            saved = self.done.get(key)
            if saved is not None:
                for v in group:
                    results[v["id"]] = {**saved["results"][v["id"]], "resumed": True}
                entries.append({"format": fmt, "session": key, "resumed": True, "error": None,
                                "finished": saved.get("finished")})
            else:
                todo.append((fmt, group, key))
        if todo:
            device = parse_target(self.target, **self.options)
            try:
                self._measure(device, todo, results, entries)
            finally:
                cleanup_error = self._cleanup(device)
            if cleanup_error:
                entries.append({"format": None, "session": None, "resumed": False, "error": cleanup_error})
        return self._section(results, entries)

    def _measure(self, device, todo, results: dict[str, Any], entries: list[dict[str, Any]]) -> None:
        for n, (fmt, group, key) in enumerate(todo):
            models = [Path(v["file"]) for v in group]
            entry = {"format": fmt, "session": key, "resumed": False, "error": None}
            entries.append(entry)
            try:
                device.prepare(models, self.data_file)
            except DeviceError as e:  # staging failed: the device is unusable for the remaining sessions too
                entry["error"] = str(e)
                for _, rest, _ in todo[n + 1:]:
                    entries.append({"format": rest[0]["format"], "session": None, "resumed": False,
                                    "error": f"skipped: {e}"})
                return
            try:
                measured = device.run(self.bench, progress=self._model_progress(group))
            except DeviceError as e:  # e.g. no ONNX Runtime on the device: only this session is lost
                entry["error"] = str(e)
                continue
            for v, r in zip(group, measured):
                results[v["id"]] = _result_record(r, v, key)
            entry["finished"] = _now()
            self.done[key] = {"finished": entry["finished"], "results": {v["id"]: results[v["id"]] for v in group}}
            self.store.save(self.done)

    def _model_progress(self, group: Sequence[dict[str, Any]]) -> Callable[[str, int, int], None]:
        state: dict[str, tuple[int, int]] = {}

        def on_progress(model: str, done: int, total: int) -> None:
            state[model] = (done, max(total, done, 1))
            known = sum(t for _, t in state.values()) + (len(group) - len(state)) * self.bench.runs
            self.progress(f"{group[0]['format']}", sum(d for d, _ in state.values()), known)

        return on_progress

    def _cleanup(self, device) -> Optional[str]:
        try:
            device.cleanup()
        except DeviceError as e:
            return f"cleanup: {e}"
        return None

    def _section(self, results: dict[str, Any], entries: list[dict[str, Any]]) -> dict[str, Any]:
        errors = [e["error"] for e in entries if e["error"]]
        measured = [r for r in results.values() if not r.get("error")]
        status = "done" if not errors else ("partial" if measured else "failed")
        host = next((r.get("host") for r in measured if r.get("host")), {})
        return {"target": self.target, "status": status, "error": errors[0] if errors else None,
                "resumed": bool(entries) and all(e["resumed"] for e in entries if e["session"]),
                "sessions": entries, "host": host, "results": results}


def latency_comparisons(results: dict[str, Any], comparisons: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The a/b ratio of median latencies per comparison, with its bootstrap interval and the verdict.

    When both were measured in the same session the first ``min(n_a, n_b)`` samples are paired round by round
    (the runner interleaves A B A B ... until each model is done) and resampled together; more than
    ``MAX_PAIRS`` rounds are thinned to every k-th round (evenly over the session) to bound the bootstrap's
    cost. Across sessions the medians are bootstrapped independently (``paired`` false). The interval covers
    sampling noise within the session, not session-to-session variation.
    """
    from edgesep.devices.stats import ratio_of_medians
    from edgesep.report import latency_verdict

    out = []
    for c in comparisons:
        a, b = results.get(c["a"]), results.get(c["b"])
        entry = {**c, "ratio": None, "lo": None, "hi": None, "paired": None, "pairs": None}
        missing = [r for r in (a, b) if not r or r.get("error") or not r.get("samples_ms")]
        if missing:
            entry["verdict"] = "not measured"
            out.append(entry)
            continue
        xa, xb = a["samples_ms"], b["samples_ms"]
        paired = a.get("session") is not None and a.get("session") == b.get("session")
        rounds = None
        if paired:
            rounds = min(len(xa), len(xb))
            step = -(-rounds // MAX_PAIRS)
            xa, xb = xa[:rounds:step], xb[:rounds:step]
        ci = ratio_of_medians(xa, xb, paired=paired)
        entry.update(ratio=ci.ratio, lo=ci.lo, hi=ci.hi, paired=ci.paired, rounds=rounds,
                     pairs=len(xa) if paired else None, confidence=ci.confidence)
        entry["verdict"] = latency_verdict(c["a_name"], c["b_name"], ci.ratio, ci.lo, ci.hi)
        out.append(entry)
    return out


def _one_line(text: str) -> str:
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    return " ".join(lines)[:500] if lines else "failed"


def bench_devices(store: ReportStore, targets: Sequence[str], device_options: dict[str, dict[str, Any]],
                  bench: BenchConfig, data_file: Optional[Path], resume: bool, progress: Progress) -> None:
    """Every device in a worker thread of its own; each section lands in the report as soon as it is done."""
    variants, comparisons = store.doc["variants"], store.doc["comparisons"]
    workers = [threading.Thread(target=_device_worker, name=f"bench {t}", daemon=True,
                                args=(store, t, device_options.get(t, {}), variants, comparisons, bench, data_file,
                                      resume, progress)) for t in targets]
    for w in workers:
        w.start()
    for w in workers:
        while w.is_alive():  # short joins keep Ctrl-C working in the main thread
            w.join(0.2)


def _device_worker(store: ReportStore, target: str, options: dict[str, Any], variants, comparisons,
                   bench: BenchConfig, data_file: Optional[Path], resume: bool, progress: Progress) -> None:
    stage = f"bench {target}"
    t0 = time.monotonic()

    def on_progress(what: str, done: float, total: float) -> None:
        progress.update(stage, done, total, note=what)

    try:
        with Stage(store, progress, stage, 1):
            store.update(lambda d: d["devices"][target].update(status="running", started=_now()))
            section = DeviceBench(target, options, variants, bench, data_file, store.out_dir / "bench", resume,
                                  on_progress).run()
            section["comparisons"] = latency_comparisons(section["results"], comparisons)
    except Exception as e:  # noqa: BLE001 - one device's failure never sinks the others
        message = str(e) if isinstance(e, DeviceError) else f"{type(e).__name__}: {e}"
        section = {"target": target, "status": "failed", "error": _one_line(message), "resumed": False,
                   "sessions": [], "host": {}, "results": {}, "comparisons": latency_comparisons({}, comparisons)}
    section["seconds"] = round(time.monotonic() - t0, 3)

    def record(doc: dict[str, Any]) -> None:
        doc["devices"][target].update(section)
        doc["stages"][stage]["status"] = section["status"]

    store.update(record)


# ---------------------------------------------------------------- the two front doors

def run_builtin(config: CompareConfig, targets: Sequence[str], bench: BenchConfig, out_dir, *,
                device_options: Optional[dict[str, dict[str, Any]]] = None, resume: bool = False,
                progress: Optional[Progress] = None) -> dict[str, Any]:
    """Train, export and measure both forms of the built-in network; returns the report document.

    Args:
        config: the network and training shared by both forms.
        targets: device targets (``local``, ``ssh://...``, ``adb``...), measured concurrently.
        bench: how to measure (its ``data`` is set to the test split for on-device accuracy).
        out_dir: the report folder (artifacts, bench sessions, report.json, report.md, PNG plots).
        device_options: per target, options for ``parse_target`` (``ssh_config``, ``remote_python``).
        resume: reuse exports and device sessions that an earlier run in ``out_dir`` finished.
        progress: stage callbacks.

    Raises:
        DataError, ConversionError: the data or an export failed (nothing is measured then).
    """
    progress = progress or Progress()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    store = ReportStore(out, new_document("builtin", targets, bench, config=config.to_dict()))
    with _recorded(store):
        return _builtin(config, targets, bench, out, store, device_options or {}, resume, progress)


@contextlib.contextmanager
def _recorded(store: ReportStore) -> Iterator[None]:
    """Mark the report ``interrupted`` or ``failed`` (with the one-line error) when the run stops early."""
    try:
        yield
    except KeyboardInterrupt:
        store.update(_interrupted)
        raise
    except Exception as e:
        store.update(lambda d: d.update(status="failed", error=_one_line(str(e))))
        raise


def _interrupted(doc: dict[str, Any]) -> None:
    doc["status"] = "interrupted"
    for part in (*doc["stages"].values(), *doc["devices"].values()):
        if part.get("status") in ("running", "pending"):
            part["status"] = "interrupted"


def _builtin(config: CompareConfig, targets: Sequence[str], bench: BenchConfig, out: Path, store: ReportStore,
             device_options: dict[str, dict[str, Any]], resume: bool, progress: Progress) -> dict[str, Any]:
    from edgesep.data import load_dataset

    with Stage(store, progress, "data", 1):
        dataset = load_dataset(config.data, (config.input_size, config.input_size, 3))
        data_file = out / "data" / "test.npz"
        data_file.parent.mkdir(exist_ok=True)
        dataset.save_npz(data_file, split="test")
    store.update(lambda d: d.update(dataset={"name": dataset.name, "train_samples": len(dataset.x_train),
                                             "test_samples": len(dataset.x_test),
                                             "classes": dataset.num_classes}))
    seeds = _train_and_export(config, dataset, out, resume, store, progress)
    variants = builtin_variants(seeds[0], config.kinds, out)

    def record(doc: dict[str, Any]) -> None:
        doc["variants"] = variants
        doc["comparisons"] = builtin_comparisons(config.kinds)
        doc["seeds"] = [{form: {"seed": s[form]["seed"], "train": s[form]["train"],
                                "export": str(s[form]["folder"].relative_to(out)) if s[form]["export"] else None,
                                "keras_accuracy": (s[form]["export"] or {}).get("keras_accuracy"),
                                "int8_accuracy": (_artifact(s[form]["export"], "int8") or {}).get("accuracy")
                                if s[form]["export"] and config.int8 else None}
                         for form in FORMS} for s in seeds]
        doc["accuracy"] = accuracy_summary(seeds, config.int8)

    store.update(record)
    return _finish(store, targets, device_options, bench, data_file, resume, progress)


def model_variants(paths: Sequence[Path]) -> list[dict[str, Any]]:
    """One record per given model file: size, ops, params, MACs (read from the file)."""
    from edgesep.converters.inspect import inspect_model

    names = [Path(p).name for p in paths]
    variants = []
    for i, path in enumerate(paths):
        info = inspect_model(path)
        name = names[i] if names.count(names[i]) == 1 else f"{names[i]} ({i + 1})"
        variants.append({"id": name, "name": name, "form": None, "kind": None, "label": name,
                         "format": info.format, "precision": _precision(info),
                         "file": str(Path(path).resolve()), "path": str(path), "bytes": info.bytes,
                         "sha256": info.sha256, "ops": info.ops, "params": info.params, "macs": info.macs,
                         "keras_accuracy": None, "accuracy": None, "accuracy_drop": None})
    return variants


def _precision(info) -> str:
    dtypes = (info.quantization or {}).get("dtypes") or {}
    return "int8" if any(d in ("int8", "uint8") for d in dtypes) else "float32"


def run_models(paths: Sequence[Path], targets: Sequence[str], bench: BenchConfig, out_dir, *,
               data_file: Optional[Path] = None, device_options: Optional[dict[str, dict[str, Any]]] = None,
               resume: bool = False, progress: Optional[Progress] = None) -> dict[str, Any]:
    """Measure given .tflite/.onnx files on every device and compare each with the first; returns the report.

    ``data_file`` is a runner .npz (``y`` and ``x`` or ``x_HxWxC``) for on-device accuracy, or None.
    """
    from edgesep.devices.harness import check_model_file

    if len(paths) < 2:
        raise ValueError("compare needs two or more model files (or none, for the built-in experiment)")
    for path in paths:
        check_model_file(Path(path))
    progress = progress or Progress()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    variants = model_variants(paths)
    base = variants[0]
    comparisons = [{"label": f"{v['name']} vs {base['name']}", "kind": None, "a": v["id"], "b": base["id"],
                    "a_name": v["name"], "b_name": base["name"]} for v in variants[1:]]
    store = ReportStore(out, new_document("models", targets, bench, models=[str(p) for p in paths]))
    store.update(lambda d: d.update(variants=variants, comparisons=comparisons))
    with _recorded(store):
        return _finish(store, targets, device_options or {}, bench, data_file, resume, progress)


def _finish(store: ReportStore, targets: Sequence[str], device_options: dict[str, dict[str, Any]],
            bench: BenchConfig, data_file: Optional[Path], resume: bool, progress: Progress) -> dict[str, Any]:
    """Measure on every device, draw the plots, mark the report complete."""
    from edgesep.report import compare_plots

    bench_devices(store, targets, device_options, bench, data_file, resume, progress)
    with Stage(store, progress, "plots", 1):
        plots = compare_plots(store.snapshot(), store.out_dir)
    failed = [t for t in targets if store.doc["devices"][t]["status"] == "failed"]
    store.update(lambda d: d.update(plots=plots, status="done" if not failed else "done with failures",
                                    finished=_now()))
    return store.snapshot()
