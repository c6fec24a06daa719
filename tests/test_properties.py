"""Properties over any network the strategies draw, at the verifier's default tolerances.

First the equivalence itself: NumPy and torch agree, step after step, in both modes.
Then properties that need no second backend, each checked on both backends: how the
gradients scale between ``sum`` and ``mean``, a zero learning rate, permuted hidden
units, repeated rows, and float32 against float64.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nnparity import DEFAULT_TOLERANCES, LayerParams, NetworkSpec, StepResult, Tolerance, load_backend, verify
from nnparity.records import copy_params
from nnparity.strategies import batches, initial_params, network_specs

BACKENDS = ["numpy", "torch"]


def train(
    backend: str,
    spec: NetworkSpec,
    params: Sequence[LayerParams],
    x: np.ndarray,
    y: np.ndarray,
    steps: int = 1,
) -> list[StepResult]:
    """The step results of ``steps`` SGD steps of ``backend`` from ``params``."""
    net = load_backend(backend)(spec, copy_params(params))
    return [net.step(x, y) for _ in range(steps)]


def tensors(layers: Sequence[LayerParams]) -> list[np.ndarray]:
    return [t for layer in layers for t in (layer.weight, layer.bias) if t is not None]


def assert_close(actual: Sequence[np.ndarray], expected: Sequence[np.ndarray], tol: Tolerance) -> None:
    """Element by element, ``|actual - expected| <= atol + rtol * |expected|``, as the verifier compares."""
    __tracebackhide__ = True
    assert len(actual) == len(expected)
    for i, (a, b) in enumerate(zip(actual, expected)):
        np.testing.assert_allclose(a, b, rtol=tol.rtol, atol=tol.atol, err_msg=f"tensor {i}")


def assert_steps_close(actual: StepResult, expected: StepResult, tol: Tolerance) -> None:
    __tracebackhide__ = True
    assert_close([np.asarray(actual.loss)], [np.asarray(expected.loss)], tol)
    assert_close(tensors(actual.grads), tensors(expected.grads), tol)
    assert_close(tensors(actual.params), tensors(expected.params), tol)


@pytest.mark.parametrize("mode", ["free", "resync"])
@settings(deadline=None)
@given(data=st.data())
def test_numpy_and_torch_agree(mode: str, data: st.DataObject) -> None:
    spec = data.draw(network_specs(), label="spec")
    x, y = data.draw(batches(spec), label="batch")
    params = data.draw(initial_params(spec), label="params")
    steps = data.draw(st.integers(2, 5), label="steps")
    report = verify(spec, x, y, steps=steps, params=params, mode=mode)
    assert report.ok, report.summary()


@pytest.mark.parametrize("backend", BACKENDS)
@settings(deadline=None)
@given(data=st.data())
def test_sum_gradients_are_the_mean_ones_times_the_count(backend: str, data: st.DataObject) -> None:
    spec = data.draw(network_specs(reductions=["mean"]), label="spec")
    x, y = data.draw(batches(spec), label="batch")
    params = data.draw(initial_params(spec), label="params")
    # The elements the mean averages: every output of every row, or every row for cross-entropy.
    count = x.shape[0] if spec.loss == "cross_entropy" else y.size
    (mean,) = train(backend, spec, params, x, y)
    (total,) = train(backend, replace(spec, reduction="sum"), params, x, y)
    tol = DEFAULT_TOLERANCES[spec.dtype]
    assert_close([np.asarray(total.loss)], [np.asarray(mean.loss) * count], tol)
    assert_close(tensors(total.grads), [g * count for g in tensors(mean.grads)], tol)


@pytest.mark.parametrize("backend", BACKENDS)
@settings(deadline=None)
@given(data=st.data())
def test_zero_learning_rate_leaves_the_weights_unchanged(backend: str, data: st.DataObject) -> None:
    spec = data.draw(network_specs(), label="spec")
    spec = replace(spec, optimizer=replace(spec.optimizer, lr=0.0))
    x, y = data.draw(batches(spec), label="batch")
    params = data.draw(initial_params(spec), label="params")
    steps = data.draw(st.integers(1, 4), label="steps")
    for result in train(backend, spec, params, x, y, steps):
        for after, before in zip(tensors(result.params), tensors(params)):
            np.testing.assert_array_equal(after, before)


@pytest.mark.parametrize("backend", BACKENDS)
@settings(deadline=None)
@given(data=st.data())
def test_permuting_hidden_units_permutes_the_gradients(backend: str, data: st.DataObject) -> None:
    spec = data.draw(network_specs(min_layers=2), label="spec")
    x, y = data.draw(batches(spec), label="batch")
    params = data.draw(initial_params(spec), label="params")
    identity_in, identity_out = np.arange(spec.sizes[0]), np.arange(spec.sizes[-1])
    hidden = [np.array(data.draw(st.permutations(range(w)), label="perm")) for w in spec.sizes[1:-1]]
    orders = [identity_in, *hidden, identity_out]  # the order of each layer's units

    def permuted(layers: Sequence[LayerParams]) -> list[LayerParams]:
        return [
            LayerParams(
                p.weight[orders[i]][:, orders[i + 1]], None if p.bias is None else p.bias[orders[i + 1]]
            )
            for i, p in enumerate(layers)
        ]

    (plain,) = train(backend, spec, params, x, y)
    (shuffled,) = train(backend, spec, permuted(params), x, y)
    tol = DEFAULT_TOLERANCES[spec.dtype]
    expected = plain._replace(grads=permuted(plain.grads), params=permuted(plain.params))
    assert_steps_close(shuffled, expected, tol)


@pytest.mark.parametrize("backend", BACKENDS)
@settings(deadline=None)
@given(data=st.data())
def test_repeating_every_row_leaves_mean_gradients_unchanged(backend: str, data: st.DataObject) -> None:
    spec = data.draw(network_specs(reductions=["mean"]), label="spec")
    x, y = data.draw(batches(spec), label="batch")
    params = data.draw(initial_params(spec), label="params")
    times = data.draw(st.integers(2, 3), label="times")
    (once,) = train(backend, spec, params, x, y)
    (repeated,) = train(backend, spec, params, np.repeat(x, times, axis=0), np.repeat(y, times, axis=0))
    assert_steps_close(repeated, once, DEFAULT_TOLERANCES[spec.dtype])


@pytest.mark.parametrize("backend", BACKENDS)
@settings(deadline=None)
@given(data=st.data())
def test_a_float32_step_stays_close_to_the_float64_step(backend: str, data: st.DataObject) -> None:
    # BCE on sigmoid outputs is left out: float32 rounds sigmoid(z) to exactly 1 from z ~ 16.6,
    # where BCELoss clamps log(0) at -100, while float64 still resolves it (torch's reason for
    # BCEWithLogitsLoss). The other losses keep float32 within its tolerance of float64.
    losses = ["mse", "l1", "bce_with_logits", "cross_entropy"]
    spec32 = data.draw(network_specs(dtypes=["float32"], losses=losses), label="spec")
    spec64 = replace(spec32, dtype="float64")
    x, y = data.draw(batches(spec32), label="batch")
    params = data.draw(initial_params(spec32), label="params")
    params64 = [LayerParams(*(None if t is None else t.astype(np.float64) for t in p)) for p in params]
    (single,) = train(backend, spec32, params, x, y)
    (double,) = train(backend, spec64, params64, x.astype(np.float64), y.astype(np.float64))
    tol = DEFAULT_TOLERANCES["float32"]
    assert_close(single.activations or [], double.activations or [], tol)
    assert_steps_close(single, double, tol)
