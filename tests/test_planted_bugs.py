"""Planted backprop bugs: ``verify`` names the step, stage, layer and tensor where each goes wrong.

Each bug is a small backend defined here and passed as ``candidate=TheClass``. Bugs in
the math itself (a dropped activation derivative, a missing factor in the loss
gradient) subclass :class:`NumpyBackend` and swap one of its rules. Bugs in what a
step hands back or in the update use :class:`Planted`, a wrapper that takes the
gradients from a correct ``NumpyBackend`` at its own current parameters, lets a
subclass corrupt them, and then applies the update *with the corrupted gradients*,
so the planted bug behaves as it would in a real hand-written implementation.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import pytest

from nnparity import SGD, LayerParams, NetworkSpec, Report, StepResult, init_params, verify
from nnparity.activations import Activation, d_identity
from nnparity.initialization import check_params
from nnparity.losses import Loss, d_mse
from nnparity.numpy_backend import NumpyBackend
from nnparity.optim import SGDState, sgd_init, sgd_update
from nnparity.records import copy_params

ROWS = 6
STEPS = 12

# Three weight layers with biases: gradients are compared as layer 2 weight, layer 2 bias,
# layer 1 weight, ..., so a bug's position in that order is unambiguous.
DEEP = NetworkSpec((3, 5, 4, 2), ("sigmoid", "tanh", "identity"), bias=True, loss="mse")
# A square middle layer, so that a transposed weight gradient still has the right shape.
SQUARE = NetworkSpec((3, 3, 3, 2), ("tanh", "tanh", "identity"), loss="mse")
DAMPENED = dataclasses.replace(DEEP, optimizer=SGD(0.05, momentum=0.9, dampening=0.5))


def _data(spec: NetworkSpec, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(ROWS, spec.sizes[0]))
    y = rng.normal(scale=0.5, size=(ROWS, spec.sizes[-1]))
    return x, y


def _params(spec: NetworkSpec) -> list[LayerParams]:
    return init_params(spec, seed=11, scheme="torch")


def _flat(layers: Sequence[LayerParams]) -> list[np.ndarray]:
    """Tensors in torch's parameter order: each layer's weight, then its bias."""
    return [t for p in layers for t in (p.weight, p.bias) if t is not None]


def _unflat(tensors: Sequence[np.ndarray], bias: bool) -> list[LayerParams]:
    it = iter(tensors)
    return [LayerParams(w, next(it) if bias else None) for w in it]


# --- bugs in the backprop math ------------------------------------------------------------------------


class DroppedActivationDerivative(NumpyBackend):
    """Layer 0's activation is treated as the identity on the way back (forward is right)."""

    def __init__(self, spec: NetworkSpec, params: Sequence[LayerParams]) -> None:
        super().__init__(spec, params)
        act = self._acts[0]
        self._acts[0] = Activation(act.name, act.forward, d_identity)


def _d_mse_without_the_2(a: np.ndarray, y: np.ndarray, reduction: str) -> np.ndarray:
    return d_mse(a, y, reduction) / 2.0


class MissingFactorTwo(NumpyBackend):
    """dE/df = (f - y) / N instead of 2 (f - y) / N: the tutorial's mistake."""

    def __init__(self, spec: NetworkSpec, params: Sequence[LayerParams]) -> None:
        super().__init__(spec, params)
        self._loss = Loss(self._loss.name, self._loss.value, _d_mse_without_the_2)


# --- bugs in what a step returns, or in the update ---------------------------------------------------


class Planted:
    """A backend whose gradients and update a subclass may corrupt; correct as it stands."""

    def __init__(self, spec: NetworkSpec, params: Sequence[LayerParams]) -> None:
        self.spec = spec
        self._inner = NumpyBackend(spec, params)
        self._params = check_params(spec, params)
        self._state = sgd_init(len(_flat(self._params)))
        self.t = 0

    def set_params(self, params: Sequence[LayerParams]) -> None:
        self._params = check_params(self.spec, params)

    def predict(self, x: np.ndarray) -> np.ndarray:
        self._inner.set_params(self._params)
        return self._inner.predict(x)

    def gradients(self, grads: list[LayerParams]) -> list[LayerParams]:
        """The gradients the update uses and the step reports."""
        return grads

    def update(
        self, tensors: list[np.ndarray], grads: list[np.ndarray], state: SGDState
    ) -> tuple[list[np.ndarray], SGDState]:
        return sgd_update(self.spec.optimizer, tensors, grads, state)

    def step(self, x: np.ndarray, y: np.ndarray) -> StepResult:
        self._inner.set_params(self._params)
        right = self._inner.step(x, y)  # its own update is discarded
        grads = self.gradients([LayerParams(g.weight.copy(), g.bias) for g in right.grads])
        new, self._state = self.update(_flat(self._params), _flat(grads), self._state)
        self._params = _unflat(new, self.spec.bias)
        self.t += 1
        return StepResult(right.loss, grads, copy_params(self._params), right.activations)


