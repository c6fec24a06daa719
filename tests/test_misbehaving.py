"""Non-finite numbers and misbehaving backends end in a report (exit 1), never a crash (issue 7).

Each backend here misbehaves in one way a half-written backend does: it computes in the wrong
dtype, writes to its inputs, hands back arrays it goes on changing, or lets a value overflow.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

from nnparity import SGD, LayerParams, NetworkSpec, StepResult, init_params, verify
from nnparity.cli import main
from nnparity.compare import RowLayout
from nnparity.numpy_backend import NumpyBackend
from nnparity.torch_backend import TorchBackend

DEEP = NetworkSpec(sizes=(3, 4, 2), activations=("tanh", "sigmoid"), bias=True, optimizer=SGD(lr=0.1))


def _data(spec: NetworkSpec, rows: int = 5, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, (rows, spec.sizes[0])), rng.uniform(0, 1, (rows, spec.sizes[-1]))


# --- overflow -----------------------------------------------------------------------------------------

# w <- w (1 - 2 lr) on x = 1, y = 0: exact on both sides, |w| grows by 2e100 a step until it overflows.
EXPLODING = NetworkSpec(sizes=(1, 1), activations=("identity",), optimizer=SGD(lr=1e100))
ONE, ZERO = np.ones((1, 1)), np.zeros((1, 1))


def test_an_overflow_both_sides_share_is_reported_where_it_first_appears() -> None:
    report = verify(EXPLODING, ONE, ZERO, steps=50)
    d = report.first_divergence
    assert not report.ok
    assert d is not None
    # The weight is multiplied by 1 - 2e100 a step; the loss, w^2, is the first value to overflow.
    w = np.float64(init_params(EXPLODING)[0].weight.item())
    overflow_step = 0
    with np.errstate(over="ignore"):
        while np.isfinite(w * w):
            w, overflow_step = w * (1 - 2e100), overflow_step + 1
    assert overflow_step >= 2
    assert (d.step, d.stage, d.layer, d.tensor) == (overflow_step, "loss", None, "loss")
    assert d.nonfinite == "both"
    assert d.nonfinite_identical is True
    assert d.verdict == "undetermined"
    assert "identically on both sides" in str(d)
    # The trace is kept up to there, and every earlier step agreed.
    assert report.steps_run == overflow_step + 1
    assert np.isfinite(report.trace["loss_abs_err"].iloc[:-1]).all()


class NaNGradient(NumpyBackend):
    """Puts a NaN into layer 0's weight gradient from step 1 on, as a 0/0 would."""

    def step(self, x: np.ndarray, y: np.ndarray) -> StepResult:
        result = super().step(x, y)
        if getattr(self, "_stepped", False):
            result.grads[0].weight[1, 2] = np.nan
        self._stepped = True
        return result


def test_a_nan_on_one_side_names_that_side() -> None:
    x, y = _data(DEEP)
    d = verify(DEEP, x, y, steps=5, candidate=NaNGradient).first_divergence
    assert d is not None
    assert (d.step, d.stage, d.layer, d.tensor, d.index) == (1, "gradient", 0, "weight", (1, 2))
    assert d.nonfinite == "candidate"
    assert d.nonfinite_identical is False
    assert "on the candidate's side only" in str(d)


class NudgedGradient(NumpyBackend):
    """Adds 1e-3 to one gradient element: wrong, but finite."""

    def step(self, x: np.ndarray, y: np.ndarray) -> StepResult:
        result = super().step(x, y)
        result.grads[0].weight[0, 0] += 1e-3
        return result


def test_a_finite_divergence_is_not_called_non_finite() -> None:
    x, y = _data(DEEP)
    d = verify(DEEP, x, y, steps=3, candidate=NudgedGradient).first_divergence
    assert d is not None
    assert (d.stage, d.index) == ("gradient", (0, 0))
    assert d.nonfinite is None
    assert d.nonfinite_identical is None
    assert "Non-finite" not in str(d)


