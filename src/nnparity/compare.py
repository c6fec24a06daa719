"""Comparing two backends' step results, in the order the computation happens.

Tolerances are data, one ``(rtol, atol)`` pair per dtype, and a value ``c`` agrees
with a reference value ``r`` when ``|c - r| <= atol + rtol * |r|`` (as in
``torch.testing.assert_close``) and both are finite: a non-finite value never agrees
(:func:`within`).  The quantities
of a step are compared in computation order:

1. ``forward``: each layer's activation, layer 0 to L-1;
2. ``loss``;
3. ``gradient``: last layer back to the first (backprop order), weight then bias;
4. ``update``: the updated parameters, layer 0 to L-1, weight then bias.

so the first quantity out of tolerance names where the math first goes wrong.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Iterable
from typing import NamedTuple, cast

import numpy as np

from nnparity.errors import NnparityError
from nnparity.records import LayerParams, StepResult, as_real
from nnparity.report import Divergence
from nnparity.spec import NetworkSpec

STAGES = ("forward", "loss", "gradient", "update")
PIECE = 1 << 16  # numbers compared at a time: the comparison's work arrays stay in cache
BIG_ROW = 1 << 12  # numbers in a step's row above which its arrays are copied in one by one


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
        if (
            isinstance(value, (bool, np.bool_))
            or not isinstance(value, numbers.Real)
            or not 0 <= value < math.inf
        ):
            raise NnparityError(f"{name} must be a finite number >= 0; got {value!r}.")
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


def _result_array(value: object, dtype: np.dtype) -> np.ndarray:
    """A step result's array as ``dtype``: real numbers, and floating point only of the run's dtype
    (a float32 array in a float64 run is a finding to report, not a difference to round away)."""
    arr = np.asarray(value)
    if arr.dtype.kind == "f" and arr.dtype != dtype:
        raise TypeError(f"is {arr.dtype}, but the run is {dtype}; return arrays of the run's dtype")
    return as_real(arr, dtype)


def _extract(result: object, key: Key, dtype: np.dtype) -> np.ndarray | str:
    """The quantity as an array of ``dtype``, or a sentence saying why there is none."""
    try:
        value = _pick(result, key)
    except (AttributeError, IndexError, TypeError, KeyError):
        return "is missing from the step result"
    if value is None:
        return "is None"
    try:
        # The loss may be any real scalar: torch's .item() is a Python float in a float32 run too.
        return as_real(value, dtype) if key.stage == "loss" else _result_array(value, dtype)
    except TypeError as exc:
        return str(exc)
    except ValueError:
        return f"is not an array of real numbers ({type(value).__name__})"


class StepComparison(NamedTuple):
    """Per stage (in ``STAGES`` order) the largest absolute and relative error, and the
    first quantity out of tolerance (``None`` when the step agrees)."""

    abs_err: np.ndarray
    rel_err: np.ndarray
    divergence: Divergence | None


class Comparator:
    """Compares the steps of one run; the order of quantities is worked out once."""

    def __init__(self, spec: NetworkSpec, tol: Tolerance) -> None:
        self.spec = spec
        self.tol = tol
        self.dtype = spec.np_dtype
        self._keys = {forward: quantity_keys(spec, forward) for forward in (True, False)}
        self._work = np.empty(0, dtype=self.dtype)

    def compare(self, candidate: StepResult, reference: StepResult, step: int) -> StepComparison:
        """Compare one step of two backends; never raises on a malformed candidate result."""
        forward = _has_activations(candidate) and _has_activations(reference)
        keys = self._keys[forward]
        fast_c = self._flatten(candidate, forward)
        fast_r = self._flatten(reference, forward)
        broken: Divergence | None = None
        if fast_c is None or fast_r is None or any(c.shape != r.shape for c, r in zip(fast_c, fast_r)):
            cands, refs, broken = self._until_broken(candidate, reference, keys, step)
        else:
            cands, refs = fast_c, fast_r
        pieces = (
            piece for key, c, r in zip(keys, cands, refs) for piece in _pieces(STAGES.index(key.stage), c, r)
        )
        found = self._errors(pieces, 1)
        if not found.ok[0]:  # the first quantity out of tolerance, in computation order
            bad = next(i for i, (c, r) in enumerate(zip(cands, refs)) if not within(c, r, self.tol).all())
            divergence = _numeric(step, keys[bad], cands[bad], refs[bad], self.tol)
            return StepComparison(found.abs_err[0], found.rel_err[0], divergence)
        if broken is not None:  # the run's tolerance, as a numeric divergence carries it
            broken = dataclasses.replace(broken, rtol=self.tol.rtol, atol=self.tol.atol)
        return StepComparison(found.abs_err[0], found.rel_err[0], broken)

    def compare_rows(self, layout: RowLayout, cands: np.ndarray, refs: np.ndarray) -> RowComparison:
        """Compare many steps at once: rows of ``layout``, one per step.

        The rows are taken a piece at a time (one quantity, or ``PIECE`` numbers of a large one),
        so that the few temporaries stay small, in cache, and are reused.
        """
        m = len(cands)
        width = max(1, PIECE // max(m, 1))
        pieces = (
            (STAGES.index(key.stage), cands[:, a : min(hi, a + width)], refs[:, a : min(hi, a + width)])
            for key, lo, hi in zip(layout.keys, layout.offsets[:-1], layout.offsets[1:])
            for a in range(int(lo), int(hi), width)
        )
        return self._errors(pieces, m)

    def compare_results(
        self, layout: RowLayout, cands: list[object], refs: list[object], losses: tuple[float, float]
    ) -> RowComparison:
        """Compare one step in place, without copying it into a row: the arrays of
        :meth:`RowLayout.fits` for each side, and the two losses (for networks too large to copy)."""
        pieces = list(_pieces(STAGES.index("loss"), np.asarray(losses[0]), np.asarray(losses[1])))
        for stage, c, r in zip(layout.array_stages, cands, refs):
            pieces += _pieces(stage, np.asarray(c), np.asarray(r))
        return self._errors(pieces, 1)

    def _errors(self, pieces: Iterable[tuple[int, np.ndarray, np.ndarray]], m: int) -> RowComparison:
        """Per step (the pieces' first axis) and stage, the largest errors, and which steps agree.

        Each piece gives its largest ``|c - r|`` and ``|c - r| / |r|`` per step; they are put
        together per stage at the end, where an exact match counts 0 (not 0 / 0), an infinite
        difference inf (not inf / inf) and a NaN one NaN, wherever the pieces' boundaries fall.
        """
        ok = np.ones(m, dtype=bool)
        stages: list[int] = []
        d_maxes: list[np.ndarray] = []
        r_maxes: list[np.ndarray] = []
        atol = self.tol.atol
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            for stage, c, r in pieces:
                d, e = self._scratch(c)  # shaped like the piece; flat per step below (views)
                if not r.flags.c_contiguous:  # a transposed view: read it once, in order
                    np.copyto(e, r)
                    r = e
                np.subtract(c, r, out=d)
                d_flat, e_flat = d.reshape(m, -1), e.reshape(m, -1)
                np.abs(d_flat, out=d_flat)
                d_max = d_flat.max(axis=1)
                if not (d_max <= atol).all():  # else every element is within atol: no need to look
                    ok &= within(c, r, self.tol).reshape(m, -1).all(axis=1)
                np.abs(r, out=e)
                np.divide(d_flat, e_flat, out=e_flat)
                stages.append(stage)
                d_maxes.append(d_max)
                r_maxes.append(np.fmax.reduce(e_flat, axis=1))  # fmax: 0 / 0 (NaN) is passed over
        abs_err = np.full((m, len(STAGES)), np.nan)  # NaN: a stage with nothing to compare
        rel_err = abs_err.copy()
        if stages:
            d_all, r_all, at = np.array(d_maxes), np.array(r_maxes), np.array(stages)
            r_all[d_all == 0] = 0.0
            r_all[d_all == np.inf] = np.inf
            r_all[np.isnan(d_all)] = np.nan
            for stage in np.unique(at):
                mine = at == stage
                abs_err[:, stage] = np.maximum.reduce(d_all[mine], axis=0)  # NaN wins
                rel_err[:, stage] = np.maximum.reduce(r_all[mine], axis=0)
        return RowComparison(abs_err, rel_err, ok)

    def _scratch(self, like: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Two work arrays shaped like ``like``, cut from buffers kept between calls."""
        n = like.size
        if self._work.size < 2 * n or self._work.dtype != like.dtype:
            self._work = np.empty(2 * max(n, PIECE), dtype=like.dtype)
        return self._work[:n].reshape(like.shape), self._work[n : 2 * n].reshape(like.shape)

    def row_divergence(self, layout: RowLayout, cand: np.ndarray, ref: np.ndarray, step: int) -> Divergence:
        """The first quantity out of tolerance in one pair of rows (which must have one)."""
        ok = within(cand, ref, self.tol)
        i = int(np.searchsorted(layout.offsets, int(np.argmin(ok)), side="right") - 1)
        return _numeric(step, layout.keys[i], layout.quantity(cand, i), layout.quantity(ref, i), self.tol)

    def _flatten(self, result: StepResult, forward: bool) -> list[np.ndarray] | None:
        """Every quantity in computation order (fast path), or ``None`` if anything is amiss."""
        dtype, bias, n = self.dtype, self.spec.bias, self.spec.n_layers

        def arr(value: object) -> np.ndarray:
            if value is None:  # np.asarray(None, float) would be a silent NaN
                raise TypeError("missing")
            return _result_array(value, dtype)

        try:
            grads, params = list(result.grads), list(result.params)
            acts = list(result.activations) if forward else []  # type: ignore[arg-type]
            if len(grads) != n or len(params) != n or (forward and len(acts) != n):
                return None
            out = [arr(a) for a in acts]
            out.append(as_real(result.loss, dtype))
            for layer in (*reversed(grads), *params):
                out.append(arr(layer.weight))
                if bias:
                    out.append(arr(layer.bias))
        except (AttributeError, TypeError, ValueError):
            return None
        return out

    def _until_broken(
        self, candidate: StepResult, reference: StepResult, keys: list[Key], step: int
    ) -> tuple[list[np.ndarray], list[np.ndarray], Divergence | None]:
        """The quantities before the first one that cannot be compared, and why it cannot."""
        cands: list[np.ndarray] = []
        refs: list[np.ndarray] = []
        for key in keys:
            c = _extract(candidate, key, self.dtype)
            r = _extract(reference, key, self.dtype)
            if isinstance(c, str) or isinstance(r, str) or c.shape != r.shape:
                return cands, refs, _structural(step, key, c, r)
            cands.append(c)
            refs.append(r)
        # Layers beyond the network's are not compared above, and must not pass for that.
        n, forward = self.spec.n_layers, keys[0].stage == "forward"
        fields = [("gradient", "grads", "weight"), ("update", "params", "weight")]
        if forward:
            fields.insert(0, ("forward", "activations", "activation"))
        for stage, field, tensor in fields:
            for side, result in (("candidate", candidate), ("reference", reference)):
                try:
                    count = len(getattr(result, field))
                except (AttributeError, TypeError):
                    continue
                if count > n:
                    why = f"is in a layer the network does not have ({count} {field} for {n} layers)"
                    c, r = (why, np.empty(0)) if side == "candidate" else (np.empty(0), why)
                    return cands, refs, _structural(step, Key(stage, n, tensor), c, r)
        return cands, refs, None


class RowLayout:
    """Where each quantity of a step sits in one flat row of numbers, for one run's shapes.

    A step whose result has exactly these shapes and the run's dtype is copied into a row
    (:meth:`fill`), and rows are compared many steps at a time (:meth:`Comparator.compare_rows`);
    a result that does not fit goes through :meth:`Comparator.compare`, which says what is wrong
    with it. :meth:`unflatten` gives a row back as a :class:`StepResult` of views.

    In torch's order (``torch_order``) a weight is stored as torch holds it, ``(fan_out, fan_in)``
    in C order, so that the torch side writes its rows without a transposing copy
    (:meth:`TorchBackend.step_into`); :meth:`quantity` gives it back as the ``(fan_in, fan_out)``
    view everything else uses. Small rows are in torch's order; a large one is in the order of the
    candidate's weights (:meth:`oriented`), since the side that reads them across pays for it:
    torch's for :class:`~nnparity.numpy_backend.NumpyBackend`, ``(fan_in, fan_out)`` in C order
    for a backend written as the notebook is.
    """

    def __init__(self, spec: NetworkSpec, rows: int, forward: bool, torch_order: bool = False) -> None:
        self.spec = spec
        self.rows = rows
        self.forward = forward
        self.keys = quantity_keys(spec, forward)
        dtype = spec.np_dtype
        shapes: list[tuple[int, ...]] = []
        for key in self.keys:
            fan_in, fan_out = spec.sizes[key.layer or 0], spec.sizes[(key.layer or 0) + 1]
            if key.stage == "forward":
                shapes.append((rows, fan_out))
            elif key.stage == "loss":
                shapes.append(())
            else:
                shapes.append((fan_in, fan_out) if key.tensor == "weight" else (fan_out,))
        self.shapes = shapes
        self.offsets = np.cumsum([0, *(math.prod(shape) for shape in shapes)])
        self.width = int(self.offsets[-1])
        self.torch_order = torch_order or self.width <= BIG_ROW
        self._transposed = [self.torch_order and key.tensor == "weight" for key in self.keys]
        self.n_activations = spec.n_layers if forward else 0
        self.loss_at = int(self.offsets[self.n_activations])
        # What fill() accepts for every array but the loss: exactly these types, shapes and dtypes.
        self._signature = [(np.ndarray, shape, dtype) for shape in shapes if shape != ()]
        arrays = [i for i, shape in enumerate(shapes) if shape != ()]
        self._array_shapes = [shapes[i] for i in arrays]
        self._array_transposed = [self._transposed[i] for i in arrays]
        self.array_stages = [STAGES.index(self.keys[i].stage) for i in arrays]
        self._array_lo = [int(self.offsets[i]) for i in arrays]
        self._array_hi = [int(self.offsets[i + 1]) for i in arrays]
        stage_of = np.array([STAGES.index(k.stage) for k in self.keys])
        first_key = np.flatnonzero(np.concatenate(([True], stage_of[1:] != stage_of[:-1])))
        self.stage_starts = self.offsets[first_key]
        self.stages = stage_of[first_key]
        n = spec.n_layers
        names = ("weight", "bias") if spec.bias else ("weight",)
        # Positions among the keys of each layer's gradient and update tensors, in layer order.
        self._grad_keys = [[self.keys.index(Key("gradient", l, t)) for t in names] for l in range(n)]  # noqa: E741
        self._param_keys = [[self.keys.index(Key("update", l, t)) for t in names] for l in range(n)]  # noqa: E741

    def oriented(self, candidate: object) -> RowLayout:
        """This layout in the order of the weights in ``candidate``'s step result: torch's if they
        are all in Fortran order (``(fan_out, fan_in)`` in memory), else this one."""
        if self.torch_order:
            return self
        # Only the weights are looked at: activations may be a one-pass iterable, read by fill().
        grads, params = getattr(candidate, "grads", None), getattr(candidate, "params", None)
        if not (isinstance(grads, (list, tuple)) and isinstance(params, (list, tuple))):
            return self
        weights = [getattr(layer, "weight", None) for layer in (*grads, *params)]
        if not weights or not all(isinstance(w, np.ndarray) and w.ndim == 2 for w in weights):
            return self
        flags = [w.flags for w in weights]  # type: ignore[union-attr]
        if not all(f.f_contiguous for f in flags) or all(f.c_contiguous for f in flags):
            return self
        return RowLayout(self.spec, self.rows, self.forward, torch_order=True)

    def arrays(self, result: object) -> list[object]:
        """The result's arrays in key order, the loss left out; raises on a malformed result."""
        grads, params = result.grads, result.params  # type: ignore[attr-defined]
        out: list[object] = list(result.activations) if self.forward else []  # type: ignore[attr-defined]
        if len(grads) != len(self._grad_keys) or len(params) != len(self._param_keys):
            raise ValueError("wrong number of layers")
        if self.spec.bias:
            for layer in (*reversed(grads), *params):
                out += layer.weight, layer.bias
        else:
            out += [layer.weight for layer in reversed(grads)]
            out += [layer.weight for layer in params]
        return out

    def fits(self, result: object) -> list[object] | None:
        """``result``'s arrays (:meth:`arrays`) if it has exactly this layout's shapes and dtype."""
        try:
            arrays = self.arrays(result)
            loss = result.loss  # type: ignore[attr-defined]
            if [(type(a), a.shape, a.dtype) for a in arrays] != self._signature:  # type: ignore[attr-defined]
                return None
        except (AttributeError, TypeError, ValueError):
            return None
        return arrays if isinstance(loss, (float, np.floating)) else None

    def fill(self, result: object, row: np.ndarray) -> list[object] | None:
        """Copy ``result`` into ``row`` and return its arrays (:meth:`arrays`); ``None``, and ``row``
        undefined, if it does not fit exactly."""
        arrays = self.fits(result)
        if arrays is None:
            return None
        at = self.loss_at
        row[at] = result.loss  # type: ignore[attr-defined]
        # fits() checked that every one is an ndarray.
        checked = cast(list[np.ndarray], arrays)
        stored = [a.T if t else a for a, t in zip(checked, self._array_transposed)]
        if self.width > BIG_ROW:  # one (strided) copy per array, straight into its place
            for a, lo, hi in zip(stored, self._array_lo, self._array_hi):
                np.copyto(row[lo:hi].reshape(a.shape), a)
            return arrays
        if at:  # fewer calls for small arrays
            np.concatenate([a.ravel() for a in stored[: self.n_activations]], out=row[:at])
        np.concatenate([a.ravel() for a in stored[self.n_activations :]], out=row[at + 1 :])
        return arrays

    def quantity(self, row: np.ndarray, i: int) -> np.ndarray:
        """The ``i``-th quantity of ``row``, shaped (a view)."""
        part = row[self.offsets[i] : self.offsets[i + 1]]
        return part.reshape(self.shapes[i][::-1]).T if self._transposed[i] else part.reshape(self.shapes[i])

    def unflatten(self, row: np.ndarray) -> StepResult:
        """``row`` as a step result whose arrays are views of it."""
        parts = [self.quantity(row, i) for i in range(len(self.keys))]

        def layers(positions: list[list[int]]) -> list[LayerParams]:
            return [LayerParams(*(parts[i] for i in layer)) for layer in positions]

        return StepResult(
            loss=float(row[self.loss_at]),
            grads=layers(self._grad_keys),
            params=layers(self._param_keys),
            activations=parts[: self.n_activations] if self.forward else None,
        )


class RowComparison(NamedTuple):
    """Per step (row) and stage the largest absolute and relative error, and which rows are within
    tolerance everywhere."""

    abs_err: np.ndarray
    rel_err: np.ndarray
    ok: np.ndarray


def compare_steps(
    candidate: StepResult, reference: StepResult, spec: NetworkSpec, tol: Tolerance, step: int
) -> StepComparison:
    """Compare one step of two backends (see :class:`Comparator` to compare many)."""
    return Comparator(spec, tol).compare(candidate, reference, step)


def _has_activations(result: object) -> bool:
    return getattr(result, "activations", None) is not None


def _pieces(stage: int, c: np.ndarray, r: np.ndarray) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """One step's quantity for :meth:`Comparator._errors`: a leading step axis of 1, and a large
    array cut into pieces of whole rows of about ``PIECE`` numbers."""
    if c.ndim == 0:
        return [(stage, c.reshape(1, 1), r.reshape(1, 1))]
    if c.ndim == 2 and c.flags.f_contiguous and r.flags.f_contiguous:  # both in torch's order: read so
        c, r = c.T, r.T
    rows = max(1, PIECE // (c[0].size if c.ndim > 1 else 1))
    return [(stage, c[None, a : a + rows], r[None, a : a + rows]) for a in range(0, len(c), rows)]


def within(c: np.ndarray, r: np.ndarray, tol: Tolerance) -> np.ndarray:
    """Where ``c`` agrees with ``r``: both finite, and ``|c - r| <= atol + rtol |r|``.

    As ``torch.testing`` has it, but for non-finite values: an infinite reference allows any
    difference by that formula, and even inf against inf is a finding here (both overflowed).
    """
    with np.errstate(invalid="ignore", over="ignore"):
        e = np.abs(r)
        return (np.abs(c - r) <= tol.atol + tol.rtol * e) & (e < np.inf) & (np.abs(c) < np.inf)


def _numeric(step: int, key: Key, c: np.ndarray, r: np.ndarray, tol: Tolerance) -> Divergence:
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        diff = np.abs(c - r)
        allowed = tol.atol + tol.rtol * np.abs(r)
        bad = ~within(c, r, tol)
        # The worst element: non-finite first, then the largest excess over what is allowed.
        finite = np.isfinite(c) & np.isfinite(r)
        score = np.where(finite, diff / np.maximum(allowed, np.finfo(diff.dtype).tiny), np.inf)
    flat = int(np.argmax(np.where(bad, score, -1.0)))
    index = tuple(int(i) for i in np.unravel_index(flat, c.shape))
    cv, rv = float(c.ravel()[flat]), float(r.ravel()[flat])
    abs_err = abs(cv - rv)
    # As the trace counts it: 0 for an exact match, inf for an infinite difference, NaN for NaN.
    if math.isnan(abs_err) or abs_err == 0:
        rel_err = abs_err
    elif math.isinf(abs_err) or rv == 0:
        rel_err = math.inf
    else:
        rel_err = abs_err / abs(rv)
    c_finite, r_finite = bool(np.isfinite(c).all()), bool(np.isfinite(r).all())
    nonfinite = (
        None
        if c_finite and r_finite
        else "both"
        if not (c_finite or r_finite)
        else "candidate"
        if r_finite
        else "reference"
    )
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
        nonfinite=nonfinite,
        nonfinite_identical=None if nonfinite is None else bool(np.array_equal(c, r, equal_nan=True)),
    )


def _structural(step: int, key: Key, c: np.ndarray | str, r: np.ndarray | str) -> Divergence:
    if isinstance(c, str):
        message = f"the candidate's {key.tensor} {c}"
    elif isinstance(r, str):
        message = f"the reference's {key.tensor} {r}"
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