class TransposedGradient(Planted):
    """Layer 1's weight gradient comes out transposed (``dE_dz.T @ a_prev``)."""

    def gradients(self, grads: list[LayerParams]) -> list[LayerParams]:
        grads[1] = grads[1]._replace(weight=grads[1].weight.T.copy())
        return grads


class WrongSignUpdate(Planted):
    """``p + lr * g``: gradient ascent."""

    def update(
        self, tensors: list[np.ndarray], grads: list[np.ndarray], state: SGDState
    ) -> tuple[list[np.ndarray], SGDState]:
        return sgd_update(self.spec.optimizer, tensors, [-g for g in grads], state)


class AveragedBiasGradient(Planted):
    """One layer's bias gradient is the mean over the rows instead of the sum."""

    layer: ClassVar[int] = 0

    def gradients(self, grads: list[LayerParams]) -> list[LayerParams]:
        g = grads[self.layer]
        assert g.bias is not None
        grads[self.layer] = g._replace(bias=g.bias / ROWS)
        return grads


class AveragedBiasGradientLast(AveragedBiasGradient):
    layer: ClassVar[int] = 2


class Float32RoundTrip(Planted):
    """One layer's weight gradient passes through float32 inside a float64 run."""

    layer: ClassVar[int] = 1

    def gradients(self, grads: list[LayerParams]) -> list[LayerParams]:
        g = grads[self.layer]
        grads[self.layer] = g._replace(weight=g.weight.astype(np.float32).astype(np.float64))
        return grads


class Float32RoundTripFirst(Float32RoundTrip):
    layer: ClassVar[int] = 0


class IgnoresDampening(Planted):
    """Momentum without dampening: identical at step 0 (the buffer is the gradient), wrong after."""

    def update(
        self, tensors: list[np.ndarray], grads: list[np.ndarray], state: SGDState
    ) -> tuple[list[np.ndarray], SGDState]:
        opt = dataclasses.replace(self.spec.optimizer, dampening=0.0)
        return sgd_update(opt, tensors, grads, state)


class WrongSignAtStepZeroOnly(WrongSignUpdate):
    """A one-off slip: the first update goes the wrong way, the rest are right."""

    def update(
        self, tensors: list[np.ndarray], grads: list[np.ndarray], state: SGDState
    ) -> tuple[list[np.ndarray], SGDState]:
        if self.t == 0:
            return super().update(tensors, grads, state)
        return sgd_update(self.spec.optimizer, tensors, grads, state)


# --- malformed step results ---------------------------------------------------------------------------


class WrongShapeGradient(NumpyBackend):
    """Layer 0's (3, 5) weight gradient is returned transposed, as (5, 3)."""

    def step(self, x: np.ndarray, y: np.ndarray) -> StepResult:
        result = super().step(x, y)
        grads = list(result.grads)
        grads[0] = grads[0]._replace(weight=grads[0].weight.T)
        return result._replace(grads=grads)


class MissingBiasGradient(NumpyBackend):
    """Layer 1's bias gradient is ``None`` although the spec has biases."""

    def step(self, x: np.ndarray, y: np.ndarray) -> StepResult:
        result = super().step(x, y)
        grads = list(result.grads)
        grads[1] = grads[1]._replace(bias=None)
        return result._replace(grads=grads)


class MissingUpdatedBias(NumpyBackend):
    """Layer 0's updated bias is ``None`` although the spec has biases."""

    def step(self, x: np.ndarray, y: np.ndarray) -> StepResult:
        result = super().step(x, y)
        params = list(result.params)
        params[0] = params[0]._replace(bias=None)
        return result._replace(params=params)


