"""The NumPy backend agrees with torch, step after step, for every option the spec offers.

Every activation, loss, reduction and SGD option, with and without biases, in both
dtypes, free-running and resynchronised: ``verify`` with the default tolerances
must find no divergence over many steps. The full cartesian product would be slow,
so each option is crossed with dtype and mode around a fixed, representative rest.
"""

from __future__ import annotations

import numpy as np
import pytest

from nnparity import SGD, LayerParams, NetworkSpec, Report, init_params, verify
from nnparity.activations import ACTIVATIONS
from nnparity.losses import LOSSES

DTYPES = ("float32", "float64")
MODES = ("free", "resync")
ROWS = 6
STEPS = 25


def _inputs(rng: np.random.Generator, width: int) -> np.ndarray:
    """Standard-normal inputs: both signs in every column."""
    return rng.normal(size=(ROWS, width))


def _targets(rng: np.random.Generator, loss: str, width: int) -> np.ndarray:
    """Targets that suit ``loss``: probabilities for the cross-entropies, reals otherwise."""
    if loss in ("bce", "bce_with_logits"):
        return rng.uniform(0.0, 1.0, size=(ROWS, width))
    if loss == "cross_entropy":
        return rng.dirichlet(np.ones(width), size=ROWS)
    return rng.normal(scale=0.5, size=(ROWS, width))


def _assert_agrees(report: Report, steps: int = STEPS) -> None:
    assert report.ok, report.summary()
    assert report.first_divergence is None
    assert report.steps_run == steps
    assert report.divergent_steps == 0
    assert len(report.trace) == steps
    # Every stage was actually compared at every step (a NaN would mean it was skipped).
    assert not report.trace.isna().any().any()


def _pre_activations(spec: NetworkSpec, params: list[LayerParams], x: np.ndarray) -> list[np.ndarray]:
    """Each layer's ``z = a_prev @ W + b``, computed independently of either backend."""
    zs = []
    a = x
    for p, name in zip(params, spec.activations):
        z = a @ p.weight if p.bias is None else a @ p.weight + p.bias
        zs.append(z)
        a = ACTIVATIONS[name].forward(z)
    return zs


# --- activations -----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_every_activation_agrees(activation: str, dtype: str, mode: str) -> None:
    rng = np.random.default_rng(1001)
    spec = NetworkSpec(
        (3, 5, 4, 2),
        (activation, activation, activation),
        bias=True,
        loss="mse",
        optimizer=SGD(0.05),
        dtype=dtype,
    )
    params = init_params(spec, seed=3, scheme="torch")
    x, y = _inputs(rng, 3), _targets(rng, "mse", 2)
    _assert_agrees(verify(spec, x, y, steps=STEPS, params=params, mode=mode))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ["identity", "sigmoid", "tanh", "softplus", "elu"])
def test_activation_with_the_notebooks_init(activation: str, dtype: str) -> None:
    """The default ``numpy-rand`` weights (all positive) for the smooth activations."""
    rng = np.random.default_rng(1002)
    spec = NetworkSpec((3, 4, 2), (activation, "sigmoid"), loss="mse", dtype=dtype)
    x, y = _inputs(rng, 3), rng.uniform(0.0, 1.0, size=(ROWS, 2))
    _assert_agrees(verify(spec, x, y, steps=STEPS))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ["relu", "leaky_relu"])
def test_rectifiers_see_both_signs(activation: str, dtype: str, mode: str) -> None:
    """Pre-activations of both signs in every layer, so both branches of the derivative run."""
    rng = np.random.default_rng(1003)
    spec = NetworkSpec(
        (3, 5, 4, 2),
        (activation, activation, "identity"),
        bias=True,
        loss="mse",
        optimizer=SGD(0.05),
        dtype=dtype,
    )
    params = init_params(spec, seed=5, scheme="torch")
    x, y = _inputs(rng, 3).astype(dtype), _targets(rng, "mse", 2)
    # Each rectified layer has a good share of pre-activations on either side of zero.
    for layer, z in enumerate(_pre_activations(spec, params, x)[:2]):
        assert 0.2 < (z < 0).mean() < 0.8, f"layer {layer}: {(z < 0).mean():.0%} negative"
    report = verify(spec, x, y, steps=STEPS, params=params, mode=mode)
    _assert_agrees(report)
    # Some rectified units are zero (relu) or negative (leaky_relu) in the compared forward pass.
    zs = _pre_activations(spec, report.final_params["reference"], x)
    assert (zs[0] < 0).any()


