"""The public strategies: bad options raise NnparityError, and what they draw is valid and in range."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import Phase, find, given, settings
from hypothesis import strategies as st

from nnparity import LayerParams, NetworkSpec, NnparityError
from nnparity.activations import ACTIVATIONS
from nnparity.losses import LOSSES, REDUCTIONS
from nnparity.search import cases
from nnparity.strategies import batches, init_choices, initial_params, network_specs, output_activations

SPEC = NetworkSpec((2, 3, 1), ("tanh", "sigmoid"))


def e(function: Any, **kwargs: Any) -> Any:
    label = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    return pytest.param(function, kwargs, id=f"{function.__name__}({label})")


@pytest.mark.parametrize(
    ("function", "kwargs"),
    [
        e(network_specs, min_layers=0),
        e(network_specs, min_layers=3, max_layers=2),
        e(network_specs, max_layers=2.0),
        e(network_specs, max_layers="3"),
        e(network_specs, min_layers=True),
        e(network_specs, min_width=0),
        e(network_specs, min_width=5, max_width=4),
        e(network_specs, max_width=None),
        e(network_specs, max_width=33),  # beyond what a search should draw
        e(network_specs, max_layers=9),
        e(network_specs, activations="relu"),
        e(network_specs, activations=[]),
        e(network_specs, activations=["swish"]),
        e(network_specs, activations=3),
        e(network_specs, losses=["hinge"]),
        e(network_specs, losses=["bce"], activations=["relu", "tanh"]),
        e(network_specs, losses=[]),
        e(network_specs, reductions=["median"]),
        e(network_specs, reductions="mean"),
        e(network_specs, dtypes=["float16"]),
        e(network_specs, dtypes=[]),
        e(network_specs, bias="yes"),
        e(network_specs, bias=1),
        e(network_specs, min_lr=-0.1),
        e(network_specs, max_lr=float("nan")),
        e(network_specs, max_lr=float("inf")),
        e(network_specs, min_lr=0.5, max_lr=0.1),
        e(network_specs, min_lr="0.1"),
        e(network_specs, max_lr=True),
        e(network_specs, allow_momentum=1),
        e(network_specs, allow_dampening=None),
        e(network_specs, allow_nesterov="no"),
        e(network_specs, allow_weight_decay=0),
        e(batches, spec=None),
        e(batches, spec=SPEC.to_dict()),
        e(batches, spec=SPEC, min_rows=0),
        e(batches, spec=SPEC, min_rows=3, max_rows=2),
        e(batches, spec=SPEC, max_rows=2.5),
        e(batches, spec=SPEC, max_abs=0),
        e(batches, spec=SPEC, max_abs=-1.0),
        e(batches, spec=SPEC, max_abs=float("nan")),
        e(batches, spec=SPEC, max_abs=float("inf")),
        e(batches, spec=SPEC, max_abs=1e39),
        e(batches, spec=SPEC, max_abs="1"),
        e(batches, spec=SPEC, max_abs=1e-40),  # every value drawn would be subnormal
        e(batches, spec=NetworkSpec((5000, 1), ("identity",))),  # 8 rows x 5000: more than one list holds
        e(cases, modes=123),
        e(initial_params, spec=None),
        e(initial_params, spec=SPEC, schemes=["xavier"]),
        e(initial_params, spec=SPEC, schemes="torch"),
        e(initial_params, spec=SPEC, schemes=[]),
        e(init_choices, schemes=["he"]),
        e(cases, modes=["sometimes"]),
        e(cases, modes="free"),
        e(cases, modes=[]),
        e(cases, max_steps=0),
        e(cases, max_rows=0),
        e(cases, max_rows=65),
        e(cases, max_steps=1001),
        e(cases, max_steps=2.0),
        e(cases, activations=["swish"]),
    ],
)
def test_bad_arguments_raise_nnparity_error(function: Any, kwargs: dict[str, Any]) -> None:
    with pytest.raises(NnparityError):
        function(**kwargs)


@pytest.mark.parametrize(
    ("function", "args"), [(network_specs, (3,)), (batches, (SPEC, 4)), (initial_params, (SPEC, ["torch"]))]
)
def test_options_are_keyword_only(function: Any, args: tuple[Any, ...]) -> None:
    with pytest.raises(TypeError):
        function(*args)


@settings(deadline=None)
@given(st.data())
def test_specs_stay_within_their_options(data: st.DataObject) -> None:
    max_layers = data.draw(st.integers(1, 4), label="max_layers")
    max_width = data.draw(st.integers(1, 5), label="max_width")
    acts = data.draw(st.sets(st.sampled_from(list(ACTIVATIONS)), min_size=1), label="activations")
    possible = [loss for loss in LOSSES if output_activations(loss, acts)]
    losses = data.draw(st.sets(st.sampled_from(possible), min_size=1), label="losses")
    reductions = data.draw(st.sets(st.sampled_from(REDUCTIONS), min_size=1), label="reductions")
    dtypes = data.draw(st.sets(st.sampled_from(["float32", "float64"]), min_size=1), label="dtypes")
    bias = data.draw(st.sampled_from([None, True, False]), label="bias")
    allow = data.draw(st.booleans(), label="allow SGD options")
    spec = data.draw(
        network_specs(
            max_layers=max_layers,
            max_width=max_width,
            activations=acts,
            losses=losses,
            reductions=reductions,
            dtypes=dtypes,
            bias=bias,
            max_lr=0.05,
            allow_momentum=allow,
            allow_dampening=allow,
            allow_nesterov=allow,
            allow_weight_decay=allow,
        ),
        label="spec",
    )
    assert isinstance(spec, NetworkSpec)
    assert 1 <= spec.n_layers <= max_layers
    assert all(1 <= width <= max_width for width in spec.sizes)
    assert set(spec.activations) <= acts
    assert spec.activations[-1] in output_activations(spec.loss)
    assert spec.loss in losses
    assert spec.reduction in reductions
    assert spec.dtype in dtypes
    assert bias is None or spec.bias is bias
    opt = spec.optimizer
    lr_divisor = 8 * max_width if spec.reduction == "sum" else 1
    assert 1e-3 / lr_divisor <= opt.lr <= 0.05 / lr_divisor
    if not allow:
        assert (opt.momentum, opt.dampening, opt.weight_decay, opt.nesterov) == (0.0, 0.0, 0.0, False)


@pytest.mark.parametrize(
    ("feature", "condition"),
    [
        *((f"activation {a}", lambda s, a=a: a in s.activations) for a in ACTIVATIONS),
        *((f"loss {loss}", lambda s, loss=loss: s.loss == loss) for loss in LOSSES),
        ("reduction sum", lambda s: s.reduction == "sum"),
        ("float32", lambda s: s.dtype == "float32"),
        ("bias", lambda s: s.bias),
        ("three layers", lambda s: s.n_layers == 3),
        ("width 4", lambda s: 4 in s.sizes),
        ("momentum", lambda s: s.optimizer.momentum > 0),
        ("dampening", lambda s: s.optimizer.dampening > 0),
        ("nesterov", lambda s: s.optimizer.nesterov),
        ("weight decay", lambda s: s.optimizer.weight_decay > 0),
    ],
)
def test_every_option_can_be_drawn(feature: str, condition: Any) -> None:
    no_shrinking = settings(database=None, max_examples=2000, phases=[Phase.generate])
    spec = find(network_specs(), condition, settings=no_shrinking)
    assert condition(spec), feature


def test_specs_shrink_to_the_simplest_network() -> None:
    spec = find(network_specs(), lambda s: s.n_layers == 2, settings=settings(database=None))
    assert spec.sizes == (1, 1, 1)
    assert (spec.activations, spec.loss, spec.reduction, spec.dtype, spec.bias) == (
        ("identity", "identity"),
        "mse",
        "mean",
        "float64",
        False,
    )
    opt = spec.optimizer
    assert (opt.momentum, opt.dampening, opt.weight_decay, opt.nesterov) == (0.0, 0.0, 0.0, False)


@settings(deadline=None)
@given(st.data())
def test_batches_suit_the_spec(data: st.DataObject) -> None:
    spec = data.draw(network_specs(), label="spec")
    max_rows = data.draw(st.integers(1, 10), label="max_rows")
    x, y = data.draw(batches(spec, max_rows=max_rows), label="batch")
    rows = x.shape[0]
    assert 1 <= rows <= max_rows
    assert x.shape == (rows, spec.sizes[0])
    assert y.shape == (rows, spec.sizes[-1])
    assert x.dtype == y.dtype == spec.np_dtype
    assert np.isfinite(x).all()
    assert np.isfinite(y).all()
    assert (np.abs(x) <= 1.0).all()
    tiny = np.finfo(np.float32).tiny
    assert ((x == 0) | (np.abs(x) >= tiny)).all()
    assert (x.astype(np.float32).astype(x.dtype) == x).all()
    if spec.loss in ("bce", "bce_with_logits"):
        assert ((y >= 0) & (y <= 1)).all()
    elif spec.loss == "cross_entropy":
        assert (y >= 0).all()
        assert ((y == 0) | (y >= tiny)).all()  # scaling a row makes no subnormal share
        np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-6)
    else:
        assert (np.abs(y) <= 1.0).all()


@settings(deadline=None)
@given(st.data())
def test_max_abs_bounds_the_batch(data: st.DataObject) -> None:
    spec = data.draw(network_specs(losses=["mse", "l1"]), label="spec")
    max_abs = data.draw(st.floats(1e-3, 1e3), label="max_abs")
    x, y = data.draw(batches(spec, max_abs=max_abs), label="batch")
    assert (np.abs(x) <= max_abs).all()
    assert (np.abs(y) <= max_abs).all()


@settings(deadline=None)
@given(st.data())
def test_initial_params_fit_the_spec(data: st.DataObject) -> None:
    spec = data.draw(network_specs(), label="spec")
    scheme = data.draw(st.sampled_from(["numpy-rand", "torch"]), label="scheme")
    params = data.draw(initial_params(spec, schemes=[scheme]), label="params")
    assert len(params) == spec.n_layers
    for layer, fan_in, fan_out in zip(params, spec.sizes[:-1], spec.sizes[1:]):
        assert isinstance(layer, LayerParams)
        assert layer.weight.shape == (fan_in, fan_out)
        assert layer.weight.dtype == spec.np_dtype
        assert (layer.bias is not None) == spec.bias
        values = layer.weight if layer.bias is None else np.r_[layer.weight.ravel(), layer.bias]
        if scheme == "numpy-rand":
            assert ((values >= 0) & (values < 1)).all()
        else:
            assert (np.abs(values) <= 1 / np.sqrt(fan_in)).all()


def test_a_tiny_share_of_a_probability_row_is_flushed_to_zero() -> None:
    from nnparity.strategies import _probability_rows

    rows = _probability_rows(np.array([[1e-38, 1.0], [0.0, 0.0], [1.0, 3.0]]))
    np.testing.assert_array_equal(rows, [[0.0, 1.0], [1.0, 0.0], [0.25, 0.75]])