class NaNLoss(NumpyBackend):
    """Reports a NaN loss (everything else right)."""

    def step(self, x: np.ndarray, y: np.ndarray) -> StepResult:
        return super().step(x, y)._replace(loss=float("nan"))


class NaNActivation(NumpyBackend):
    """One element of layer 1's activation is NaN."""

    def step(self, x: np.ndarray, y: np.ndarray) -> StepResult:
        result = super().step(x, y)
        assert result.activations is not None
        acts = [a.copy() for a in result.activations]
        acts[1][2, 1] = np.nan
        return result._replace(activations=acts)


class LossIsNone(NumpyBackend):
    def step(self, x: np.ndarray, y: np.ndarray) -> StepResult:
        return super().step(x, y)._replace(loss=None)  # type: ignore[arg-type]


class StepReturnsNone(NumpyBackend):
    def step(self, x: np.ndarray, y: np.ndarray) -> StepResult:
        super().step(x, y)
        return None  # type: ignore[return-value]


class TooFewGradients(NumpyBackend):
    """Gradients for layers 0 and 1 only: layer 2's, compared first, is missing."""

    def step(self, x: np.ndarray, y: np.ndarray) -> StepResult:
        result = super().step(x, y)
        return result._replace(grads=result.grads[:2])


class TextGradient(NumpyBackend):
    def step(self, x: np.ndarray, y: np.ndarray) -> StepResult:
        result = super().step(x, y)
        grads = list(result.grads)
        grads[1] = grads[1]._replace(weight="dE_dW")  # type: ignore[arg-type]
        return result._replace(grads=grads)


class ParamsAsOneArray(NumpyBackend):
    """Returns the updated parameters as one flat array instead of a list of LayerParams."""

    def step(self, x: np.ndarray, y: np.ndarray) -> StepResult:
        result = super().step(x, y)
        flat = np.concatenate([t.ravel() for t in _flat(result.params)])
        return result._replace(params=flat)  # type: ignore[arg-type]


class ComplexGradient(NumpyBackend):
    """Layer 1's weight gradient has the right real part and a large imaginary part."""

    def step(self, x: np.ndarray, y: np.ndarray) -> StepResult:
        result = super().step(x, y)
        grads = list(result.grads)
        grads[1] = grads[1]._replace(weight=grads[1].weight + 5j)
        return result._replace(grads=grads)


# --- the table ----------------------------------------------------------------------------------------

# (candidate, spec, (step, stage, layer, tensor))
LOCATED: dict[str, tuple[type, NetworkSpec, tuple[int, str, int | None, str]]] = {
    "dropped-activation-derivative": (DroppedActivationDerivative, DEEP, (0, "gradient", 0, "weight")),
    "missing-factor-2": (MissingFactorTwo, DEEP, (0, "gradient", 2, "weight")),
    "transposed-gradient": (TransposedGradient, SQUARE, (0, "gradient", 1, "weight")),
    "wrong-sign-update": (WrongSignUpdate, DEEP, (0, "update", 0, "weight")),
    "averaged-bias-gradient-layer-0": (AveragedBiasGradient, DEEP, (0, "gradient", 0, "bias")),
    "averaged-bias-gradient-layer-2": (AveragedBiasGradientLast, DEEP, (0, "gradient", 2, "bias")),
    "float32-round-trip-layer-1": (Float32RoundTrip, DEEP, (0, "gradient", 1, "weight")),
    "float32-round-trip-layer-0": (Float32RoundTripFirst, DEEP, (0, "gradient", 0, "weight")),
    "ignores-dampening": (IgnoresDampening, DAMPENED, (1, "update", 0, "weight")),
    "nan-loss": (NaNLoss, DEEP, (0, "loss", None, "loss")),
    "nan-activation": (NaNActivation, DEEP, (0, "forward", 1, "activation")),
}
MALFORMED: dict[str, tuple[type, NetworkSpec, tuple[int, str, int | None, str], str]] = {
    "wrong-shape": (
        WrongShapeGradient,
        DEEP,
        (0, "gradient", 0, "weight"),
        "shapes differ: candidate (5, 3), reference (3, 5)",
    ),
    "missing-bias-gradient": (MissingBiasGradient, DEEP, (0, "gradient", 1, "bias"), "bias is None"),
    "missing-updated-bias": (MissingUpdatedBias, DEEP, (0, "update", 0, "bias"), "bias is None"),
    "loss-is-none": (LossIsNone, DEEP, (0, "loss", None, "loss"), "the candidate's loss is None"),
    "step-returns-none": (StepReturnsNone, DEEP, (0, "loss", None, "loss"), "missing from the step result"),
    "too-few-gradients": (
        TooFewGradients,
        DEEP,
        (0, "gradient", 2, "weight"),
        "the candidate's weight is missing from the step result",
    ),
    "text-gradient": (
        TextGradient,
        DEEP,
        (0, "gradient", 1, "weight"),
        "weight holds <U5 values, not real numbers",
    ),
}
# Bugs that are wrong at every step, whatever the weights.
EVERY_STEP = [
    "dropped-activation-derivative",
    "missing-factor-2",
    "transposed-gradient",
    "wrong-sign-update",
    "averaged-bias-gradient-layer-0",
    "float32-round-trip-layer-1",
    "nan-loss",
    "wrong-shape",
    "missing-bias-gradient",
    "step-returns-none",
]
MODES = ("free", "resync")