# --- losses and reductions ---------------------------------------------------------------------------

LOSS_NETWORKS: dict[str, tuple[tuple[int, ...], tuple[str, ...]]] = {
    "mse": ((3, 5, 2), ("tanh", "identity")),
    "l1": ((3, 5, 2), ("tanh", "identity")),
    "bce": ((3, 5, 2), ("tanh", "sigmoid")),
    "bce_with_logits": ((3, 5, 2), ("tanh", "identity")),
    "cross_entropy": ((3, 5, 3), ("tanh", "identity")),
}


def test_every_loss_is_covered() -> None:
    assert set(LOSS_NETWORKS) == set(LOSSES)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("loss", sorted(LOSS_NETWORKS))
def test_every_loss_and_reduction_agrees(loss: str, reduction: str, dtype: str, mode: str) -> None:
    rng = np.random.default_rng(2001)
    sizes, activations = LOSS_NETWORKS[loss]
    # A sum over the batch makes the step ROWS times larger: keep the effective rate moderate.
    lr = 0.05 if reduction == "mean" else 0.01
    spec = NetworkSpec(
        sizes, activations, bias=True, loss=loss, reduction=reduction, optimizer=SGD(lr), dtype=dtype
    )
    scheme = "torch" if loss in ("l1", "cross_entropy") else "numpy-rand"
    params = init_params(spec, seed=2, scheme=scheme)
    x, y = _inputs(rng, sizes[0]), _targets(rng, loss, sizes[-1])
    report = verify(spec, x, y, steps=STEPS, params=params, mode=mode)
    _assert_agrees(report)
    # Training did something: the loss moved.
    losses = report.trace["reference_loss"]
    assert losses.iloc[-1] != losses.iloc[0]


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_with_one_hot_targets(dtype: str) -> None:
    rng = np.random.default_rng(2002)
    spec = NetworkSpec((3, 5, 4), ("elu", "identity"), bias=True, loss="cross_entropy", dtype=dtype)
    classes = rng.integers(0, 4, size=ROWS)
    y = np.eye(4)[classes]
    x = _inputs(rng, 3)
    for mode in MODES:
        _assert_agrees(verify(spec, x, y, steps=STEPS, params=init_params(spec, scheme="torch"), mode=mode))


# --- SGD options, biases ------------------------------------------------------------------------------

