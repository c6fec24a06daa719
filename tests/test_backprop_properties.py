"""Properties of the backprop math that the catalog's bugs do not reach: each kills mutants that
mutmut plants in activations.py, losses.py, optim.py and numpy_backend.py (the ``mutation`` nox
session runs this file and tests/test_api_validation.py against every mutant).

Each activation and loss is checked against torch element by element, at its kinks and
thresholds; SGD at the edges of its options; the backend's dtype handling and ``predict``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from nnparity import SGD, NetworkSpec, NnparityError, verify
from nnparity.activations import ACTIVATIONS
from nnparity.losses import LOSSES
from nnparity.numpy_backend import NumpyBackend
from nnparity.optim import sgd_init, sgd_update
from nnparity.suite.cases import CASES, FREE_RUNS, FREE_STEPS, STEPS, batch, start


@pytest.mark.parametrize("case", [*CASES, *FREE_RUNS])
def test_the_numpy_backend_passes_the_packaged_suite(case: str) -> None:
    spec = CASES.get(case) or FREE_RUNS[case]
    x, y = batch(spec)
    steps, mode = (STEPS, "resync") if case in CASES else (FREE_STEPS, "free")
    report = verify(
        spec, x, y, steps=steps, params=start(spec), candidate="numpy", mode=mode, diagnosis=False
    )
    assert report.ok, report.summary()


@pytest.mark.parametrize("bias", [False, True])
def test_a_single_layer_network_steps_as_torch_does(bias: bool) -> None:
    """One weight layer: no hidden layers, and the update reads the only layer's bias (or none)."""
    spec = NetworkSpec((3, 2), ("sigmoid",), bias=bias, optimizer=SGD(0.1, momentum=0.5))
    x, y = batch(spec)
    report = verify(spec, x, y, steps=3, params=start(spec), candidate="numpy", diagnosis=False)
    assert report.ok, report.summary()


# Every kink and threshold of the activations (0, softplus's 20), both signs of zero, values far
# enough out that exp overflows, and ordinary ones.
GRID = np.array(
    [-800.0, -50.0, -20.0, -1.5, -1e-3, -0.0, 0.0, 1e-3, 0.7, 19.999, 20.0, 20.001, 25.0, 50.0, 800.0]
)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_each_activation_and_derivative_is_torchs_element_by_element(name: str, dtype: str) -> None:
    """Forward rule and derivative against torch's module and autograd, in the input's dtype."""
    import torch

    from nnparity.torch_backend import ACTIVATION_MODULES

    act = ACTIVATIONS[name]
    z = GRID.astype(dtype)
    zt = torch.tensor(z, requires_grad=True)
    at = ACTIVATION_MODULES[name]()(zt)
    at.backward(torch.ones_like(at))
    with np.errstate(all="ignore"):
        a = act.forward(z)
        da = act.derivative(z, a)
    assert a.dtype == z.dtype
    assert da.dtype == z.dtype
    rtol = 1e-12 if dtype == "float64" else 1e-6
    np.testing.assert_allclose(a, at.detach().numpy(), rtol=rtol, atol=0)
    assert zt.grad is not None
    np.testing.assert_allclose(da, zt.grad.numpy(), rtol=rtol, atol=0)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("name", list(LOSSES))
def test_each_loss_and_gradient_is_torchs(name: str, reduction: str, dtype: str) -> None:
    """Value and dE/df against torch's loss module, including outputs that saturate (0 and 1 for BCE)."""
    import torch

    from nnparity.torch_backend import LOSS_MODULES

    rng = np.random.default_rng(3)
    if name == "bce":
        f = np.array([[1e-9, 1.0 - 1e-9, 0.3], [1e-6, 0.5, 0.999], [0.2, 0.7, 0.9]])
        y = rng.uniform(size=f.shape)
    elif name == "cross_entropy":
        f, y = rng.normal(scale=3.0, size=(3, 3)), rng.dirichlet(np.ones(3), size=3)
    else:
        f, y = rng.normal(scale=3.0, size=(3, 3)), rng.normal(size=(3, 3))
    f, y = f.astype(dtype), y.astype(dtype)
    ft = torch.tensor(f, requires_grad=True)
    et = LOSS_MODULES[name](reduction=reduction)(ft, torch.tensor(y))
    et.backward()
    loss = LOSSES[name]
    with np.errstate(all="ignore"):
        value, grad = loss.value(f, y, reduction), loss.gradient(f, y, reduction)
    assert grad.dtype == f.dtype
    rtol = 1e-12 if dtype == "float64" else 2e-6
    assert value == pytest.approx(et.item(), rel=rtol, abs=0)
    assert ft.grad is not None
    np.testing.assert_allclose(grad, ft.grad.numpy(), rtol=rtol, atol=0)


