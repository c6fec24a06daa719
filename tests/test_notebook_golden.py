"""The reference notebook's printed figures, digit for digit, from the library (not the CLI).

One 10,000-step lockstep run (about ten seconds) is shared by every test in the module.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from nnparity import SGD, NetworkSpec, Report, init_params, verify
from nnparity.numpy_backend import NumpyBackend

NUM_ITERATIONS = 10_000
# The notebook's cell 3: the OR table as float32 arrays.
INPUTS = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32)
GROUND_TRUTH = np.array([0, 1, 1, 1], dtype=np.float32).reshape(-1, 1)
SPEC = NetworkSpec((2, 3, 1), ("sigmoid", "sigmoid"), optimizer=SGD(0.05))

# Printed by both the by-hand loop and the torch loop ("error at step {:5d}: {:10.6e}").
ERRORS = [
    "1.960156e-01",
    "1.651662e-01",
    "1.593565e-01",
    "1.550351e-01",
    "1.511067e-01",
    "1.465351e-01",
    "1.392272e-01",
    "1.234844e-01",
    "9.350530e-02",
    "6.205274e-02",
]
START_HIDDEN = (
    "[[4.17022005e-01 7.20324493e-01 1.14374817e-04]\n [3.02332573e-01 1.46755891e-01 9.23385948e-02]]"
)
START_OUTPUT = "[[0.18626021]\n [0.34556073]\n [0.39676747]]"
FINAL_HIDDEN_NUMPY = "[ 1.66707072  2.43454525 -1.50667653  1.66659174  2.29166158 -1.50681196]"
FINAL_HIDDEN_TORCH = "[ 1.66707072  1.66659174  2.43454525  2.29166158 -1.50667653 -1.50681196]"
FINAL_OUTPUT = "[ 0.70570663  2.04736287 -4.12867523]"
PREDICTIONS = ["0.334522", "0.846053", "0.849022", "0.925358"]
# The notebook prints with NumPy's default print options; pin them, whatever else ran first.
PRINT_DEFAULTS: dict[str, Any] = {
    "precision": 8,
    "threshold": 1000,
    "edgeitems": 3,
    "linewidth": 75,
    "suppress": False,
    "nanstr": "nan",
    "infstr": "inf",
    "sign": "-",
    "floatmode": "maxprec",
    "legacy": False,
}


def _printed(array: np.ndarray) -> str:
    with np.printoptions(**PRINT_DEFAULTS):
        return f"{array}"


@pytest.fixture(scope="module")
def report() -> Report:
    return verify(SPEC, INPUTS, GROUND_TRUTH, steps=NUM_ITERATIONS)


def test_the_run_agrees_at_every_step(report: Report) -> None:
    assert report.ok, report.summary()
    assert report.steps_run == NUM_ITERATIONS
    assert report.divergent_steps == 0
    assert len(report.trace) == NUM_ITERATIONS
    assert not report.trace.isna().any().any()


def test_starting_weights() -> None:
    params = init_params(SPEC)
    assert _printed(params[0].weight) == START_HIDDEN
    assert _printed(params[1].weight) == START_OUTPUT
    assert params[0].bias is None
    assert params[1].bias is None
    # The default starting weights are exactly the notebook's seeded numpy.random.rand draws.
    rng = np.random.RandomState(1)
    np.testing.assert_array_equal(params[0].weight, rng.rand(2, 3))
    np.testing.assert_array_equal(params[1].weight, rng.rand(3, 1))


def test_starting_weights_in_torch_layout() -> None:
    """The torch cell prints ``model[0].weight``, the transpose, at torch's 4 significant digits."""
    params = init_params(SPEC)
    hidden = torch.from_numpy(params[0].weight.T)
    assert "[[4.1702e-01, 3.0233e-01],\n        [7.2032e-01, 1.4676e-01],\n" in str(hidden)
    assert "[1.1437e-04, 9.2339e-02]], dtype=torch.float64" in str(hidden)
    assert "[[0.1863, 0.3456, 0.3968]]" in str(torch.from_numpy(params[1].weight.T))


