"""Which side of a divergence is wrong, and what kind of mistake it looks like.

Two backends that disagree cannot say which of them is right; a third, independent computation can
(:mod:`nnparity.oracle`). At the divergent step, from the parameters each side started that step
with, the oracle recomputes the disputed tensor: the gradient by finite differences of the float64
loss, an activation or the loss by the layer's math in float64, an update by ``torch.optim.SGD``'s
documented formula applied to the side's own gradient. Each side is judged against the oracle from
its *own* starting weights (in a free run they differ by up to the tolerance).

**Verdict.** A side agrees with the oracle at an element when it is within
``TRUST x err + atol + rtol |oracle| + TRUST x rounding``: ``err`` is the oracle's own error bound
there, the run's tolerance (``rtol``, ``atol``, from the dtype's table unless overridden) is what a
correct side may be off by, as in the comparison itself, and ``rounding`` is how far a correct side
computing in the run's dtype lands from the exact value where sums cancel, which can be far beyond
the tolerance in float32 (:func:`nnparity.oracle.rounding_spread`; not for an update, which the
oracle applies to each side's own gradient). At the elements where the sides disagree, the verdict
names the side that is off where the other agrees, provided the other is never off; otherwise it is
``"undetermined"``: the oracle cannot resolve a difference this small, a kink (ReLU at 0, L1 at
``f == y``) makes the derivative a convention, or both sides are off. In a float64 run the oracle's
``err`` (~1e-12 of the loss's scale) resolves float32 rounding (6e-8) but not summation order
(~1e-15); in a float32 run the tolerance (1.3e-6, 1e-5) dominates.

**Hint.** What kind of mistake fits the wrong side's tensor (:mod:`nnparity.hints`): a constant
factor, a sign, a transpose, a wrong activation derivative, an SGD variant, float32 rounding, ...;
when nothing fits, the hint says so rather than guess.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from nnparity import oracle
from nnparity.compare import Tolerance, within
from nnparity.hints import TRUST, Evidence, explain, float64, layer_of, tensor_of, what
from nnparity.oracle import Estimate, Rule
from nnparity.records import LayerParams, StepResult
from nnparity.report import Divergence
from nnparity.spec import NetworkSpec

Array = np.ndarray
VERDICTS = ("candidate", "reference", "undetermined")
SIDES = ("candidate", "reference")
MAX_FD_ELEMENTS = 256  # larger tensors: finite differences at a sample (worst elements first)
# Where a side agrees only once its rounding is allowed for, the other must be this much further off
# to be blamed: the rounding is an estimate (a helper's search: correct sides 3-6x apart there).
ROUNDING_RATIO = 10.0


@dataclass(frozen=True)
class Diagnosis:
    """What the oracle found. ``verdict`` is ``candidate``, ``reference`` or ``undetermined``;
    ``oracle_value`` and ``oracle_err`` are the oracle's value at the divergence's worst element
    (from the reference's starting weights) and its own error bound; ``oracle`` says how it was made."""

    verdict: str
    hint: str | None = None
    oracle_value: float | None = None
    oracle_err: float | None = None
    oracle: str | None = None

    def apply(self, divergence: Divergence) -> Divergence:
        """``divergence`` with the verdict and hint filled, and the oracle fields where it has them."""
        names = {f.name for f in dataclasses.fields(divergence)}
        extra = {k: getattr(self, k) for k in ("oracle_value", "oracle_err", "oracle") if k in names}
        return dataclasses.replace(divergence, verdict=self.verdict, hint=self.hint, **extra)


class StepRecord(NamedTuple):
    """One side's step: the parameters it started with and what it returned."""

    start: Sequence[LayerParams]
    result: StepResult


def diagnose(
    spec: NetworkSpec,
    x: Array,
    y: Array,
    start: Mapping[str, Sequence[LayerParams]],
    results: Mapping[str, StepResult],
    divergence: Divergence,
    *,
    previous: Mapping[str, StepRecord] | None = None,
) -> Diagnosis:
    """Arbitrate ``divergence`` with an independent oracle; never raises.

    ``start[side]`` are the parameters each side (``"candidate"``, ``"reference"``) started the
    divergent step with, ``results[side]`` its step result. ``previous[side]`` is the step before's
    record, needed only for an update divergence after step 0 with momentum (the buffer is read back
    from that step's displacement). The tolerance is the divergence's own ``rtol``/``atol``.
    """
    if divergence.stage == "step":
        return _raised(divergence)
    if divergence.index is None:
        return _structural(spec, x, divergence)
    try:
        return _Case(spec, x, y, start, results, divergence, previous).diagnose()
    except Exception as exc:  # a diagnosis must never turn a finding into a crash
        return Diagnosis(
            "undetermined", f"No diagnosis: the oracle could not run ({type(exc).__name__}: {exc})."
        )


# --- divergences without numbers -----------------------------------------------------------------------


def _blamed_by_message(message: str | None) -> str:
    found = re.search(r"the (candidate|reference)'s", message or "")
    return found.group(1) if found else "undetermined"


def _raised(d: Divergence) -> Diagnosis:
    return Diagnosis(_blamed_by_message(d.message))


def _expected_shape(spec: NetworkSpec, rows: int, d: Divergence) -> tuple[int, ...]:
    if d.stage == "loss":
        return ()
    fan_in, fan_out = spec.sizes[layer_of(d)], spec.sizes[layer_of(d) + 1]
    if d.stage == "forward":
        return (rows, fan_out)
    return (fan_in, fan_out) if d.tensor == "weight" else (fan_out,)


def _structural(spec: NetworkSpec, x: Array, d: Divergence) -> Diagnosis:
    """A missing tensor is its side's fault; a wrong shape is the side whose shape the spec rejects."""
    found = re.search(r"shapes differ: candidate (\(.*?\)), reference (\(.*?\))", d.message or "")
    if not found:
        return Diagnosis(_blamed_by_message(d.message))
    rows = int(np.shape(x)[0])
    expected = _expected_shape(spec, rows, d)
    shapes = dict(zip(SIDES, (_parse_shape(found.group(1)), _parse_shape(found.group(2)))))
    wrong = [side for side in SIDES if shapes[side] != expected]
    if len(wrong) != 1:
        return Diagnosis("undetermined")
    side, got = wrong[0], shapes[wrong[0]]
    subject = f"The {side}'s {what(d)} has shape {got}"
    gradient = d.stage == "gradient"
    if len(expected) == 2 and got == expected[::-1] and d.stage == "forward":
        hint = f"{subject}, the transpose of {expected}: activations are (rows, fan_out), z = a_prev @ W + b."
    elif len(expected) == 2 and got == expected[::-1]:
        rule = "dE_dW = a_prev.T @ dE_dz" if gradient else "the notebook's layout"
        hint = f"{subject}, the transpose of {expected}: weights are (fan_in, fan_out), {rule}."
    elif gradient and d.tensor == "bias" and got == (rows,):
        hint = f"{subject}, one value per row: reduce dE_dz over the rows, dE_db = dE_dz.sum(axis=0)."
    elif gradient and d.tensor == "bias" and len(got) == 2:
        hint = (
            f"{subject}: dE_dz is not reduced over the rows; dE_db = dE_dz.sum(axis=0) has shape {expected}."
        )
    else:
        hint = f"{subject}, not {expected}."
    return Diagnosis(side, hint)


def _parse_shape(text: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", text))


# --- the numeric case ------------------------------------------------------------------------------------


def _pick(result: StepResult, d: Divergence) -> Array:
    """The disputed tensor of a step result, as float64."""
    if d.stage == "loss":
        return float64(result.loss)
    if d.stage == "forward":
        return float64((result.activations or [])[layer_of(d)])
    return tensor_of(result.grads if d.stage == "gradient" else result.params, d)


class _Side(NamedTuple):
    """Everything about one side the oracle and the hints need."""

    name: str
    value: Array  # the disputed tensor, float64
    start: list[LayerParams]  # float64
    result: StepResult
    estimate: Estimate


class _Case:
    def __init__(
        self,
        spec: NetworkSpec,
        x: Array,
        y: Array,
        start: Mapping[str, Sequence[LayerParams]],
        results: Mapping[str, StepResult],
        d: Divergence,
        previous: Mapping[str, StepRecord] | None,
    ) -> None:
        self.spec, self.d = spec, d
        self.x, self.y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        self.rtol, self.atol = float(d.rtol), float(d.atol)
        self.previous = previous
        values = {s: _pick(results[s], d) for s in SIDES}
        c, r = values["candidate"], values["reference"]
        with np.errstate(invalid="ignore", over="ignore"):
            self.mismatched = ~within(c, r, Tolerance(self.rtol, self.atol))
            excess = np.nan_to_num(np.abs(c - r) / (self.atol + self.rtol * np.abs(r) + 1e-300), nan=np.inf)
        starts = {s: oracle.as_float64(start[s]) for s in SIDES}
        self.elements = self._elements(c.shape, excess)
        estimates: dict[str, Estimate] = {}
        self.rounding: dict[str, Array | float] = {}
        for s in SIDES:
            # From the same starting weights (step 0, resync) the oracle's work is done once.
            same = s == "reference" and _same(starts["candidate"], starts[s])
            if same and d.stage != "update":  # an update's estimate also reads the side's own gradient
                estimates[s] = estimates["candidate"]
            else:
                estimates[s] = self._estimate(starts[s], results[s], s)
            self.rounding[s] = self.rounding["candidate"] if same else self._rounding(starts[s])
        self.sides = {s: _Side(s, values[s], starts[s], results[s], estimates[s]) for s in SIDES}

    # -- the oracle --

    def _elements(self, shape: tuple[int, ...], excess: Array) -> Array | None:
        """All elements, or for a large tensor the worst ones, a fixed random sample and their transposes."""
        size = int(np.prod(shape))
        if self.d.stage != "gradient" or size <= MAX_FD_ELEMENTS:
            return None
        worst = np.argsort(-excess.ravel(), kind="stable")[: MAX_FD_ELEMENTS // 2]
        rest = np.random.default_rng(0).choice(size, MAX_FD_ELEMENTS // 2, replace=False)
        chosen = np.unique(np.concatenate([worst, rest]))
        if len(shape) == 2 and shape[0] == shape[1]:
            i, j = np.unravel_index(chosen, shape)
            chosen = np.unique(np.concatenate([chosen, np.ravel_multi_index((j, i), shape)]))
        return chosen

    def _estimate(self, start: list[LayerParams], result: StepResult, side: str) -> Estimate:
        d, spec = self.d, self.spec
        if d.stage == "gradient":
            return oracle.gradient(spec, start, self.x, self.y, layer_of(d), d.tensor, self.elements)
        if d.stage == "forward":
            return oracle.activation(spec, start, self.x, layer_of(d))
        if d.stage == "loss":
            return oracle.loss(spec, start, self.x, self.y)
        p, g = tensor_of(start, d), tensor_of(result.grads, d)
        buf, prev = self._buffer(side, oracle.DOCUMENTED)
        return oracle.update(
            spec.optimizer, p, g, buf, dtype_eps=float(np.finfo(spec.np_dtype).eps), previous=prev
        )

    def _rounding(self, start: list[LayerParams]) -> Array | float:
        """How far a correct side computing from ``start`` in the run's dtype may land from the exact
        value (0 for an update: the oracle applies it to the side's own gradient)."""
        d = self.d
        if d.stage == "update":
            return 0.0
        unit = float(np.finfo(self.spec.np_dtype).eps) / 2
        layer = 0 if d.layer is None else d.layer
        return oracle.rounding_spread(self.spec, start, self.x, self.y, d.stage, layer, d.tensor, unit)

    def _buffer(self, side: str, rule: Rule) -> tuple[Array | None, tuple[Array, Array] | None]:
        """The side's momentum buffer before this step under ``rule``, and the step it was read from."""
        opt = self.spec.optimizer
        if not (opt.momentum and rule.momentum) or self.d.step == 0:
            return None, None
        if self.previous is None:
            raise ValueError(
                f"the momentum buffers at step {self.d.step} are unknown (diagnose needs the previous step)"
            )
        rec = self.previous[side]
        p_before, p_after = tensor_of(rec.start, self.d), tensor_of(rec.result.params, self.d)
        buf = oracle.buffer_from_step(opt, rule, p_before, p_after, tensor_of(rec.result.grads, self.d))
        return buf, (p_before, p_after)

    @property
    def method(self) -> str:
        stage = self.d.stage
        if stage == "gradient":
            h = f"h ~ {oracle.FD_STEP:.1e} x max(1, |p|)"
            return f"fourth-order central differences of the float64 loss, {h}"
        if stage == "update":
            return "torch.optim.SGD's documented update in float64, from each side's own gradient"
        return "the layer's math recomputed in float64"

    # -- the verdict --

    def diagnose(self) -> Diagnosis:
        verdict, reason = self._verdict()
        if verdict == "undetermined":
            hint = reason
        else:
            side = self.sides[verdict]
            evidence = Evidence(
                self.spec,
                self.x,
                self.y,
                self.d,
                verdict,
                side.value,
                side.estimate,
                side.start,
                side.result,
                lambda rule: self._buffer(verdict, rule)[0],
            )
            hint = explain(evidence)
        ref = self.sides["reference"].estimate
        index = tuple(self.d.index or ())
        known = bool(ref.known[index])
        return Diagnosis(
            verdict,
            hint,
            float(ref.value[index]) if known else None,
            float(ref.err[index]) if known else None,
            self.method,
        )

    def _ok(self, side: _Side, rounding: bool = True) -> Array:
        """Where the side agrees with its oracle: within TRUST x the oracle's error plus the tolerance,
        and (``rounding``) TRUST x how far a correct side may land in the run's dtype."""
        est = side.estimate
        spread = self.rounding[side.name] if rounding else 0.0
        with np.errstate(invalid="ignore"):
            allowed = TRUST * (est.err + spread) + self.atol + self.rtol * np.abs(est.value)
            return np.abs(side.value - est.value) <= allowed

    def _clearly_off(self, side: _Side, other: _Side) -> Array:
        """Where ``side`` is off while ``other`` agrees within the tolerance alone, or, where ``other``
        needs the rounding allowance too (the estimate of that rounding then decides), off by
        ROUNDING_RATIO times as much as ``other``."""
        with np.errstate(invalid="ignore"):
            off = np.abs(side.value - side.estimate.value)
            other_off = np.abs(other.value - other.estimate.value)
        return self._ok(other, rounding=False) | (off > ROUNDING_RATIO * other_off)

    def _verdict(self) -> tuple[str, str]:
        cand, ref = self.sides["candidate"], self.sides["reference"]
        usable = self.mismatched.copy()
        for s in (cand, ref):
            usable &= s.estimate.known & np.isfinite(s.estimate.value) & np.isfinite(s.estimate.err)
        c_ok, r_ok = self._ok(cand), self._ok(ref)
        blame = {
            "candidate": usable & ~c_ok & r_ok & self._clearly_off(cand, ref),
            "reference": usable & c_ok & ~r_ok & self._clearly_off(ref, cand),
        }
        both = usable & ~c_ok & ~r_ok
        disputed = what(self.d)
        if both.any() or (blame["candidate"].any() and blame["reference"].any()):
            return "undetermined", (
                f"Both sides' {disputed} differ from the oracle ({self.method}) beyond its error, so "
                "neither is confirmed: look for a mistake they share, or a documented torch rule "
                "that both implement differently."
            )
        for side in SIDES:
            if blame[side].any():
                return side, ""
        if (usable & (c_ok != r_ok)).any():  # one side off, but not clearly (see _clearly_off)
            return "undetermined", (
                f"The oracle cannot tell: one side's {disputed} is off by more than the other's, but "
                f"the other too is off by more than the tolerance, within how far a correct "
                f"{self.spec.dtype} computation lands from the exact value here: both are as far off "
                "as rounding takes them, by that estimate, and it cannot decide between them."
            )
        kinks = usable & (cand.estimate.kink | ref.estimate.kink)
        if kinks.any():
            return "undetermined", (
                f"The oracle cannot tell: where the {disputed} differs, a perturbation crosses a kink "
                "(a ReLU-like activation at z = 0, or L1 at f = y), so the derivative there is a convention; "
                "torch takes relu'(0) = 0 and sign(0) = 0."
            )
        if not usable.any():
            return "undetermined", f"The oracle could not recompute the {disputed} where the sides differ."
        gap = float(np.nanmax(np.abs(cand.value - ref.value)[usable]))
        bound = float(np.nanmax(ref.estimate.err[usable]))
        rounding = float(np.nanmax(np.broadcast_to(self.rounding["reference"], usable.shape)[usable]))
        if rounding > bound:
            return "undetermined", (
                f"The oracle cannot tell: the sides differ by {gap:.2g}, within how far a correct "
                f"{self.spec.dtype} computation lands from the exact value here (up to {TRUST:g} x "
                f"{rounding:.2g}, where sums cancel, plus the tolerance): a difference this small is "
                "rounding."
            )
        return "undetermined", (
            f"The oracle cannot tell: the sides differ by {gap:.2g}, within what {self.method} resolves "
            f"here ({TRUST:g} x {bound:.2g} plus the tolerance): a difference this small is rounding."
        )


def _same(a: list[LayerParams], b: list[LayerParams]) -> bool:
    def equal(p: Array | None, q: Array | None) -> bool:
        return p is q or (p is not None and q is not None and np.array_equal(p, q))

    return all(equal(p.weight, q.weight) and equal(p.bias, q.bias) for p, q in zip(a, b))
