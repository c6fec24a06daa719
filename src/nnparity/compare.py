"""Comparing two backends' step results, in the order the computation happens.

Tolerances are data, one ``(rtol, atol)`` pair per dtype, and a value ``c`` agrees
with a reference value ``r`` when ``|c - r| <= atol + rtol * |r|`` (as in
``torch.testing.assert_close``); a non-finite value never agrees.  The quantities
of a step are compared in computation order:

1. ``forward``: each layer's activation, layer 0 to L-1;
2. ``loss``;
3. ``gradient``: last layer back to the first (backprop order), weight then bias;
4. ``update``: the updated parameters, layer 0 to L-1, weight then bias.

so the first quantity out of tolerance names where the math first goes wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from nnparity.errors import NnparityError
from nnparity.records import StepResult
from nnparity.report import Divergence
from nnparity.spec import NetworkSpec

STAGES = ("forward", "loss", "gradient", "update")


class Tolerance(NamedTuple):
    rtol: float
    atol: float


# float64: tight enough that a float32 round trip inside a float64 run (relative
# error ~1e-8) is reported; loose enough for summation-order differences between
# NumPy's and torch's kernels over the notebook's 10,000 free-running steps.
# float32: torch.testing's defaults for float32.
DEFAULT_TOLERANCES: dict[str, Tolerance] = {
    "float32": Tolerance(rtol=1.3e-6, atol=1e-5),
    "float64": Tolerance(rtol=1e-9, atol=1e-12),
}


def tolerance_for(dtype: str, rtol: float | None = None, atol: float | None = None) -> Tolerance:
    """The default tolerance for ``dtype``, or ``(rtol, atol)`` given together."""
    if (rtol is None) != (atol is None):
        raise NnparityError("Give rtol and atol together, or neither to use the dtype's defaults.")
    if rtol is None or atol is None:
        return DEFAULT_TOLERANCES[dtype]
    for name, value in (("rtol", rtol), ("atol", atol)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise NnparityError(f"{name} must be a number >= 0; got {value!r}.")
    return Tolerance(float(rtol), float(atol))


class Key(NamedTuple):
    stage: str
    layer: int | None
    tensor: str


def quantity_keys(spec: NetworkSpec, forward: bool = True) -> list[Key]:
    """Every compared quantity of one step, in computation order."""
    layers = range(spec.n_layers)
    names = ("weight", "bias") if spec.bias else ("weight",)
    keys = [Key("forward", l, "activation") for l in layers] if forward else []  # noqa: E741
    keys.append(Key("loss", None, "loss"))
    keys += [Key("gradient", l, t) for l in reversed(layers) for t in names]  # noqa: E741
    keys += [Key("update", l, t) for l in layers for t in names]  # noqa: E741
    return keys


def _pick(result: object, key: Key) -> object:
    """The raw value a step result holds for ``key``; raises on a malformed result."""
    if key.stage == "loss":
        return result.loss  # type: ignore[attr-defined]
    if key.stage == "forward":
        return result.activations[key.layer]  # type: ignore[attr-defined]
    layers = result.grads if key.stage == "gradient" else result.params  # type: ignore[attr-defined]
    layer = layers[key.layer]
    return layer.weight if key.tensor == "weight" else layer.bias


def _extract(result: object, key: Key, dtype: np.dtype) -> np.ndarray | str:
    """The quantity as an array of ``dtype``, or a sentence saying why there is none."""
    try:
        value = _pick(result, key)
    except (AttributeError, IndexError, TypeError, KeyError):
        return "it is missing from the step result"
    if value is None:
        return "it is None"
    try:
        return np.asarray(value, dtype=dtype)
    except (TypeError, ValueError):
        return f"it is not numeric ({type(value).__name__})"


class StepComparison(NamedTuple):
    """Per stage (in ``STAGES`` order) the largest absolute and relative error, and the
    first quantity out of tolerance (``None`` when the step agrees)."""

    abs_err: np.ndarray
    rel_err: np.ndarray
    divergence: Divergence | None


def compare_steps(
    candidate: StepResult, reference: StepResult, spec: NetworkSpec, tol: Tolerance, step: int
) -> StepComparison:
    """Compare one step of two backends; never raises on a malformed candidate result."""
    forward = _has_activations(candidate) and _has_activations(reference)
    keys = quantity_keys(spec, forward)
    dtype = spec.np_dtype
    cands: list[np.ndarray] = []
    refs: list[np.ndarray] = []
    broken: Divergence | None = None
    for key in keys:
        c = _extract(candidate, key, dtype)
        r = _extract(reference, key, dtype)
        if isinstance(c, str) or isinstance(r, str) or c.shape != r.shape:
            broken = _structural(step, key, c, r)
            break
        cands.append(c)
        refs.append(r)
    abs_err, rel_err, bad = _errors(keys[: len(cands)], cands, refs, tol)
    if bad is not None:
        i = bad
        return StepComparison(abs_err, rel_err, _numeric(step, keys[i], cands[i], refs[i], tol))
    return StepComparison(abs_err, rel_err, broken)


def _has_activations(result: object) -> bool:
    return getattr(result, "activations", None) is not None


def _errors(
    keys: Sequence[Key], cands: list[np.ndarray], refs: list[np.ndarray], tol: Tolerance
) -> tuple[np.ndarray, np.ndarray, int | None]:
    """Stage maxima of the errors, and the position of the first quantity out of tolerance."""
    abs_err = np.full(len(STAGES), np.nan)
    rel_err = np.full(len(STAGES), np.nan)
    if not keys:
        return abs_err, rel_err, None
    c = np.concatenate([a.ravel() for a in cands])
    r = np.concatenate([a.ravel() for a in refs])
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        diff = np.abs(c - r)
        ok = diff <= tol.atol + tol.rtol * np.abs(r)
        rel = np.where(diff == 0, 0.0, diff / np.abs(r))
    sizes = [a.size for a in cands]
    starts = np.cumsum([0, *sizes[:-1]])
    stage_of = [STAGES.index(k.stage) for k in keys]
    # Segment maxima per quantity, then per stage (stages are contiguous runs of keys).
    q_abs = np.maximum.reduceat(diff, starts)
    q_rel = np.maximum.reduceat(rel, starts)
    for s in set(stage_of):
        idx = [i for i, st in enumerate(stage_of) if st == s]
        abs_err[s] = q_abs[idx].max()
        rel_err[s] = q_rel[idx].max()
    if ok.all():
        return abs_err, rel_err, None
    first_bad = int(np.argmin(ok))
    return abs_err, rel_err, int(np.searchsorted(starts, first_bad, side="right") - 1)


def _numeric(step: int, key: Key, c: np.ndarray, r: np.ndarray, tol: Tolerance) -> Divergence:
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        diff = np.abs(c - r)
        allowed = tol.atol + tol.rtol * np.abs(r)
        bad = ~(diff <= allowed)
        # The worst element: non-finite first, then the largest excess over what is allowed.
        score = np.where(np.isnan(diff), np.inf, diff / np.maximum(allowed, np.finfo(diff.dtype).tiny))
    flat = int(np.argmax(np.where(bad, score, -1.0)))
    index = tuple(int(i) for i in np.unravel_index(flat, c.shape))
    cv, rv = float(c.ravel()[flat]), float(r.ravel()[flat])
    abs_err = abs(cv - rv)
    with np.errstate(invalid="ignore", divide="ignore"):
        rel_err = 0.0 if abs_err == 0 else abs_err / abs(rv) if rv != 0 else float("inf")
    return Divergence(
        step=step,
        stage=key.stage,
        layer=key.layer,
        tensor=key.tensor,
        index=index,
        candidate_value=cv,
        reference_value=rv,
        abs_err=abs_err,
        rel_err=rel_err,
        mismatched=int(bad.sum()),
        total=int(c.size),
        rtol=tol.rtol,
        atol=tol.atol,
    )


def _structural(step: int, key: Key, c: np.ndarray | str, r: np.ndarray | str) -> Divergence:
    if isinstance(c, str):
        message = f"the candidate's {key.tensor}: {c}"
    elif isinstance(r, str):
        message = f"the reference's {key.tensor}: {r}"
    else:
        message = f"shapes differ: candidate {c.shape}, reference {r.shape}"
    nan = float("nan")
    return Divergence(
        step=step,
        stage=key.stage,
        layer=key.layer,
        tensor=key.tensor,
        index=None,
        candidate_value=nan,
        reference_value=nan,
        abs_err=nan,
        rel_err=nan,
        message=message,
    )