@pytest.mark.parametrize("side", ["candidate", "reference"])
def test_error_every_thousand_steps(report: Report, side: str) -> None:
    losses = report.trace[f"{side}_loss"]
    printed = [f"{losses.iloc[i]:10.6e}" for i in range(0, NUM_ITERATIONS, NUM_ITERATIONS // 10)]
    assert printed == ERRORS


def test_final_weights_numpy_layout(report: Report) -> None:
    assert report.candidate == "numpy"
    final = report.final_params["candidate"]
    assert _printed(final[0].weight.flatten()) == FINAL_HIDDEN_NUMPY
    assert _printed(final[1].weight.flatten()) == FINAL_OUTPUT


def test_final_weights_torch_layout(report: Report) -> None:
    """torch's ``nn.Linear`` stores ``(fan_out, fan_in)``: the notebook prints that transpose."""
    assert report.reference == "torch"
    final = report.final_params["reference"]
    assert _printed(final[0].weight.T.flatten()) == FINAL_HIDDEN_TORCH
    assert _printed(final[1].weight.T.flatten()) == FINAL_OUTPUT


def test_final_weights_agree(report: Report) -> None:
    cand, ref = report.final_params["candidate"], report.final_params["reference"]
    for c, r in zip(cand, ref):
        np.testing.assert_allclose(c.weight, r.weight, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("side", ["candidate", "reference"])
def test_predictions(report: Report, side: str) -> None:
    backend = NumpyBackend(SPEC, report.final_params[side])
    predicted = backend.predict(INPUTS)
    assert predicted.shape == (4, 1)
    assert [f"{p:.6f}" for p in predicted.ravel()] == PREDICTIONS
    errors = GROUND_TRUTH.ravel() - predicted.ravel()
    assert [f"{e:.6f}" for e in errors] == ["-0.334522", "0.153947", "0.150978", "0.074642"]


def test_free_running_drift_stays_tiny(report: Report) -> None:
    """README: over the notebook's 10,000 free-running steps the sides stay within ~1e-11."""
    assert report.trace["forward_rel_err"].max() < 1e-10
    assert report.trace["loss_rel_err"].max() < 1e-10
    assert report.trace["update_rel_err"].max() < 1e-10


def _seed_output(steps: int) -> str:
    import io

    from nnparity.notebook import run_seed

    out = io.StringIO()
    run_seed(out, steps=steps)
    return out.getvalue()


@pytest.mark.parametrize(("steps", "printed"), [(15, [0, 3, 6, 9, 12]), (25, [0, 5, 10, 15, 20]), (7, [0])])
def test_error_lines_at_the_steps_the_notebook_prints_them(steps: int, printed: list[int]) -> None:
    """The notebook prints where ``i % (NUM_ITERATIONS / 10) == 0``, a float division."""
    lines = [line for line in _seed_output(steps).splitlines() if line.startswith("error at step")]
    assert [int(line.split()[3].rstrip(":")) for line in lines] == printed * 2  # numpy, then torch


def test_one_step_prints_the_gradients_as_the_notebook_does() -> None:
    """With NUM_ITERATIONS == 1 the notebook prints dE_dv and dE_dw, each side in its own layout."""
    text = _seed_output(1)
    numpy_part, torch_part = text.split("## torch (reference)")
    for part, rows in ((numpy_part, (2, 3)), (torch_part, (3, 2))):
        lines = part.splitlines()
        at = lines.index("dE_dv:")
        assert lines[at - 1].startswith("error at step     0:")
        assert len(lines[at + 1 : at + 1 + rows[0]]) == rows[0]
        assert lines[at + 1 + rows[0]] == "dE_dw:"
    # The printed numbers are the first step's gradients (torch's: its layout, the transpose).
    from nnparity.dataset import or_table
    from nnparity.notebook import notebook_spec

    spec, data = notebook_spec(), or_table()
    grads = NumpyBackend(spec, init_params(spec, seed=1)).step(data.x, data.y).grads
    assert f"dE_dv:\n{grads[0].weight}\ndE_dw:\n{grads[1].weight}\n" in numpy_part
    assert f"dE_dv:\n{grads[0].weight.T}\ndE_dw:\n{grads[1].weight.T}\n" in torch_part
