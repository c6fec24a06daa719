"""Bad arguments to the public API raise ``NnparityError``, and nothing else, with a useful message.

A table in the style of hypothesis's ``tests/numpy/test_argument_validation.py``:
each row is one call with one thing wrong and a fragment its message must contain.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from nnparity import (
    SGD,
    LayerParams,
    NetworkSpec,
    NnparityError,
    StepResult,
    init_params,
    load_backend,
    verify,
)
from nnparity.numpy_backend import NumpyBackend
from nnparity.search import cases

SPEC = NetworkSpec((3, 4, 2), ("tanh", "identity"))
BIASED = NetworkSpec((3, 4, 2), ("tanh", "identity"), bias=True)
X = np.random.default_rng(0).normal(size=(6, 3))
Y = np.random.default_rng(1).normal(size=(6, 2))
GOOD_PARAMS = init_params(SPEC)


def _with(a: np.ndarray, index: tuple[int, int], value: float) -> np.ndarray:
    out = a.copy()
    out[index] = value
    return out


class NoStep:
    """Has everything a backend needs but ``step``."""

    def __init__(self, spec: NetworkSpec, params: list[LayerParams]) -> None:
        self.spec = spec

    def predict(self, x: np.ndarray) -> np.ndarray:
        return x

    def set_params(self, params: list[LayerParams]) -> None:
        pass


class BrokenConstructor(NoStep):
    """A backend whose constructor fails."""

    def __init__(self, spec: NetworkSpec, params: list[LayerParams]) -> None:
        raise ValueError("no GPU here")

    def step(self, x: np.ndarray, y: np.ndarray) -> StepResult:
        raise AssertionError("never constructed")


def e(func: Callable[..., Any], *args: Any, fragment: str, label: str, **kwargs: Any) -> Any:
    """One bad call: ``func(*args, **kwargs)`` must fail with ``fragment`` in its message."""
    return pytest.param(func, args, kwargs, fragment, id=f"{func.__name__}-{label}")


BAD_CALLS = [
    # NetworkSpec: the network's shape
    e(NetworkSpec, "231", ("sigmoid",), fragment="sizes must be a list", label="sizes-str"),
    e(NetworkSpec, 3, ("sigmoid",), fragment="sizes must be a list", label="sizes-int"),
    e(NetworkSpec, (2,), (), fragment="sizes needs at least an input and an output width", label="one-width"),
    e(NetworkSpec, (2, 0, 1), ("sigmoid", "sigmoid"), fragment="whole number >= 1", label="width-0"),
    e(NetworkSpec, (2, -3, 1), ("sigmoid", "sigmoid"), fragment="whole number >= 1", label="width-neg"),
    e(NetworkSpec, (2, 2.5, 1), ("sigmoid", "sigmoid"), fragment="whole number >= 1", label="width-float"),
    e(NetworkSpec, (2, True, 1), ("sigmoid", "sigmoid"), fragment="whole number >= 1", label="width-bool"),
    e(NetworkSpec, (2, 3, 1), "sigmoid", fragment="activations must be a list", label="activations-str"),
    e(
        NetworkSpec,
        (2, 3, 1),
        ("sigmoid",),
        fragment="2 weight layers need 2 activations; got 1",
        label="too-few-activations",
    ),
    e(
        NetworkSpec,
        (2, 3, 1),
        ("sigmoid", "sigmoid", "sigmoid"),
        fragment="2 weight layers need 2 activations; got 3",
        label="too-many-activations",
    ),
    e(
        NetworkSpec,
        (2, 3, 1),
        ("swish", "sigmoid"),
        fragment="Unknown activation 'swish'; choose from identity, sigmoid",
        label="unknown-activation",
    ),
    e(NetworkSpec, (2, 3, 1), ("Sigmoid", "sigmoid"), fragment="Unknown activation", label="case-matters"),
    # NetworkSpec: the training setup
    e(
        NetworkSpec,
        (2, 3, 1),
        ("sigmoid", "sigmoid"),
        bias=1,
        fragment="bias must be true or false",
        label="bias",
    ),
    e(
        NetworkSpec,
        (2, 3, 1),
        ("sigmoid", "sigmoid"),
        loss="hinge",
        fragment="Unknown loss 'hinge'",
        label="loss",
    ),
    e(
        NetworkSpec,
        (2, 3, 1),
        ("sigmoid", "sigmoid"),
        reduction="none",
        fragment="Unknown reduction 'none'; choose from mean, sum",
        label="reduction",
    ),
    e(
        NetworkSpec,
        (2, 3, 1),
        ("sigmoid", "sigmoid"),
        dtype="float16",
        fragment="Unknown dtype 'float16'; choose from float32, float64",
        label="dtype",
    ),
    e(
        NetworkSpec,
        (2, 3, 1),
        ("sigmoid", "sigmoid"),
        dtype=np.float64,
        fragment="Unknown dtype",
        label="dtype-not-a-name",
    ),
    e(
        NetworkSpec,
        (2, 3, 1),
        ("sigmoid", "sigmoid"),
        optimizer=0.05,
        fragment="optimizer must be an nnparity.SGD",
        label="optimizer",
    ),
    e(
        NetworkSpec,
        (2, 3, 1),
        ("sigmoid", "identity"),
        loss="bce",
        fragment="Loss 'bce' takes probabilities, so the output activation must be sigmoid",
        label="bce-without-sigmoid",
    ),
    # SGD, validated as torch.optim.SGD validates it
    e(SGD, -0.1, fragment="Invalid learning rate: -0.1", label="negative-lr"),
    e(SGD, "0.1", fragment="SGD lr must be a number", label="lr-str"),
    e(SGD, True, fragment="SGD lr must be a number", label="lr-bool"),
    e(SGD, float("nan"), fragment="SGD lr must be finite", label="lr-nan"),
    e(SGD, float("inf"), fragment="SGD lr must be finite", label="lr-inf"),
    e(SGD, 0.1, momentum=-0.9, fragment="Invalid momentum value: -0.9", label="negative-momentum"),
    e(SGD, 0.1, weight_decay=-1e-4, fragment="Invalid weight_decay value", label="negative-weight-decay"),
    e(SGD, 0.1, dampening=None, fragment="SGD dampening must be a number", label="dampening-none"),
    e(
        SGD,
        0.1,
        nesterov=True,
        fragment="Nesterov momentum requires a momentum > 0",
        label="nesterov-no-momentum",
    ),
    e(
        SGD,
        0.1,
        momentum=0.9,
        dampening=0.1,
        nesterov=True,
        fragment="requires a momentum > 0 and zero dampening",
        label="nesterov-with-dampening",
    ),
    e(
        SGD,
        0.1,
        momentum=0.9,
        nesterov=1,
        fragment="SGD nesterov must be true or false",
        label="nesterov-int",
    ),
    # init_params
    e(
        init_params,
        SPEC,
        seed=-1,
        fragment="The seed must be a whole number from 0 to 2**32 - 1",
        label="seed-neg",
    ),
    e(init_params, SPEC, seed=2**32, fragment="The seed must be a whole number", label="seed-too-big"),
    e(init_params, SPEC, seed=1.5, fragment="The seed must be a whole number", label="seed-float"),
    e(init_params, SPEC, seed=True, fragment="The seed must be a whole number", label="seed-bool"),
    e(init_params, SPEC, scheme="xavier", fragment="Unknown init scheme 'xavier'", label="scheme"),
    # verify: the spec and the data
    e(
        verify,
        {"sizes": [3, 4, 2]},
        X,
        Y,
        steps=1,
        fragment="spec must be an nnparity.NetworkSpec",
        label="spec",
    ),
    e(verify, SPEC, X[:, :2], Y, steps=1, fragment="x must have shape (rows, 3)", label="x-wrong-width"),
    e(verify, SPEC, X, Y[:, :1], steps=1, fragment="y must have shape (rows, 2)", label="y-wrong-width"),
    e(verify, SPEC, X[0], Y[:1], steps=1, fragment="x must have shape (rows, 3)", label="x-1d"),
    e(verify, SPEC, X[None], Y, steps=1, fragment="x must have shape", label="x-3d"),
    e(verify, SPEC, X[:0], Y[:0], steps=1, fragment="x must have shape (rows, 3)", label="x-no-rows"),
    e(
        verify,
        SPEC,
        [["a", "b", "c"]],
        Y[:1],
        steps=1,
        fragment="x must be an array of real numbers",
        label="x-str",
    ),
    e(
        verify,
        SPEC,
        X,
        Y[:5],
        steps=1,
        fragment="x has 6 rows but y has 5; give one target row per input row",
        label="row-mismatch",
    ),
    e(verify, SPEC, _with(X, (2, 1), np.nan), Y, steps=1, fragment="x has non-finite values", label="x-nan"),
    e(
        verify,
        NetworkSpec((3, 2), ("sigmoid",), loss="bce"),
        X,
        np.abs(Y),  # some above 1
        steps=1,
        fragment="holds a target outside [0, 1]",
        label="bce-target-above-1",
    ),
    e(
        verify,
        SPEC,
        X,
        Y,
        steps=1,
        rtol=np.float32(1),
        atol=np.int64(-1),
        fragment="atol must be",
        label="atol-np",
    ),
    e(verify, SPEC, X, _with(Y, (5, 0), -np.inf), steps=1, fragment="y has non-finite values", label="y-inf"),
    # verify: the run
    e(verify, SPEC, X, Y, steps=-1, fragment="steps must be a whole number >= 0", label="negative-steps"),
    e(verify, SPEC, X, Y, steps=2.0, fragment="steps must be a whole number >= 0", label="float-steps"),
    e(verify, SPEC, X, Y, steps=True, fragment="steps must be a whole number >= 0", label="bool-steps"),
    e(verify, SPEC, X, Y, steps=1, mode="lockstep", fragment="Unknown mode 'lockstep'", label="mode"),
    e(verify, SPEC, X, Y, steps=1, rtol=1e-6, fragment="Give rtol and atol together", label="rtol-alone"),
    e(verify, SPEC, X, Y, steps=1, atol=1e-6, fragment="Give rtol and atol together", label="atol-alone"),
    e(
        verify,
        SPEC,
        X,
        Y,
        steps=1,
        rtol=-1e-6,
        atol=0.0,
        fragment="rtol must be a finite number >= 0",
        label="neg-rtol",
    ),
    e(verify, SPEC, X, Y, steps=1, rtol=0.0, atol=float("nan"), fragment="atol must be", label="nan-atol"),
    e(
        verify,
        SPEC,
        X,
        Y,
        steps=1,
        rtol="1e-6",
        atol=0.0,
        fragment="rtol must be a finite number",
        label="str-rtol",
    ),
    # verify: the starting parameters
    e(
        verify,
        SPEC,
        X,
        Y,
        steps=1,
        params=GOOD_PARAMS[:1],
        fragment="Expected a list of 2 LayerParams",
        label="p-n",
    ),
    e(
        verify,
        SPEC,
        X,
        Y,
        steps=1,
        params=[LayerParams(np.ones((4, 3))), GOOD_PARAMS[1]],
        fragment="Layer 0's weight must have shape (fan_in, fan_out) = (3, 4); got (4, 3)",
        label="params-transposed",
    ),
    e(
        verify,
        BIASED,
        X,
        Y,
        steps=1,
        params=GOOD_PARAMS,
        fragment="Layer 0 has no bias, but the spec has bias=True",
        label="params-no-bias",
    ),
    e(
        verify,
        SPEC,
        X,
        Y,
        steps=1,
        params=[LayerParams(np.ones((3, 4)), np.ones(4)), GOOD_PARAMS[1]],
        fragment="Layer 0 has a bias, but the spec has bias=False",
        label="params-extra-bias",
    ),
    e(
        verify,
        BIASED,
        X,
        Y,
        steps=1,
        params=[LayerParams(np.ones((3, 4)), np.ones(3)), LayerParams(np.ones((4, 2)), np.ones(2))],
        fragment="Layer 0's bias must have shape (4,); got (3,)",
        label="params-bias-shape",
    ),
    # verify: the backends
    e(verify, SPEC, X, Y, steps=1, candidate="jax", fragment="Unknown backend 'jax'", label="cand-name"),
    e(
        verify,
        SPEC,
        X,
        Y,
        steps=1,
        reference="pytorch",
        fragment="Unknown backend 'pytorch'",
        label="ref-name",
    ),
    e(
        verify,
        SPEC,
        X,
        Y,
        steps=1,
        candidate=NoStep,
        fragment="is not a Backend: it has no step method",
        label="cand-no-step",
    ),
    e(
        verify,
        SPEC,
        X,
        Y,
        steps=1,
        candidate=BrokenConstructor,
        fragment="could not be constructed (ValueError: no GPU here)",
        label="cand-constructor-fails",
    ),
    e(
        verify,
        SPEC,
        X,
        Y,
        steps=1,
        reference="nosuchmodule:Cls",
        fragment="Cannot find backend module 'nosuchmodule'",
        label="ref-no-module",
    ),
    # load_backend
    e(load_backend, "jax", fragment="Unknown backend 'jax': use 'numpy' or 'torch'", label="unknown-name"),
    e(load_backend, "", fragment="Unknown backend ''", label="empty"),
    e(load_backend, "nnparity:", fragment="Unknown backend 'nnparity:'", label="no-class"),
    e(load_backend, ":NumpyBackend", fragment="Unknown backend ':NumpyBackend'", label="no-module"),
    e(
        load_backend,
        "nosuchmodule:Cls",
        fragment="Cannot find backend module 'nosuchmodule' (No module named",
        label="nosuchmodule",
    ),
    e(
        load_backend,
        "nnparity:NotThere",
        fragment="Module 'nnparity' has no class 'NotThere'",
        label="no-attr",
    ),
    e(
        load_backend,
        "nnparity:__version__",
        fragment="Backend 'nnparity:__version__' is not a class",
        label="str",
    ),
    e(
        load_backend,
        "nnparity:SGD",
        fragment="it has no step, predict, set_params method",
        label="not-backend",
    ),
    e(
        load_backend,
        NoStep,
        fragment="Backend 'NoStep' is not a Backend: it has no step method",
        label="no-step",
    ),
    e(load_backend, 42, fragment="A backend is a name, a 'module:Class' string or a class", label="int"),
    e(load_backend, None, fragment="A backend is a name", label="none"),
]


@pytest.mark.parametrize(("func", "args", "kwargs", "fragment"), BAD_CALLS)
def test_bad_argument_raises_nnparity_error(
    func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(NnparityError, match=re.escape(fragment)) as info:
        func(*args, **kwargs)
    assert type(info.value) is NnparityError  # not a subclass posing as one, nor anything else
    message = str(info.value)
    # errors.py: one sentence saying what is wrong (the command line prints it as is).
    assert "\n" not in message
    assert message.endswith("."), message


class Outer:
    """A backend nested in a class: backend_label names it module:Outer.Inner, and so may a user."""

    class Inner(NumpyBackend):
        pass


def _requires_grad(a: np.ndarray) -> Any:
    import torch

    return torch.tensor(a, requires_grad=True)


# Bad arguments that once escaped as other exceptions or a warning.
ONCE_MISSED = [
    pytest.param(
        verify,
        (SPEC, X, Y),
        {"steps": 1, "params": [(p.weight, p.bias) for p in GOOD_PARAMS]},
        "Layer 0 is a plain pair; give LayerParams(weight, bias)",
        id="verify-params-pairs",
    ),
    pytest.param(
        verify,
        (SPEC, X, Y),
        {"steps": 1, "params": [LayerParams(_requires_grad(GOOD_PARAMS[0].weight)), GOOD_PARAMS[1]]},
        "Layer 0's weight must be an array of real numbers; it is a tensor that requires grad",
        id="verify-params-requires-grad",
    ),
    pytest.param(
        verify, (SPEC, _requires_grad(X), Y), {"steps": 1}, "x must be an array", id="verify-x-requires-grad"
    ),
    pytest.param(
        verify,
        (SPEC, X, Y),
        {"steps": 1, "params": [LayerParams([[1.0, 2.0], [3.0]]), GOOD_PARAMS[1]]},
        "it is not one rectangular array",
        id="verify-params-ragged",
    ),
    pytest.param(cases, (), {"modes": 123}, "modes must name some of free, resync", id="cases-modes-int"),
    pytest.param(
        verify,
        (SPEC, X, Y),
        {"steps": 1, "params": [LayerParams("abc"), GOOD_PARAMS[1]]},  # type: ignore[arg-type]
        "weight",
        id="verify-params-non-numeric",
    ),
    pytest.param(
        verify,
        (SPEC, X.astype(np.complex128), Y),
        {"steps": 1},
        "x must be",
        id="verify-x-complex",
    ),
]


@pytest.mark.parametrize(("func", "args", "kwargs", "fragment"), ONCE_MISSED)
def test_once_missed_bad_arguments(
    func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(NnparityError, match=re.escape(fragment)):
        func(*args, **kwargs)


# The edges of what is accepted: each of these is valid and must not raise.
GOOD_CALLS = [
    pytest.param(lambda: SGD(0.0), id="lr-0"),
    pytest.param(lambda: SGD(1, momentum=0, dampening=0, weight_decay=0), id="int-hyperparameters"),
    pytest.param(lambda: SGD(0.1, momentum=0.9, nesterov=True), id="nesterov"),
    pytest.param(lambda: NetworkSpec([3, 4, 2], ["tanh", "identity"]), id="lists"),  # type: ignore[arg-type]
    pytest.param(lambda: NetworkSpec((np.int64(3), 1), ("identity",)), id="numpy-int-width"),  # type: ignore[arg-type]
    pytest.param(lambda: NetworkSpec((2, 1), ("sigmoid",), loss="bce"), id="bce-sigmoid"),
    pytest.param(lambda: init_params(SPEC, seed=0), id="seed-0"),
    pytest.param(lambda: init_params(SPEC, seed=2**32 - 1), id="seed-max"),
    pytest.param(lambda: init_params(SPEC, seed=np.uint32(7), scheme="torch"), id="seed-numpy"),  # type: ignore[arg-type]
    pytest.param(lambda: verify(SPEC, X, Y, steps=0), id="zero-steps"),
    pytest.param(lambda: verify(SPEC, X, Y, steps=np.int64(1)), id="numpy-steps"),  # type: ignore[arg-type]
    pytest.param(lambda: verify(SPEC, X.tolist(), Y.tolist(), steps=1), id="nested-lists"),
    pytest.param(lambda: verify(SPEC, X.astype(np.float32), Y, steps=1), id="float32-data"),
    pytest.param(lambda: verify(SPEC, X, Y, steps=1, rtol=0, atol=0), id="zero-tolerance"),
    pytest.param(lambda: load_backend(f"{__name__}:Outer.Inner"), id="nested-class"),
    pytest.param(
        lambda: verify(SPEC, X, Y, steps=1, rtol=np.float32(1e-6), atol=np.int64(0)), id="numpy-tolerances"
    ),
    pytest.param(
        lambda: verify(NetworkSpec((3, 2), ("sigmoid",), loss="bce"), X, np.clip(Y, 0, 1), steps=1),
        id="bce-targets-0-and-1",
    ),
    pytest.param(lambda: verify(SPEC, X, Y, steps=1, params=tuple(GOOD_PARAMS)), id="params-tuple"),
    pytest.param(
        lambda: verify(SPEC, X, Y, steps=1, params=[p.weight for p in GOOD_PARAMS]),  # type: ignore[misc]
        id="params-bare-arrays",
    ),
    pytest.param(
        lambda: verify(NetworkSpec((3, 4, 1), ("tanh", "identity")), X, Y[:, 0], steps=1), id="1d-y-width-1"
    ),
    pytest.param(
        lambda: verify(SPEC, X, Y, steps=1, candidate="nnparity.numpy_backend:NumpyBackend"), id="path"
    ),
    pytest.param(lambda: load_backend("torch"), id="load-torch"),
]


@pytest.mark.parametrize("call", GOOD_CALLS)
def test_edge_of_valid_is_accepted(call: Callable[[], object]) -> None:
    call()


def test_zero_steps_report() -> None:
    report = verify(SPEC, X, Y, steps=0)
    assert report.ok
    assert report.steps_run == 0
    assert len(report.trace) == 0
    assert '"final_loss": null' in report.to_json()


def test_the_arguments_are_not_changed() -> None:
    x, y = X.copy(), Y.copy()
    params = init_params(BIASED, scheme="torch")
    before = [(p.weight.copy(), p.bias.copy()) for p in params if p.bias is not None]
    verify(BIASED, x, y, steps=3, params=params, mode="resync")
    np.testing.assert_array_equal(x, X)
    np.testing.assert_array_equal(y, Y)
    for (w, b), p in zip(before, params):
        np.testing.assert_array_equal(p.weight, w)
        np.testing.assert_array_equal(p.bias, b)
