"""Reports a person can look at: the per-step trace as CSV, and a picture of the run.

``write_trace_csv`` needs only pandas. ``plot_report`` needs matplotlib (the optional ``plot`` extra,
``pip install 'nnparity[plot]'``), imported only when called; it draws on its own ``Figure`` with the
Agg canvas, so it never touches pyplot's global state or the user's backend. Both write atomically:
to a temporary file beside the target, then ``os.replace``, so a reader never sees half a file.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from nnparity.errors import NnparityError
from nnparity.files import atomic_write
from nnparity.report import Report

STAGES = ("forward", "loss", "gradient", "update")
STAGE_COLORS = {"forward": "#1f77b4", "loss": "#9467bd", "gradient": "#d62728", "update": "#2ca02c"}
ERROR_FLOOR = 1e-17  # a relative error of exactly 0 cannot go on a log axis: drawn here, or lower
MARKERS_UP_TO = 60  # steps; beyond this, lines alone
LOG_LOSS_SPAN = 20.0  # the loss axis is logarithmic when the (positive) losses span this factor or more
MAX_POINTS = 500  # beyond this many steps, each error curve shows the maximum over runs of steps


def require_matplotlib(path: str | os.PathLike[str] | None = None) -> None:
    """Raise :class:`NnparityError` unless matplotlib can be imported and, given the plot's
    ``path``, write the format its suffix names (check before a long run)."""
    try:
        from matplotlib.backend_bases import FigureCanvasBase
    except ImportError as exc:
        raise NnparityError("Plotting needs matplotlib: pip install 'nnparity[plot]'.") from exc
    formats = FigureCanvasBase.get_supported_filetypes()
    if path is not None and _format(path) not in formats:
        raise NnparityError(
            f"Cannot plot to {path}: matplotlib writes {', '.join(sorted(formats))}, chosen by the suffix."
        )


def check_writable(path: str | os.PathLike[str]) -> Path:
    """``path`` as a ``Path``, or :class:`NnparityError` if it cannot be written (check before a long run)."""
    target = Path(path)
    parent = target.parent
    if not parent.is_dir():
        raise NnparityError(f"Cannot write {target}: the directory {parent} does not exist.")
    if target.is_dir():
        raise NnparityError(f"Cannot write {target}: it is a directory.")
    if not os.access(parent, os.W_OK):
        raise NnparityError(f"Cannot write {target}: the directory {parent} is not writable.")
    return target


def write_trace_csv(report: Report, path: str | os.PathLike[str]) -> Path:
    """The per-step trace (each side's loss, largest error per stage), one row per step, as CSV."""
    return _atomic(path, lambda tmp: report.trace.to_csv(tmp, index=True))


def plot_report(report: Report, path: str | os.PathLike[str]) -> Path:
    """A PNG (or any format matplotlib infers from the suffix) of the run, two panels sharing the steps:

    - top: both sides' loss per step (log scale when the losses are positive and span a factor 20);
    - bottom: per stage, the largest relative error of the step on a log axis, with the tolerance's
      ``rtol`` drawn across; exact agreement (0) is drawn at ``ERROR_FLOOR``, as the axis label says.

    The first divergence, if any, is marked on both panels and named in the title.
    """
    require_matplotlib(path)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(9, 6.8), layout="constrained")
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(1, 1.25))
    trace = report.trace
    steps = np.asarray(trace.index, dtype=float)
    marker = "o" if len(steps) <= MARKERS_UP_TO else None

    _plot_losses(top, report, steps, marker)
    _plot_errors(bottom, report, steps, marker)
    d = report.first_divergence
    if d is not None:
        for ax in (top, bottom):
            ax.axvline(d.step, color="black", lw=1.0, ls=":", zorder=1)
        verdict = f"; verdict: {d.verdict}" if d.verdict else ""
        bottom.set_title(
            f"first divergence (ringed): step {d.step}, {d.place}{verdict}", loc="left", fontsize=9
        )
    if 0 < len(steps) <= MARKERS_UP_TO:
        bottom.set_xlim(steps.min() - 0.5, steps.max() + 0.5)
    bottom.set_xlabel("step")
    bottom.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    if not len(steps):
        top.text(0.5, 0.5, "no steps were run", transform=top.transAxes, ha="center", va="center")
    fig.suptitle(_title(report), fontsize=11)
    return _atomic(path, lambda tmp: fig.savefig(tmp, dpi=110, format=_format(path)))


def _title(report: Report) -> str:
    dtype = report.spec.get("dtype")
    head = f"{report.candidate} vs {report.reference}, mode {report.mode}" + (f", {dtype}" if dtype else "")
    d = report.first_divergence
    if d is not None:
        return f"{head}: DIVERGE at step {d.step} ({d.place})"
    if report.interrupted and not report.steps_run:
        return f"{head}: interrupted before its first step"
    if report.interrupted:
        return f"{head}: interrupted after {report.steps_run} steps, which agree"
    return f"{head}: agree at every step of {report.steps_run}"


