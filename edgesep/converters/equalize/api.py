"""The front door of equalization: runs the phases (links, scaling, bias absorption, rebuild) in order.

Without ``calibration_data`` (and without ``data_free=True``) nothing is equalized: the model is only BN-folded,
every link is listed in ``skipped`` with the reason :data:`NO_DATA`, the report's ``data`` is ``"none"`` and its
``notes`` say so (a ``UserWarning`` too); ``absorb_bias="batchnorm"`` asks for data-free equalization as well.
Equalizing without data rescales the per-channel activation ranges blindly, and bias absorption can then only
guess the pre-activation minima from BatchNorm statistics: on keras.applications MobileNet (alpha 0.25, 96x96,
randomized BatchNorm statistics) that lost 8.9 dB of per-tensor int8 SQNR with BatchNorm-based absorption and
9.8 dB without any, where the same equalization with calibration data gained 8 dB
(scripts/study_equalize_nodata.py, docs/quantization.md).
"""
from __future__ import annotations

import warnings
from typing import Any, Iterable, Optional, Union

import numpy as np

from edgesep.converters.equalize.bias import Absorption, absorb
from edgesep.converters.equalize.channel_relu import custom_objects
from edgesep.converters.equalize.links import RELU6_MODES, Link, exclude_links, find_links
from edgesep.converters.equalize.rebuild import edit_config, load_weights, read_weights
from edgesep.converters.equalize.records import EqualizeReport, PairResult
from edgesep.converters.equalize.scaling import (check_lengths, depthwise_out_view, equalize_weights, link_ranges,
                                                 range_ratio, scaled_caps)
from edgesep.converters.fold import fold_batchnorm_with_report
from edgesep.converters.graph import Weights, conv_kind, predict_all, read_graph, rebuild, weights64
from edgesep.errors import ConversionError

NO_DATA = ("no calibration_data: equalizing without it lowered per-tensor int8 SQNR (MobileNet 0.25: -9 dB, "
           "docs/quantization.md); pass calibration_data, or data_free=True (absorb_bias='batchnorm') to "
           "equalize on BatchNorm statistics")
ABSORB_MODES = (True, False, "batchnorm")
DATA_SOURCES = ("calibration", "batchnorm statistics (data_free)", "none")


def _check_args(relu6: str, max_iter: int, tol: float, calibration_data, eval_data, absorb_bias=True) -> None:
    if not any(absorb_bias is m or (isinstance(m, str) and absorb_bias == m) for m in ABSORB_MODES):
        raise ConversionError(f"absorb_bias must be True, False or 'batchnorm', got {absorb_bias!r}")
    if relu6 not in RELU6_MODES:
        raise ConversionError(f"unknown relu6 mode {relu6!r}; valid: {', '.join(RELU6_MODES)}")
    if int(max_iter) < 1 or not float(tol) > 0:
        raise ConversionError(f"max_iter must be >= 1 and tol > 0, got {max_iter} and {tol}")
    if calibration_data is not None and len(calibration_data) == 0:
        raise ConversionError("calibration_data is empty")
    if eval_data is not None and (len(eval_data) != 2 or len(eval_data[0]) != len(eval_data[1])):
        raise ConversionError("eval_data must be (images, labels) of equal length")


def _depthwise_ratios(before, after) -> list[tuple[str, float, float]]:
    rows = []
    for layer in after.layers:
        key = {"DepthwiseConv2D": "kernel", "SeparableConv2D": "depthwise_kernel"}.get(conv_kind(layer) or "")
        if key is None:
            continue
        ratios = [range_ratio(np.max(np.abs(depthwise_out_view(weights64(m.get_layer(layer.name))[key])), axis=0))
                  for m in (before, after)]
        rows.append((layer.name, *ratios))
    return rows


def _measure(original, new_model, calibration, eval_data) -> tuple[Optional[float], Optional[dict]]:
    change = accuracy = None
    if calibration is not None:
        a = predict_all(original, calibration)[0].astype(np.float64)
        b = predict_all(new_model, calibration)[0].astype(np.float64)
        change = float(np.max(np.abs(a - b)) / max(np.max(np.abs(a)), 1e-30))
    if eval_data is not None:
        x, y = np.asarray(eval_data[0], np.float32), np.asarray(eval_data[1]).reshape(-1)
        accuracy = {tag: float(np.mean(np.argmax(predict_all(m, x)[0], -1) == y))
                    for tag, m in (("before", original), ("after", new_model))}
    return change, accuracy


def _pair_result(link: Link, before: tuple[np.ndarray, np.ndarray], weights: dict[str, Weights]) -> PairResult:
    after = link_ranges(link, weights)
    kind = f"{link.out_kind} -> {link.in_kind}"
    return PairResult(*link.label, link.via, kind, len(before[0]),
                      (range_ratio(before[0]), range_ratio(after[0])),
                      (range_ratio(before[1]), range_ratio(after[1])))


def _links(folded, graph, relu6: str, exclude: Iterable[str], absorb_bias: bool, no_data: bool):
    """(links, skipped, need_bias, float64 weights of the linked convs) of the folded model."""
    links, skipped = find_links(folded, graph, relu6)
    links, excluded = exclude_links(links, skipped, exclude)
    if no_data:  # every link is reported with the reason, none is equalized
        excluded, links = [*excluded, *((*link.label, NO_DATA) for link in links)], []
    need_bias = {n for link in links if absorb_bias and link.act is not None for n in (link.producer, link.consumer)}
    weights = read_weights(folded, links, need_bias)
    links, mismatched = check_lengths(links, weights)
    return links, [*skipped, *excluded, *mismatched], need_bias, weights