OPTIMIZERS = {
    "plain": SGD(0.05),
    "momentum": SGD(0.05, momentum=0.9),
    "momentum+dampening": SGD(0.05, momentum=0.9, dampening=0.3),
    "weight_decay": SGD(0.05, weight_decay=0.01),
    "nesterov": SGD(0.05, momentum=0.9, nesterov=True),
    "nesterov+weight_decay": SGD(0.03, momentum=0.5, weight_decay=0.1, nesterov=True),
    "everything-but-nesterov": SGD(0.03, momentum=0.5, dampening=0.5, weight_decay=0.1),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bias", [False, True], ids=["no-bias", "bias"])
@pytest.mark.parametrize("optimizer", list(OPTIMIZERS.values()), ids=list(OPTIMIZERS))
def test_every_optimizer_option_agrees(optimizer: SGD, bias: bool, dtype: str, mode: str) -> None:
    rng = np.random.default_rng(3001)
    spec = NetworkSpec(
        (3, 4, 2), ("tanh", "sigmoid"), bias=bias, loss="mse", optimizer=optimizer, dtype=dtype
    )
    scheme = "numpy-rand" if bias else "torch"
    x, y = _inputs(rng, 3), rng.uniform(0.0, 1.0, size=(ROWS, 2))
    report = verify(spec, x, y, steps=STEPS, params=init_params(spec, seed=4, scheme=scheme), mode=mode)
    _assert_agrees(report)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_sum_reduction_with_momentum(dtype: str, mode: str) -> None:
    """The combination that amplifies rounding most, at a rate that keeps training tame."""
    rng = np.random.default_rng(3002)
    spec = NetworkSpec(
        (3, 5, 4, 2),
        ("tanh", "softplus", "identity"),
        bias=True,
        loss="mse",
        reduction="sum",
        optimizer=SGD(0.01, momentum=0.9, nesterov=True, weight_decay=0.01),
        dtype=dtype,
    )
    x, y = _inputs(rng, 3), _targets(rng, "mse", 2)
    _assert_agrees(verify(spec, x, y, steps=STEPS, params=init_params(spec, scheme="torch"), mode=mode))


def test_many_steps_deeper_network() -> None:
    """A longer free run in float64 with every SGD option at once."""
    rng = np.random.default_rng(4001)
    spec = NetworkSpec(
        (4, 6, 5, 3),
        ("elu", "tanh", "identity"),
        bias=True,
        loss="cross_entropy",
        optimizer=SGD(0.05, momentum=0.8, weight_decay=0.001, nesterov=True),
    )
    x, y = _inputs(rng, 4), rng.dirichlet(np.ones(3), size=ROWS)
    _assert_agrees(verify(spec, x, y, steps=200, params=init_params(spec, seed=9, scheme="torch")), steps=200)


@pytest.mark.parametrize("dtype", DTYPES)
def test_float32_inputs_agree_in_either_dtype(dtype: str) -> None:
    """float32 data (as the notebook builds it) are cast to the spec's dtype for both sides."""
    rng = np.random.default_rng(4002)
    spec = NetworkSpec((3, 4, 1), ("sigmoid", "sigmoid"), dtype=dtype)
    x = _inputs(rng, 3).astype(np.float32)
    y = rng.integers(0, 2, size=(ROWS, 1)).astype(np.float32)
    for mode in MODES:
        _assert_agrees(verify(spec, x, y, steps=STEPS, mode=mode))


def test_a_backend_agrees_with_itself_exactly() -> None:
    """numpy vs numpy: identical arithmetic, so every error is exactly zero."""
    rng = np.random.default_rng(4003)
    spec = NetworkSpec((3, 4, 2), ("tanh", "identity"), bias=True, optimizer=SGD(0.05, momentum=0.9))
    x, y = _inputs(rng, 3), _targets(rng, "mse", 2)
    report = verify(spec, x, y, steps=STEPS, candidate="numpy", reference="numpy")
    _assert_agrees(report)
    errors = report.trace.filter(like="_err")
    assert (errors == 0.0).all().all()


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS.values()), ids=list(OPTIMIZERS))
def test_numpy_weights_stay_in_torch_s_memory_order(optimizer: SGD) -> None:
    """NumpyBackend keeps each (fan_in, fan_out) weight and its gradient in Fortran order, torch's
    (fan_out, fan_in) in memory, through every SGD option: the comparison then reads both sides in
    order (compare.RowLayout.oriented)."""
    from nnparity.numpy_backend import NumpyBackend

    rng = np.random.default_rng(3002)
    spec = NetworkSpec((5, 7, 3), ("tanh", "identity"), bias=True, optimizer=optimizer)
    x, y = _inputs(rng, 5), _targets(rng, "mse", 3)
    backend = NumpyBackend(spec, init_params(spec, seed=1))
    for _ in range(3):
        result = backend.step(x, y)
        for layer in (*result.grads, *result.params):
            assert layer.weight.flags.f_contiguous
            assert not layer.weight.flags.c_contiguous