def _plot_losses(ax: Any, report: Report, steps: np.ndarray, marker: str | None) -> None:
    losses = {side: report.trace[f"{side}_loss"].to_numpy(dtype=float) for side in ("candidate", "reference")}
    # The reference under the candidate, wide and pale, so that agreeing curves are still both seen.
    ax.plot(
        steps,
        losses["reference"],
        color="#ff7f0e",
        lw=4.5,
        alpha=0.45,
        marker=marker,
        ms=8,
        label="reference",
    )
    ax.plot(
        steps,
        losses["candidate"],
        color="#1f1f1f",
        lw=1.2,
        marker=marker,
        ms=3.5,
        label="candidate",
    )
    both = np.concatenate(list(losses.values()))
    finite = both[np.isfinite(both)]
    if len(finite) and (finite > 0).all() and finite.max() >= LOG_LOSS_SPAN * finite.min():
        ax.set_yscale("log")
    ax.set_ylabel("loss")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, borderaxespad=0)


def _plot_errors(ax: Any, report: Report, steps: np.ndarray, marker: str | None) -> None:
    per_stage = {}
    for stage in STAGES:
        rel = report.trace[f"{stage}_rel_err"].to_numpy(dtype=float)
        if not np.isnan(rel).all():  # all NaN: never compared (no activations: no forward stage)
            per_stage[stage] = _thin(steps, rel)
    values = np.concatenate([r for _, r in per_stage.values()] or [np.zeros(0)])
    rtol = report.rtol if math.isfinite(report.rtol) else None
    floor = _floor(values, rtol)
    top = max([rtol or floor, float(values[np.isfinite(values)].max(initial=floor))])
    if rtol is not None:
        ax.axhspan(rtol, top * 40, color="#d62728", alpha=0.07, lw=0)  # out of tolerance
        # A value also agrees when |diff| <= atol, so a tiny reference may sit above this line and pass.
        ax.axhline(rtol, color="0.25", lw=1.2, ls="--", label=f"rtol = {rtol:g}\n(+ atol = {report.atol:g})")
    for stage, (x, rel) in per_stage.items():
        color = STAGE_COLORS[stage]
        shown = np.maximum(np.where(np.isinf(rel), np.nan, rel), floor)
        ax.plot(x, shown, color=color, lw=1.3, marker=marker, ms=3.5, label=stage)
        # An infinite relative error (the reference exactly 0) is drawn as a triangle at the top.
        inf = np.isinf(rel)
        if inf.any():
            ax.plot(x[inf], np.full(inf.sum(), top * 10), "^", color=color, ms=7, clip_on=False)
    d = report.first_divergence
    if d is not None and d.stage in per_stage:  # ring the point that left tolerance
        x, rel = per_stage[d.stage]
        at = int(np.searchsorted(x, d.step, side="right")) - 1
        if 0 <= at < len(x):
            own = report.trace[f"{d.stage}_rel_err"].to_numpy(dtype=float)[min(d.step, len(steps) - 1)]
            # inf or NaN (a NaN difference; thinning's fmax would pass over it): at the top
            y = top * 10 if not (math.isfinite(own) and math.isfinite(rel[at])) else max(rel[at], floor)
            ax.plot([x[at]], [y], "o", ms=13, mfc="none", mec="black", mew=1.5, label="first divergence")
    ax.set_yscale("log")
    ax.set_ylim(floor / 3, top * 40)
    every = f", max of every {math.ceil(len(steps) / MAX_POINTS)} steps" if len(steps) > MAX_POINTS else ""
    ax.set_ylabel(f"largest relative error{every}\n(0 drawn at {floor:.0e}, \u221e as \u25b2 at the top)")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, borderaxespad=0)


def _floor(values: np.ndarray, rtol: float | None) -> float:
    """Where an error of exactly 0 is drawn: a decade below the smallest non-zero error (at most
    ``ERROR_FLOOR``, so that a run of exact agreement still sits far below the tolerance)."""
    positive = values[np.isfinite(values) & (values > 0)]
    if not len(positive):
        return min(ERROR_FLOOR, (rtol or 1.0) * 1e-9)
    return min(ERROR_FLOOR, 10.0 ** (math.floor(math.log10(float(positive.min()))) - 1))


def _thin(steps: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """At most ``MAX_POINTS`` points: beyond that, the largest value of each run of ``k`` steps."""
    if len(steps) <= MAX_POINTS:
        return steps, values
    k = math.ceil(len(steps) / MAX_POINTS)
    pad = (-len(values)) % k
    blocks = np.concatenate([values, np.full(pad, np.nan)]).reshape(-1, k)
    return steps[::k], np.fmax.reduce(blocks, axis=1)  # fmax ignores NaN without a warning


def _format(path: str | os.PathLike[str]) -> str:
    suffix = Path(path).suffix.lstrip(".").lower()
    return suffix or "png"


def _atomic(path: str | os.PathLike[str], write: Callable[[str], object]) -> Path:
    """Run ``write(temporary path)`` beside ``path``, then move the result into place."""
    return atomic_write(check_writable(path), write)