def test_bce_gradient_clamp_at_saturated_outputs_is_torchs() -> None:
    """At an output of exactly 0 or 1 torch divides by float32(1e-12) = 9.99999996e-13, 4e-9 away
    from 1e-12. Unobservable in a network (bce needs a sigmoid output, whose derivative is 0 there)."""
    import torch

    f, y = np.array([[0.0, 1.0]]), np.array([[0.5, 0.5]])
    ft = torch.tensor(f, requires_grad=True)
    torch.nn.BCELoss(reduction="sum")(ft, torch.tensor(y)).backward()
    assert ft.grad is not None
    np.testing.assert_allclose(LOSSES["bce"].gradient(f, y, "sum"), ft.grad.numpy(), rtol=1e-12, atol=0)


@pytest.mark.parametrize("case", list(CASES))
def test_predict_is_the_forward_pass_that_step_reports(case: str) -> None:
    spec = CASES[case]
    x, y = batch(spec)
    backend = NumpyBackend(spec, start(spec))
    predicted = backend.predict(x)
    result = backend.step(x, y)
    assert result.activations is not None
    np.testing.assert_array_equal(predicted, result.activations[-1], strict=True)
    # and the next prediction is made with the updated weights
    np.testing.assert_array_equal(
        backend.predict(x), NumpyBackend(spec, result.params).predict(x), strict=True
    )


def test_overflow_is_silent_as_in_torch() -> None:
    """exp overflowing to inf is torch's behaviour too: no warning (an error under filterwarnings)."""
    spec = CASES["activation-softplus"]
    x = np.full((2, spec.sizes[0]), 1e4)
    backend = NumpyBackend(spec, start(spec))
    backend.predict(x)
    backend.step(x, np.zeros((2, spec.sizes[-1])))


def test_cross_entropy_is_stable_for_extreme_logits() -> None:
    """log-softmax shifts each row by its own maximum: rows far apart, or past exp's range, stay finite."""
    import torch

    f = np.array([[1000.0, 999.0, 998.0], [0.0, -1.0, -2.0], [400.0, 0.0, -400.0]])
    y = np.array([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0], [0.0, 0.5, 0.5]])
    ft = torch.tensor(f, requires_grad=True)
    et = torch.nn.CrossEntropyLoss()(ft, torch.tensor(y))
    et.backward()
    with np.errstate(all="ignore"):
        value, grad = (
            LOSSES["cross_entropy"].value(f, y, "mean"),
            LOSSES["cross_entropy"].gradient(f, y, "mean"),
        )
    assert value == pytest.approx(et.item(), rel=1e-12, abs=0)
    assert ft.grad is not None
    np.testing.assert_allclose(grad, ft.grad.numpy(), rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize(
    "optimizer",
    [SGD(0.1, weight_decay=1.0), SGD(0.1, momentum=1.0), SGD(0.1, dampening=0.5)],
    ids=["weight_decay-1", "momentum-1", "dampening-without-momentum"],
)
def test_sgd_options_at_their_edges(optimizer: SGD) -> None:
    """Exactly 1 is a real setting, not a switch; dampening does nothing without momentum (as in torch)."""
    spec = dataclasses.replace(CASES["no-bias"], optimizer=optimizer)
    x, y = batch(spec)
    report = verify(spec, x, y, steps=3, params=start(spec), candidate="numpy", mode="free", diagnosis=False)
    assert report.ok, report.summary()


def test_sgd_update_wants_one_gradient_and_buffer_per_tensor() -> None:
    p = [np.ones(2), np.ones(3)]
    with pytest.raises(ValueError, match="zip"):
        sgd_update(SGD(0.1), p, p[:1], sgd_init(2))
    with pytest.raises(ValueError, match="2 parameter tensors, but an optimizer state for 3"):
        sgd_update(SGD(0.1), p, p, sgd_init(3))
    for opt in (SGD(0.1), SGD(0.1, momentum=0.9), SGD(0.1, weight_decay=0.01)):  # with state too
        with pytest.raises(ValueError, match="zip"):
            sgd_update(opt, p, [*p, p[0]], sgd_init(2))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_backend_works_in_the_specs_dtype_whatever_it_is_given(dtype: str) -> None:
    """Inputs, targets and weights are cast to the spec's dtype; every array handed back is in it."""
    spec = dataclasses.replace(CASES["activation-relu"], dtype=dtype)
    x, y = batch(spec)
    other = "float64" if dtype == "float32" else "float32"
    backend = NumpyBackend(spec, start(spec))
    assert backend.predict(x.astype(other)).dtype == np.dtype(dtype)
    result = backend.step(x.astype(other), y.astype(other))
    assert result.activations is not None
    arrays = [*result.activations, *(t for p in (*result.grads, *result.params) for t in p if t is not None)]
    assert {a.dtype for a in arrays} == {np.dtype(dtype)}


def test_sgd_takes_numpys_bool_for_nesterov() -> None:
    """A ``numpy.bool_`` (a config read through NumPy, say) becomes a plain bool, serialisable as JSON."""
    opt = SGD(0.1, momentum=0.9, nesterov=np.True_)
    assert opt.nesterov is True
    assert SGD(0.1, nesterov=np.False_).nesterov is False


def test_nesterov_without_momentum_says_what_torch_needs() -> None:
    with pytest.raises(
        NnparityError, match=r"^Nesterov momentum requires a momentum > 0 and zero dampening; got"
    ):
        SGD(0.1, momentum=0.9, dampening=0.1, nesterov=True)