def _case(name: str) -> tuple[type, NetworkSpec, tuple[int, str, int | None, str]]:
    if name in LOCATED:
        return LOCATED[name]
    cls, spec, where, _ = MALFORMED[name]
    return cls, spec, where


def _run(name: str, mode: str, keep_going: bool = False) -> Report:
    cls, spec, _ = _case(name)
    x, y = _data(spec)
    return verify(
        spec, x, y, steps=STEPS, params=_params(spec), candidate=cls, mode=mode, keep_going=keep_going
    )


def _where(report: Report) -> tuple[int, str, int | None, str]:
    d = report.first_divergence
    assert d is not None, report.summary()
    return d.step, d.stage, d.layer, d.tensor


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("spec", [DEEP, SQUARE, DAMPENED], ids=["deep", "square", "dampened"])
def test_controls_agree(spec: NetworkSpec, mode: str) -> None:
    """Without a bug the test's backends agree with torch, so every report below is the bug's."""
    x, y = _data(spec)
    for candidate in (NumpyBackend, Planted):
        report = verify(spec, x, y, steps=STEPS, params=_params(spec), candidate=candidate, mode=mode)
        assert report.ok, report.summary()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", list(LOCATED))
def test_bug_is_located(name: str, mode: str) -> None:
    _, _, expected = LOCATED[name]
    report = _run(name, mode)
    assert not report.ok
    assert _where(report) == expected
    assert report.steps_run == expected[0] + 1  # stops at the first divergence
    assert report.divergent_steps == 1
    d = report.first_divergence
    assert d is not None
    assert d.message is None
    assert d.index is not None
    assert d.mismatched >= 1
    assert d.place in str(d)
    cls = LOCATED[name][0]
    assert report.candidate == f"{cls.__module__}:{cls.__qualname__}"
    assert report.summary().startswith(f"{report.candidate} vs torch, mode {mode}")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_result_is_a_divergence_not_a_crash(name: str, mode: str) -> None:
    _, _, expected, message = MALFORMED[name]
    report = _run(name, mode)
    assert not report.ok
    assert _where(report) == expected
    d = report.first_divergence
    assert d is not None
    assert d.message is not None
    assert message in d.message
    assert d.index is None
    assert math.isnan(d.candidate_value)
    assert math.isnan(d.reference_value)
    assert "cannot be compared" in str(d)
    # The report still serialises.
    assert '"ok": false' in report.to_json()


@pytest.mark.parametrize("mode", MODES)
def test_nan_loss_is_reported_as_a_value(mode: str) -> None:
    report = _run("nan-loss", mode)
    d = report.first_divergence
    assert d is not None
    assert math.isnan(d.candidate_value)
    assert math.isfinite(d.reference_value)
    assert math.isnan(d.abs_err)
    assert math.isnan(report.trace["candidate_loss"].iloc[0])
    assert '"candidate_value": "nan"' in report.to_json()


@pytest.mark.parametrize("name", ["float32-round-trip-layer-1", "float32-round-trip-layer-0"])
def test_float32_round_trip_is_a_tiny_error_that_float64_defaults_catch(name: str) -> None:
    report = _run(name, "free")
    d = report.first_divergence
    assert d is not None
    assert 1e-9 < d.rel_err < 1e-7  # float32's rounding, far below what any loose check would see
    assert d.rtol == 1e-9
    # Forward, loss and the layers after it are exact or nearly so: only this gradient is off.
    row = report.trace.iloc[0]
    assert row["forward_rel_err"] < 1e-12
    assert row["loss_rel_err"] < 1e-12


