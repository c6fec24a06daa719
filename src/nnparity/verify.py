"""The public entry point: check the inputs, build both backends, run them in lockstep
(:class:`nnparity.lockstep.Lockstep`) and make the :class:`Report`."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from nnparity.backend import Backend, backend_label, load_backend
from nnparity.compare import Comparator, tolerance_for
from nnparity.errors import NnparityError
from nnparity.initialization import check_params, init_params
from nnparity.lockstep import TRACE_COLUMNS, Lockstep
from nnparity.records import LayerParams, as_real, copy_params
from nnparity.report import Report
from nnparity.resources import check_memory
from nnparity.spec import NetworkSpec
from nnparity.worker import can_fork

MODES = ("free", "resync")


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
    parallel: bool = True,
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
    :mod:`nnparity.diagnosis`) unless ``diagnosis=False``. With ``parallel`` (the
    default), a long run against the built-in torch reference runs the reference in a
    worker process on a second CPU, kept for the process's later runs
    (:mod:`nnparity.worker`); the report is the same either way.
    """
    if not isinstance(spec, NetworkSpec):
        raise NnparityError(f"spec must be an nnparity.NetworkSpec; got {spec!r:.80}.")
    x, y = check_batch(spec, x, y)
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
        raise NnparityError(f"steps must be a whole number >= 0; got {steps!r}.")
    check_memory(spec, x.shape[0], int(steps))
    if mode not in MODES:
        raise NnparityError(f"Unknown mode {mode!r}; choose from {', '.join(MODES)}.")
    tol = tolerance_for(spec.dtype, rtol, atol)
    start = check_params(spec, init_params(spec) if params is None else params)
    cand = _construct(candidate, spec, start, "candidate")
    ref = _construct(reference, spec, start, "reference")
    run = Lockstep(spec, x, y, start, cand, ref, Comparator(spec, tol), mode, keep_going, diagnosis)
    del start  # the run lets it go after its first step
    run.parallel = parallel and can_fork() and os.environ.get("NNPARITY_PARALLEL", "1") != "0"
    bar = _progress_bar(steps) if progress else None
    try:
        with _torch_threads():
            run.run(int(steps), bar)
    finally:
        if bar is not None:
            bar.close()

    import pandas as pd  # here, so that `import nnparity` (and the pytest plugin) stays light

    frame = pd.DataFrame(run.trace.rows(), columns=TRACE_COLUMNS)
    frame.index.name = "step"
    return Report(
        ok=run.first is None and not run.interrupted,
        steps_run=len(run.trace),
        first_divergence=run.first,
        trace=frame,
        steps=int(steps),
        divergent_steps=run.divergent,
        interrupted=run.interrupted,
        stopped_by=run.stopped_by,
        mode=mode,
        candidate=backend_label(candidate),
        reference=backend_label(reference),
        rtol=tol.rtol,
        atol=tol.atol,
        spec=spec.to_dict(),
        seconds=run.seconds,
        final_params=run.final,
    )


@contextmanager
def _torch_threads() -> Iterator[None]:
    """Torch on one thread for the run (``NNPARITY_TORCH_THREADS`` to choose), as it was after.

    Measured on two cores: torch's OpenMP workers spin between calls and starve OpenBLAS's
    threads on the numpy side, making both backends 3-15x slower inside a run than alone; with
    one torch thread each runs at its own speed, and torch alone was faster too (784-256-256-10,
    batch 128, float32: 1.7 against 2.7 ms a step).
    """
    torch = sys.modules.get("torch")  # imported by now if a torch backend takes part
    wanted = os.environ.get("NNPARITY_TORCH_THREADS", "1")
    if torch is None or wanted == "default":
        yield
        return
    if not wanted.isdigit() or int(wanted) < 1:
        raise NnparityError(
            f"NNPARITY_TORCH_THREADS must be a whole number >= 1 or 'default'; got {wanted!r}."
        )
    before = torch.get_num_threads()
    torch.set_num_threads(int(wanted))
    try:
        yield
    finally:
        torch.set_num_threads(before)


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
    if spec.loss == "bce" and not ((y_arr >= 0) & (y_arr <= 1)).all():
        row = int(np.argmax(((y_arr < 0) | (y_arr > 1)).any(axis=1)))
        raise NnparityError(
            f"y row {row} holds a target outside [0, 1] ({y_arr[row].tolist()}); BCELoss takes "
            "probabilities as targets (torch refuses others)."
        )
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
    except (Exception, SystemExit) as exc:  # a user's backend failing to start is a usage problem
        raise NnparityError(
            f"The {role} backend {backend_label(which)!r} could not be constructed "
            f"({type(exc).__name__}: {exc})."
        ) from exc


def _progress_bar(total: int) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit="step", leave=False, mininterval=0.5)