def test_the_overflow_run_exits_1_with_a_json_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "boom.toml"
    config.write_text(
        '[network]\nsizes = [1, 1]\nactivations = ["identity"]\n'
        '[optimizer]\nlr = 1e100\n[train]\nsteps = 50\n[data]\ncsv = "one.csv"\n'
    )
    (tmp_path / "one.csv").write_text("x,y\n1,0\n")
    assert main(["verify", "--config", str(config), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["first_divergence"]["nonfinite"] == "both"
    assert report["first_divergence"]["nonfinite_identical"] is True


@pytest.mark.parametrize(
    ("activations", "loss", "scale"),
    [
        (("sigmoid", "sigmoid"), "mse", 800.0),  # exp(800) overflows; sigmoid must still be 0 or 1
        (("softplus", "identity"), "mse", 30.0),  # beyond softplus's threshold of 20
        (("tanh", "sigmoid"), "bce", 1e3),  # outputs saturate at 0 and 1: BCE's log clamp
        (("elu", "identity"), "bce_with_logits", 1e3),
    ],
)
def test_extreme_but_finite_inputs_agree(activations: tuple[str, str], loss: str, scale: float) -> None:
    spec = NetworkSpec(sizes=(2, 3, 1), activations=activations, loss=loss, bias=True, optimizer=SGD(lr=1e-3))
    x = np.array([[1.0, -1.0], [-1.0, 1.0], [1.0, 1.0], [-1.0, -1.0]]) * scale
    y = np.array([[0.0], [1.0], [1.0], [0.0]])
    report = verify(spec, x, y, steps=5)
    assert report.ok, report.summary()


# --- wrong dtypes ---------------------------------------------------------------------------------------


class Float32Gradients(NumpyBackend):
    """Computes in float64 but hands back float32 gradients."""

    def step(self, x: np.ndarray, y: np.ndarray) -> StepResult:
        result = super().step(x, y)
        grads = [LayerParams(g.weight.astype(np.float32), g.bias) for g in result.grads]
        return result._replace(grads=grads)


def test_arrays_of_the_wrong_dtype_are_a_divergence_that_says_so() -> None:
    x, y = _data(DEEP)
    report = verify(DEEP, x, y, steps=3, candidate=Float32Gradients)
    d = report.first_divergence
    assert d is not None
    assert (d.step, d.stage, d.layer, d.tensor) == (0, "gradient", 1, "weight")
    assert d.message is not None
    assert "is float32, but the run is float64" in d.message


# --- backends that change what they should not ----------------------------------------------------------


class ScalesItsInputs(NumpyBackend):
    """Normalises the batch in place, changing the caller's array."""

    def step(self, x: np.ndarray, y: np.ndarray) -> StepResult:
        x /= 2.0
        return super().step(x, y)


def test_a_candidate_that_writes_to_its_inputs_is_stopped_there() -> None:
    x, y = _data(DEEP)
    x_before = x.copy()
    report = verify(DEEP, x, y, steps=3, candidate=ScalesItsInputs)
    d = report.first_divergence
    assert d is not None
    assert (d.step, d.stage, d.verdict) == (0, "step", "candidate")
    assert d.message is not None
    assert "read-only" in d.message
    assert "must not change" in d.message
    np.testing.assert_array_equal(x, x_before)  # the caller's data is untouched


class TorchScalesItsInputs(TorchBackend):
    """A reference that changes its input array in place (from its second step on)."""

    def step(self, x: np.ndarray, y: np.ndarray) -> StepResult:
        result = super().step(x, y)
        x[0, 0] += 1.0
        return result


def test_a_reference_that_changes_its_inputs_is_reported() -> None:
    x, y = _data(DEEP)
    report = verify(DEEP, x, y, steps=3, reference=TorchScalesItsInputs)
    d = report.first_divergence
    assert d is not None
    assert d.verdict == "reference"
    assert not report.ok
    assert d.message is not None
    assert "changed the input array x" in d.message


class KeepsReturnedArrays(NumpyBackend):
    """Returns its own weight arrays and updates them in place at the next step."""

    def __init__(self, spec: NetworkSpec, params: Sequence[LayerParams]) -> None:
        super().__init__(spec, params)
        self.kept = [np.array(p.weight) for p in params]

    def step(self, x: np.ndarray, y: np.ndarray) -> StepResult:
        result = super().step(x, y)
        for kept, p in zip(self.kept, result.params):
            kept[...] = p.weight
        return result._replace(params=[LayerParams(k, p.bias) for k, p in zip(self.kept, result.params)])


class KeepsReturnedArraysOddLoss(KeepsReturnedArrays):
    """The same, with the loss as a 0-d array: a result that fits no row, compared after the block
    (when its arrays have long changed), unless the run keeps them as they were returned."""

    def step(self, x: np.ndarray, y: np.ndarray) -> StepResult:
        result = super().step(x, y)
        return result._replace(loss=np.asarray(result.loss))


@pytest.mark.parametrize("candidate", [KeepsReturnedArrays, KeepsReturnedArraysOddLoss])
@pytest.mark.parametrize("steps", [5, 600])  # within the first block, and every block after
def test_a_backend_changing_arrays_it_returned_is_reported(steps: int, candidate: type) -> None:
    x, y = _data(DEEP)
    report = verify(DEEP, x, y, steps=steps, candidate=candidate, keep_going=True)
    d = report.first_divergence
    assert d is not None
    assert (d.step, d.stage, d.verdict) == (1, "step", "candidate")
    assert d.message is not None
    assert "changed, in place, the updated layer 0 weight it returned at step 0" in d.message
    # Every value it returned was right when it returned it: only the aliasing is reported.
    assert (report.trace["update_abs_err"] < 1e-12).all()


def test_the_built_in_backends_return_arrays_they_leave_alone() -> None:
    x, y = _data(DEEP)
    for steps in (3, 700):
        assert verify(DEEP, x, y, steps=steps, mode="resync").ok
        assert verify(DEEP, x, y, steps=steps, candidate="torch", reference="numpy").ok


class TorchWithAFrozenBias(TorchBackend):
    """Layer 0's bias takes no part in training: torch leaves its gradient at None."""

    def __init__(self, spec: NetworkSpec, params: Sequence[LayerParams]) -> None:
        super().__init__(spec, params)
        self.linears[0].bias.requires_grad_(False)


def test_a_parameter_without_a_gradient_is_reported_as_the_references_error() -> None:
    x, y = _data(DEEP)
    report = verify(DEEP, x, y, steps=3, reference=TorchWithAFrozenBias)
    d = report.first_divergence
    assert d is not None
    assert (d.step, d.verdict) == (0, "reference")
    assert d.message is not None
    assert "torch produced no gradient for a parameter" in d.message


@pytest.mark.parametrize("torch_order", [True, False])
def test_the_workers_step_says_the_same_of_a_missing_gradient(torch_order: bool) -> None:
    x, y = _data(DEEP)
    backend = TorchWithAFrozenBias(DEEP, init_params(DEEP))
    row = torch.empty(RowLayout(DEEP, len(x), forward=True).width, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="torch produced no gradient for a parameter"):
        backend.step_into(x, y, row, torch_order)


class WrongThenRaises(NumpyBackend):
    """A wrong bias gradient from step 0; at step 7 its step() raises."""

    steps = 0

    def step(self, x: np.ndarray, y: np.ndarray) -> StepResult:
        self.steps += 1
        if self.steps == 8:
            raise ValueError("out of cheese")
        result = super().step(x, y)
        result.grads[0].weight[...] *= 1.5
        return result


@pytest.mark.parametrize("keep_going", [True, False])
def test_a_keep_going_run_that_a_failure_ends_says_so(keep_going: bool) -> None:
    x, y = _data(DEEP)
    report = verify(DEEP, x, y, steps=20, candidate=WrongThenRaises, keep_going=keep_going)
    assert report.first_divergence is not None
    assert (report.first_divergence.step, report.first_divergence.stage) == (0, "gradient")
    if not keep_going:  # the run ends at its first divergence: nothing else stopped it
        assert report.stopped_by is None
        assert report.steps_run == 1
        return
    assert report.steps_run == 7
    assert report.divergent_steps == 7
    stop = report.stopped_by
    assert stop is not None
    assert (stop.step, stop.stage, stop.verdict) == (7, "step", "candidate")
    assert "; stopped at step 7: the candidate's step() raised ValueError: out of cheese" in report.summary()
    assert json.loads(report.to_json())["stopped_by"]["step"] == 7


class ActivationsOnce(NumpyBackend):
    """Activations as a one-pass iterator: a result the run must read only once."""

    def step(self, x: np.ndarray, y: np.ndarray) -> StepResult:
        result = super().step(x, y)
        return result._replace(activations=iter(result.activations))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "spec",
    [DEEP, NetworkSpec((30, 90, 5), ("tanh", "identity"), bias=True)],
    ids=["small-rows", "wide-rows"],  # the wide one's rows take the candidate's weight order
)
def test_a_step_result_is_read_once(spec: NetworkSpec) -> None:
    x, y = _data(spec)
    once = verify(spec, x, y, steps=20, candidate=ActivationsOnce, parallel=False)
    assert once.ok, once.summary()
    assert once.trace.equals(verify(spec, x, y, steps=20, parallel=False).trace)