def test_dropped_derivative_leaves_the_later_layers_right() -> None:
    """The gradients of layers 2 and 1 are compared first and agree; only layer 0's is wrong."""
    x, y = _data(DEEP)
    cand = DroppedActivationDerivative(DEEP, _params(DEEP)).step(x, y)
    ref = NumpyBackend(DEEP, _params(DEEP)).step(x, y)
    for layer in (1, 2):
        np.testing.assert_array_equal(cand.grads[layer].weight, ref.grads[layer].weight)
    assert not np.allclose(cand.grads[0].weight, ref.grads[0].weight)
    np.testing.assert_array_equal(cand.activations[-1], ref.activations[-1])  # type: ignore[index]


def test_missing_factor_two_is_off_by_exactly_half() -> None:
    report = _run("missing-factor-2", "free")
    d = report.first_divergence
    assert d is not None
    assert d.candidate_value == pytest.approx(d.reference_value / 2, rel=1e-12)


def test_wrong_sign_update_moves_the_other_way() -> None:
    report = _run("wrong-sign-update", "free")
    d = report.first_divergence
    assert d is not None
    start = _params(DEEP)[0].weight[d.index]
    # The reference moved from start by -lr*g, the candidate by +lr*g.
    assert d.candidate_value - start == pytest.approx(start - d.reference_value, rel=1e-9)


@pytest.mark.parametrize("name", EVERY_STEP)
def test_resync_keep_going_counts_every_step(name: str) -> None:
    _, _, expected = _case(name)
    report = _run(name, "resync", keep_going=True)
    assert not report.ok
    assert report.steps_run == STEPS
    assert report.divergent_steps == STEPS
    assert _where(report) == expected
    assert f"({STEPS} of {STEPS} steps diverge)" in report.summary()


@pytest.mark.parametrize("name", ["missing-factor-2", "wrong-sign-update"])
def test_free_keep_going_runs_every_step(name: str) -> None:
    _, _, expected = _case(name)
    report = _run(name, "free", keep_going=True)
    assert report.steps_run == STEPS
    assert report.divergent_steps == STEPS
    assert _where(report) == expected
    assert len(report.trace) == STEPS


def test_a_one_off_slip_resync_forgives_and_free_does_not() -> None:
    """Resync hands the candidate torch's weights after every step; a free run carries the error on."""
    x, y = _data(DEEP)
    runs = {
        mode: verify(
            DEEP,
            x,
            y,
            steps=STEPS,
            params=_params(DEEP),
            candidate=WrongSignAtStepZeroOnly,
            mode=mode,
            keep_going=True,
        )
        for mode in MODES
    }
    for report in runs.values():
        assert _where(report) == (0, "update", 0, "weight")
    assert runs["resync"].divergent_steps == 1
    assert runs["free"].divergent_steps == STEPS
    # After the slip, the free run's forward pass differs from step 1 on; the resync run's never does.
    assert (runs["free"].trace["forward_rel_err"].iloc[1:] > 1e-9).all()
    assert (runs["resync"].trace["forward_rel_err"] < 1e-12).all()


def test_ignoring_dampening_is_invisible_at_step_zero() -> None:
    report = _run("ignores-dampening", "free", keep_going=True)
    assert report.trace["update_rel_err"].iloc[0] < 1e-12
    assert _where(report) == (1, "update", 0, "weight")


# Malformed results that once slipped through (a crash, a false agreement): each is a divergence.
@pytest.mark.parametrize(
    ("candidate", "where"),
    [
        pytest.param(
            ParamsAsOneArray,
            (0, "update", 0, "weight"),
            id="params-as-one-array",
        ),
        pytest.param(
            ComplexGradient,
            (0, "gradient", 1, "weight"),
            id="complex-gradient",
        ),
    ],
)
def test_once_missed_malformed_results_diverge(
    candidate: type, where: tuple[int, str, int | None, str]
) -> None:
    x, y = _data(DEEP)
    report = verify(DEEP, x, y, steps=STEPS, params=_params(DEEP), candidate=candidate)
    assert not report.ok
    assert _where(report) == where
