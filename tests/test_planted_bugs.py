"""Planted backprop bugs: ``verify`` names the step, stage, layer and tensor where each goes wrong.

Each bug is a small backend passed as ``candidate=TheClass``: those the diagnosis tests use
too come from ``planted.py`` (which says how they are built), the malformed results and a
one-off slip are defined here.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from nnparity import LayerParams, NetworkSpec, Report, StepResult, verify
from nnparity.numpy_backend import NumpyBackend
from nnparity.optim import SGDState, sgd_update
from planted import (
    DAMPENED,
    DEEP,
    SQUARE,
    AveragedBiasGradient,
    AveragedBiasGradientLast,
    DroppedActivationDerivative,
    Float32RoundTrip,
    Float32RoundTripFirst,
    IgnoresDampening,
    MissingFactorTwo,
    NaNLoss,
    Planted,
    TransposedGradient,
    WrongSignUpdate,
    flat,
    make_data,
    make_params,
)

STEPS = 12


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


class ExtraLayer(NumpyBackend):
    """Every list in the result has a fourth layer (NaN) the three-layer network does not have."""

    def step(self, x: np.ndarray, y: np.ndarray) -> StepResult:
        result = super().step(x, y)
        assert result.activations is not None
        extra = LayerParams(np.full((2, 2), np.nan), np.full(2, np.nan))
        return result._replace(
            grads=[*result.grads, extra],
            params=[*result.params, extra],
            activations=[*result.activations, np.full((6, 2), np.nan)],
        )


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
        one = np.concatenate([t.ravel() for t in flat(result.params)])
        return result._replace(params=one)  # type: ignore[arg-type]


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
    "extra-layer": (
        ExtraLayer,
        DEEP,
        (0, "forward", 3, "activation"),
        "the candidate's activation is in a layer the network does not have (4 activations for 3 layers)",
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
    x, y = make_data(spec)
    return verify(
        spec, x, y, steps=STEPS, params=make_params(spec), candidate=cls, mode=mode, keep_going=keep_going
    )


def _where(report: Report) -> tuple[int, str, int | None, str]:
    d = report.first_divergence
    assert d is not None, report.summary()
    return d.step, d.stage, d.layer, d.tensor


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("spec", [DEEP, SQUARE, DAMPENED], ids=["deep", "square", "dampened"])
def test_controls_agree(spec: NetworkSpec, mode: str) -> None:
    """Without a bug the test's backends agree with torch, so every report below is the bug's."""
    x, y = make_data(spec)
    for candidate in (NumpyBackend, Planted):
        report = verify(spec, x, y, steps=STEPS, params=make_params(spec), candidate=candidate, mode=mode)
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
    # The report still serialises, with the run's tolerance (not NaN) on the divergence.
    assert '"ok": false' in report.to_json()
    assert (d.rtol, d.atol) == (report.rtol, report.atol)


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
    x, y = make_data(DEEP)
    cand = DroppedActivationDerivative(DEEP, make_params(DEEP)).step(x, y)
    ref = NumpyBackend(DEEP, make_params(DEEP)).step(x, y)
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
    start = make_params(DEEP)[0].weight[d.index]
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
    x, y = make_data(DEEP)
    runs = {
        mode: verify(
            DEEP,
            x,
            y,
            steps=STEPS,
            params=make_params(DEEP),
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
    x, y = make_data(DEEP)
    report = verify(DEEP, x, y, steps=STEPS, params=make_params(DEEP), candidate=candidate)
    assert not report.ok
    assert _where(report) == where
