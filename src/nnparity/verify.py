"""The lockstep driver: two backends, the same weights and batches, compared every step."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from nnparity.backend import Backend, backend_label, load_backend
from nnparity.compare import STAGES, Comparator, StepComparison, tolerance_for
from nnparity.diagnosis import StepRecord, diagnose
from nnparity.errors import NnparityError
from nnparity.initialization import check_params, init_params
from nnparity.records import LayerParams, StepResult, as_real, copy_params
from nnparity.report import Divergence, Report
from nnparity.spec import NetworkSpec

MODES = ("free", "resync")
TRACE_COLUMNS = [
    "candidate_loss",
    "reference_loss",
    *(f"{stage}_{kind}" for stage in STAGES for kind in ("abs_err", "rel_err")),
]


def verify(
    spec: NetworkSpec,
    x: np.ndarray,
    y: np.ndarray,
    *,
    steps: int,
    params: Sequence[LayerParams] | None = None,
    candidate: str | type = "numpy",
    reference: str | type = "torch",
    mode: str = "free",
    rtol: float | None = None,
    atol: float | None = None,
    keep_going: bool = False,
    progress: bool = False,
    diagnosis: bool = True,
) -> Report:
    """Train ``candidate`` and ``reference`` in lockstep on ``(x, y)`` and compare every step.

    Both start from ``params`` (default: ``init_params(spec)``, the notebook's
    ``numpy-rand`` weights with seed 1). ``mode="free"`` lets each side train on
    its own weights; ``mode="resync"`` gives the candidate the reference's
    parameters after every step, so each step tests one step's math from
    identical weights. ``rtol`` and ``atol`` override the dtype's default
    tolerance together. The run stops at the first divergence unless
    ``keep_going``, which runs every step and counts the divergent ones. The
    first divergence is diagnosed (``verdict``, ``hint``, the oracle's value; see
    :mod:`nnparity.diagnosis`) unless ``diagnosis=False``.
    """
    if not isinstance(spec, NetworkSpec):
        raise NnparityError(f"spec must be an nnparity.NetworkSpec; got {spec!r:.80}.")
    x, y = check_batch(spec, x, y)
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
        raise NnparityError(f"steps must be a whole number >= 0; got {steps!r}.")
    if mode not in MODES:
        raise NnparityError(f"Unknown mode {mode!r}; choose from {', '.join(MODES)}.")
    tol = tolerance_for(spec.dtype, rtol, atol)
    start = check_params(spec, init_params(spec) if params is None else params)
    comparator = Comparator(spec, tol)
    cand = _construct(candidate, spec, start, "candidate")
    ref = _construct(reference, spec, start, "reference")

    trace = _Trace(steps)
    seconds = {"candidate": 0.0, "reference": 0.0}
    first: Divergence | None = None
    divergent = 0
    final: dict[str, list[LayerParams]] = {"candidate": start, "reference": start}
    # What the diagnosis needs at a divergence: the parameters each side started the step with,
    # and the step before (its momentum buffers are read back from that step's update).
    starts: dict[str, list[LayerParams]] = {"candidate": start, "reference": start}
    previous: dict[str, StepRecord] | None = None
    interrupted = False
    bar = _progress_bar(steps) if progress else None
    try:
        for t in range(steps):
            t0 = time.perf_counter()
            rc = _step(cand, x, y)
            t1 = time.perf_counter()
            seconds["candidate"] += t1 - t0
            if isinstance(rc, Exception):
                first, divergent = first or _raised(t, "candidate", "step", rc), divergent + 1
                break
            rr = _step(ref, x, y)
            seconds["reference"] += time.perf_counter() - t1
            if isinstance(rr, Exception):
                first, divergent = first or _raised(t, "reference", "step", rr), divergent + 1
                break
            found = comparator.compare(rc, rr, t)
            if diagnosis and first is None and found.divergence is not None:
                results = {"candidate": rc, "reference": rr}
                why = diagnose(spec, x, y, starts, results, found.divergence, previous=previous)
                found = found._replace(divergence=why.apply(found.divergence))
            trace.append(_as_float(getattr(rc, "loss", None)), _as_float(rr.loss), found)
            final = {"candidate": _params_or_empty(rc), "reference": _params_or_empty(rr)}
            if bar is not None:
                bar.update(1)
            if found.divergence is not None:
                divergent += 1
                first = first or found.divergence
                if not keep_going:
                    break
            if mode == "resync":
                try:
                    cand.set_params(rr.params)
                except Exception as exc:  # a candidate's failure is a finding, not a crash
                    first, divergent = first or _raised(t, "candidate", "set_params", exc), divergent + 1
                    break
            previous = {
                "candidate": StepRecord(starts["candidate"], rc),
                "reference": StepRecord(starts["reference"], rr),
            }
            starts = {
                "candidate": final["reference" if mode == "resync" else "candidate"],
                "reference": final["reference"],
            }
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if bar is not None:
            bar.close()
    steps_run = len(trace)

    frame = pd.DataFrame(trace.rows(), columns=TRACE_COLUMNS)
    frame.index.name = "step"
    return Report(
        ok=first is None and not interrupted,
        steps_run=steps_run,
        first_divergence=first,
        trace=frame,
        steps=int(steps),
        divergent_steps=divergent,
        interrupted=interrupted,
        mode=mode,
        candidate=backend_label(candidate),
        reference=backend_label(reference),
        rtol=tol.rtol,
        atol=tol.atol,
        spec=spec.to_dict(),
        seconds=seconds,
        final_params=final,
    )


def check_batch(spec: NetworkSpec, x: object, y: object) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` as 2-D finite arrays of the spec's dtype that fit its input and output widths."""
    arrays = []
    for name, value, width in (("x", x, spec.sizes[0]), ("y", y, spec.sizes[-1])):
        try:
            arr = np.array(as_real(value, spec.np_dtype), copy=True)
        except (TypeError, ValueError) as exc:
            raise NnparityError(f"{name} must be an array of real numbers; it {exc}.") from exc
        if arr.ndim == 1 and width == 1:
            arr = arr.reshape(-1, 1)
        if arr.ndim != 2 or arr.shape[1] != width or arr.shape[0] < 1:
            raise NnparityError(
                f"{name} must have shape (rows, {width}) for sizes {spec.sizes}; got {arr.shape}."
            )
        if not np.isfinite(arr).all():
            raise NnparityError(f"{name} has non-finite values (inf or NaN); training data must be finite.")
        arrays.append(arr)
    x_arr, y_arr = arrays
    if x_arr.shape[0] != y_arr.shape[0]:
        raise NnparityError(
            f"x has {x_arr.shape[0]} rows but y has {y_arr.shape[0]}; give one target row per input row."
        )
    return x_arr, y_arr


