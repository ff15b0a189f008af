"""Text formatting shared by the renderers: sizes, milliseconds, percentages, counts, op lists."""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence


def size_text(n: Optional[int]) -> str:
    """Bytes as KiB/MiB; ``-`` for None."""
    if n is None:
        return "-"
    return f"{n / 1024:.1f} KiB" if n < 1024 * 1024 else f"{n / 1024 / 1024:.2f} MiB"


def format_ms(value: Optional[float]) -> str:
    """Milliseconds with 3-4 significant digits and no exponent; ``-`` for None."""
    if value is None:
        return "-"
    for limit, digits in ((100.0, 0), (10.0, 1), (1.0, 2), (0.1, 3)):
        if abs(value) >= limit:
            return f"{value:.{digits}f}"
    return f"{value:.4f}"


def distinct_labels(paths: Sequence[str]) -> list[str]:
    """Each path's shortest suffix of whole path parts that no other path ends in (``out/model_int8.tflite``
    vs ``out-fused/model_int8.tflite``; plain file names when those differ); the same path given twice keeps
    its full form with ``(1)``, ``(2)``... after it."""
    import posixpath

    parts = [[p for p in posixpath.normpath(str(path).replace("\\", "/")).split("/") if p not in ("", ".")]
             for path in paths]
    labels = []
    for i, mine in enumerate(parts):
        others = [theirs for j, theirs in enumerate(parts) if j != i]
        k = next((k for k in range(1, len(mine) + 1) if all(theirs[-k:] != mine[-k:] for theirs in others)), None)
        labels.append("/".join(mine[-k:]) if k else str(paths[i]))
    return [f"{label} ({i + 1})" if labels.count(label) > 1 else label for i, label in enumerate(labels)]


def pct(value: Optional[float]) -> str:
    """A fraction as a percentage with 2 decimals; ``-`` for None."""
    return "-" if value is None else f"{value * 100:.2f}%"


def pp(value: float) -> str:
    """A fraction as percentage points with 2 decimals."""
    return f"{value * 100:.2f} pp"


def ops_text(ops: Mapping[str, int]) -> str:
    """``OP×count`` pairs, most frequent first."""
    return " ".join(f"{k}×{v}" for k, v in sorted(ops.items(), key=lambda kv: (-kv[1], kv[0])))


def count_text(n: Optional[int]) -> str:
    """A count as ``1.23 M``, ``4.5 k`` or the number; ``-`` for None."""
    if n is None:
        return "-"
    return f"{n / 1e6:.2f} M" if n >= 1e6 else (f"{n / 1e3:.1f} k" if n >= 1e3 else str(n))


def md_cell(text: object) -> str:
    """A Markdown table cell (pipes escaped, one line)."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def bench_control_line(control: Mapping[str, Any]) -> str:
    """The A/A control of a bench (``doc["control"]``): a copy of the first model against it, and its floor."""
    return (f"A/A control (a copy of {control['of']} measured as another model): ratio {control['ratio']:.3f} "
            f"(95% CI {control['lo']:.3f}–{control['hi']:.3f}) over {control['sessions']} sessions; "
            f"noise floor ±{control['floor']:.1%}")