def equalize_with_report(model, *, relu6: str = "clip", absorb_bias: Union[bool, str] = True,
                         calibration_data: Optional[np.ndarray] = None, eval_data=None, max_iter: int = 1000,
                         tol: float = 1e-4, exclude: Iterable[str] = (), data_free: bool = False
                         ) -> tuple[Any, EqualizeReport]:
    """Cross-layer equalization (and bias absorption) of a Keras model, with a report (no data: see module).

    Args:
        model: a built functional or Sequential ``keras.Model``; BatchNorm is folded first. Not modified.
        relu6: what to do with capped ReLUs (ReLU6) between two convolutions: ``clip`` each channel at
            ``6 / s`` (exact; the default), ``replace`` them by ReLU (changes the function: a network trained
            into ReLU6 saturation can lose most of its accuracy), or ``keep`` them and skip those links.
        absorb_bias: absorb bias across ReLUs into 1x1 (or valid-padded) consumers (``False``: never);
            ``"batchnorm"``: also without data, as ``data_free=True``.
        calibration_data: float images; when given, bias absorption uses the per-channel minimum of each
            pre-activation over them, and the report gives the output change measured on them.
        eval_data: ``(images, labels)``; when given, the report gives top-1 float accuracy before and after.
        max_iter: most sweeps over all links.
        tol: stop when no scale of a sweep differs from 1 by more than ``tol`` (in log).
        exclude: links to leave alone, named by their producer as in ``PairResult.producer`` (``block1_dw``,
            ``block1_sep/depthwise``); they are listed in ``skipped`` as excluded and absorb no bias.
        data_free: equalize without calibration data anyway (Nagel et al.'s data-free setting), absorbing bias
            by BatchNorm statistics; fit for a trained model whose BatchNorm statistics describe its inputs.

    Returns:
        (new model, report). The new model is BN-folded and not compiled.

    Raises:
        ConversionError: bad arguments, or a model that cannot be folded or rebuilt.
    """
    _check_args(relu6, max_iter, tol, calibration_data, eval_data, absorb_bias)
    folded, fold_report = fold_batchnorm_with_report(model)
    config, sequential, graph = read_graph(folded, "equalize")
    no_data = calibration_data is None and not (data_free or absorb_bias == "batchnorm")
    links, skipped, need_bias, weights = _links(folded, graph, relu6, exclude, absorb_bias, no_data)
    before = {link.label: link_ranges(link, weights) for link in links}
    scaling = equalize_weights(links, weights, int(max_iter), float(tol))
    new_config, changes, replaced = edit_config(config, sequential, links, relu6, need_bias)
    new_model = rebuild(folded, new_config, "equalization", custom_objects())
    result = Absorption(scaling.weights, scaled_caps(links, scaling.scales, replaced))
    load_weights(new_model, folded, result.weights, result.caps)
    if absorb_bias:
        calib = None if calibration_data is None else np.asarray(calibration_data, np.float32)
        result = absorb(new_model, model, fold_report, links, result.weights, result.caps, scaling.scales, calib)
        load_weights(new_model, folded, result.weights, result.caps)
    pairs = tuple(_pair_result(link, before[link.label], result.weights) for link in links)
    change, accuracy = _measure(model, new_model, calibration_data, eval_data)
    report = EqualizeReport(relu6, pairs, tuple(skipped), scaling.sweeps, scaling.converged, tuple(changes),
                            tuple(_depthwise_ratios(folded, new_model)), result.absorbed, result.skipped,
                            fold_report, change, accuracy, *_data_note(calibration_data, no_data, skipped))
    return new_model, report


def _data_note(calibration_data, no_data: bool, skipped) -> tuple[str, tuple[str, ...]]:
    """(report.data, report.notes); a UserWarning when the missing data left links unequalized."""
    if not no_data:
        return DATA_SOURCES[0 if calibration_data is not None else 1], ()
    count = sum(reason == NO_DATA for *_, reason in skipped)
    if not count:
        return DATA_SOURCES[2], ()
    message = f"equalize: {count} link(s) not equalized: {NO_DATA}"
    warnings.warn(message, UserWarning, stacklevel=3)
    return DATA_SOURCES[2], (message,)


def equalize(model, *, relu6: str = "clip", absorb_bias: Union[bool, str] = True,
             calibration_data: Optional[np.ndarray] = None, max_iter: int = 1000, tol: float = 1e-4,
             exclude: Iterable[str] = (), data_free: bool = False):
    """``model`` with cross-layer equalization and bias absorption applied (see ``equalize_with_report``).

    Without ``calibration_data`` nothing is equalized unless ``data_free=True`` (a ``UserWarning`` says so).

    Args:
        model: a built functional or Sequential ``keras.Model``; not modified.
        relu6: ``clip`` (exact), ``replace`` or ``keep`` (what to do with ReLU6 between two convolutions).
        absorb_bias: absorb bias across ReLUs into the following 1x1 conv (``"batchnorm"``: as ``data_free``).
        calibration_data: float images for the bias absorption amounts.
        max_iter: most sweeps over all links.
        tol: convergence tolerance on the scales (log).
        exclude: producers of links to leave alone (see ``equalize_with_report``).
        data_free: equalize without calibration data, absorbing bias by BatchNorm statistics.

    Returns:
        A new BN-folded ``keras.Model``.
    """
    return equalize_with_report(model, relu6=relu6, absorb_bias=absorb_bias, calibration_data=calibration_data,
                                max_iter=max_iter, tol=tol, exclude=exclude, data_free=data_free)[0]