def _construct(which: str | type, spec: NetworkSpec, params: list[LayerParams], role: str) -> Backend:
    cls = load_backend(which)
    try:
        return cls(spec, copy_params(params))
    except NnparityError:
        raise
    except Exception as exc:  # a user's backend failing to start is a usage problem
        raise NnparityError(
            f"The {role} backend {backend_label(which)!r} could not be constructed "
            f"({type(exc).__name__}: {exc})."
        ) from exc


class _Trace:
    """A few numbers per step, in a block grown by doubling (a huge ``steps`` costs nothing upfront)."""

    def __init__(self, steps: int) -> None:
        self._rows = np.full((min(steps, 1024), len(TRACE_COLUMNS)), np.nan)
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def append(self, candidate_loss: float, reference_loss: float, found: StepComparison) -> None:
        if self._n == len(self._rows):
            self._rows = np.concatenate([self._rows, np.full_like(self._rows, np.nan)])
        row = self._rows[self._n]
        row[0] = candidate_loss
        row[1] = reference_loss
        row[2::2] = found.abs_err
        row[3::2] = found.rel_err
        self._n += 1

    def rows(self) -> np.ndarray:
        return self._rows[: self._n]


def _step(backend: Backend, x: np.ndarray, y: np.ndarray) -> StepResult | Exception:
    """The backend's step, or the exception it raised (reported, not propagated)."""
    try:
        return backend.step(x, y)
    except Exception as exc:
        return exc


def _raised(step: int, role: str, method: str, exc: Exception) -> Divergence:
    nan = float("nan")
    return Divergence(
        step=step,
        stage="step",
        layer=None,
        tensor="step",
        index=None,
        candidate_value=nan,
        reference_value=nan,
        abs_err=nan,
        rel_err=nan,
        verdict=role,
        message=f"the {role}'s {method}() raised {type(exc).__name__}: {exc}",
    )


def _params_or_empty(result: object) -> list[LayerParams]:
    """A step result's parameters, or ``[]`` when a malformed result holds no list of them."""
    params = getattr(result, "params", None)
    return list(params) if isinstance(params, (list, tuple)) else []


def _as_float(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return float("nan")


def _progress_bar(total: int) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit="step", leave=False, mininterval=0.5)
