"""Hypothesis strategies for networks, batches and starting weights.

Public API, written the way ``hypothesis.extra.numpy`` writes its strategies:
options are keyword-only, and a bad option raises :class:`nnparity.NnparityError`
when the strategy is made, not when it is drawn from::

    from hypothesis import given
    from nnparity import verify
    from nnparity.strategies import batches, initial_params, network_specs

    @given(st.data())
    def test_my_backend(data):
        spec = data.draw(network_specs(losses=["mse"], dtypes=["float64"]))
        x, y = data.draw(batches(spec))
        params = data.draw(initial_params(spec))
        assert verify(spec, x, y, steps=3, params=params, candidate=MyBackend).ok

Every value is drawn where float64 and float32 are both meaningful, so that a
divergence at the verifier's default tolerances is a bug rather than rounding:

- inputs and regression targets are bounded (``|x| <= max_abs``, default 2) and
  exactly representable in float32, so a float32 and a float64 run see the same data;
  no subnormal numbers;
- starting weights come from :func:`nnparity.init_params` (uniform on [0, 1) or
  ``nn.Linear``'s small uniform range), so pre-activations stay in the tens at most
  and no sigmoid saturates to exactly 0 or 1;
- learning rates are at most ``max_lr`` (default 0.5) with ``reduction="mean"``, and
  ``max_lr / 8`` with ``reduction="sum"`` (a sum over up to 8 rows is up to 8 times
  steeper), momentum at most 0.9: a few steps of training do not explode, since an
  exploding run legitimately amplifies float32 rounding beyond any tolerance.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import Any, NamedTuple

import numpy as np
from hypothesis import strategies as st

from nnparity.activations import ACTIVATIONS
from nnparity.errors import NnparityError
from nnparity.initialization import SCHEMES, init_params
from nnparity.losses import LOSSES, REDUCTIONS
from nnparity.optim import SGD
from nnparity.records import LayerParams
from nnparity.spec import PROBABILITY_LOSSES, NetworkSpec

__all__ = ["batches", "initial_params", "network_specs", "output_activations"]

MAX_SEED = 2**32 - 1
FLOAT32_MAX = float(np.finfo(np.float32).max)
DTYPE_ORDER = ("float64", "float32")  # float64 first: examples shrink towards it
# With reduction="sum" the learning rate is divided by this (the most rows `batches` draws
# by default), so that a sum over a batch steps about as far as a mean does.
SUM_LR_DIVISOR = 8.0
MOMENTUM_RANGE = (0.1, 0.9)
DAMPENING_RANGE = (0.1, 0.9)
WEIGHT_DECAY_RANGE = (1e-3, 0.1)


def output_activations(loss: str, activations: Collection[str] = tuple(ACTIVATIONS)) -> tuple[str, ...]:
    """The activations among ``activations`` that ``loss`` accepts on the output layer."""
    needed = PROBABILITY_LOSSES.get(loss)
    return tuple(a for a in activations if needed is None or a in needed)


class _SpecOptions(NamedTuple):
    layers: tuple[int, int]
    widths: tuple[int, int]
    activations: tuple[str, ...]
    losses: tuple[str, ...]
    reductions: tuple[str, ...]
    dtypes: tuple[str, ...]
    bias: bool | None
    lr: tuple[float, float]
    momentum: bool
    dampening: bool
    nesterov: bool
    weight_decay: bool


def network_specs(
    *,
    min_layers: int = 1,
    max_layers: int = 3,
    min_width: int = 1,
    max_width: int = 6,
    activations: Collection[str] | None = None,
    losses: Collection[str] | None = None,
    reductions: Collection[str] | None = None,
    dtypes: Collection[str] | None = None,
    bias: bool | None = None,
    min_lr: float = 1e-3,
    max_lr: float = 0.5,
    allow_momentum: bool = True,
    allow_dampening: bool = True,
    allow_nesterov: bool = True,
    allow_weight_decay: bool = True,
) -> st.SearchStrategy[NetworkSpec]:
    """A strategy for any valid :class:`nnparity.NetworkSpec`.

    * ``min_layers``, ``max_layers``: how many weight layers (1 to 3 by default).
    * ``min_width``, ``max_width``: the width of every layer, input and output
      included (1 to 6 by default).
    * ``activations``: the activation names to draw from (default: all of them);
      the output layer gets one its loss accepts (``bce`` needs ``sigmoid``).
    * ``losses``, ``reductions``, ``dtypes``: names to draw from (default: all;
      with ``losses=None`` only the losses the activations allow). A loss named
      here must be possible with the activations given.
    * ``bias``: ``True`` or ``False`` for every network, ``None`` for either.
    * ``min_lr``, ``max_lr``: the learning-rate range, ``0 <= min_lr <= max_lr``.
      With ``reduction="sum"`` both are divided by 8 (see the module docstring).
    * ``allow_momentum``, ``allow_dampening``, ``allow_nesterov``,
      ``allow_weight_decay``: whether SGD's options may be non-default. Momentum and
      dampening are drawn from [0.1, 0.9], weight decay from [0.001, 0.1]; Nesterov
      momentum only with momentum and without dampening, as torch requires.

    Shrinking moves towards fewer and narrower layers, the first name of each
    list in nnparity's order (``identity``, ``mse``, ``mean``, ``float64``), no bias
    and plain SGD, so a failing example shrinks to the simplest network that fails.
    """
    layers = _int_range("layers", min_layers, max_layers, floor=1)
    widths = _int_range("width", min_width, max_width, floor=1)
    acts = _names("activations", activations, tuple(ACTIVATIONS))
    if losses is None:
        loss_names = tuple(loss for loss in LOSSES if output_activations(loss, acts))
    else:
        loss_names = _names("losses", losses, tuple(LOSSES))
        for loss in loss_names:
            if not output_activations(loss, acts):
                needed = " or ".join(PROBABILITY_LOSSES[loss])
                raise NnparityError(
                    f"network_specs: loss {loss!r} needs the output activation {needed}, "
                    f"which activations={list(acts)!r} leaves out."
                )
    if bias is not None and not isinstance(bias, bool):
        raise NnparityError(f"network_specs: bias must be True, False or None; got {bias!r}.")
    lr = _float_range("lr", min_lr, max_lr)
    flags = {
        "allow_momentum": allow_momentum,
        "allow_dampening": allow_dampening,
        "allow_nesterov": allow_nesterov,
        "allow_weight_decay": allow_weight_decay,
    }
    for name, value in flags.items():
        if not isinstance(value, bool):
            raise NnparityError(f"network_specs: {name} must be True or False; got {value!r}.")
    options = _SpecOptions(
        layers=layers,
        widths=widths,
        activations=acts,
        losses=loss_names,
        reductions=_names("reductions", reductions, REDUCTIONS),
        dtypes=_names("dtypes", dtypes, DTYPE_ORDER),
        bias=bias,
        lr=lr,
        momentum=allow_momentum,
        dampening=allow_dampening,
        nesterov=allow_nesterov,
        weight_decay=allow_weight_decay,
    )
    return _specs(options)


@st.composite
def _specs(draw: Any, opts: _SpecOptions) -> NetworkSpec:
    n_layers = draw(st.integers(*opts.layers))
    sizes = tuple(draw(st.integers(*opts.widths)) for _ in range(n_layers + 1))
    loss = draw(st.sampled_from(opts.losses))
    hidden = [draw(st.sampled_from(opts.activations)) for _ in range(n_layers - 1)]
    output = draw(st.sampled_from(output_activations(loss, opts.activations)))
    reduction = draw(st.sampled_from(opts.reductions))
    return NetworkSpec(
        sizes=sizes,
        activations=(*hidden, output),
        bias=draw(st.booleans()) if opts.bias is None else opts.bias,
        loss=loss,
        reduction=reduction,
        optimizer=draw(_sgd(opts, SUM_LR_DIVISOR if reduction == "sum" else 1.0)),
        dtype=draw(st.sampled_from(opts.dtypes)),
    )


@st.composite
def _sgd(draw: Any, opts: _SpecOptions, lr_divisor: float) -> SGD:
    lo, hi = opts.lr
    lr = draw(st.floats(lo / lr_divisor, hi / lr_divisor))
    momentum = dampening = weight_decay = 0.0
    nesterov = False
    if opts.momentum and draw(st.booleans()):
        momentum = draw(st.floats(*MOMENTUM_RANGE))
        if opts.dampening and draw(st.booleans()):
            dampening = draw(st.floats(*DAMPENING_RANGE))
        elif opts.nesterov:
            nesterov = draw(st.booleans())
    if opts.weight_decay and draw(st.booleans()):
        weight_decay = draw(st.floats(*WEIGHT_DECAY_RANGE))
    return SGD(lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov)


def batches(
    spec: NetworkSpec, *, min_rows: int = 1, max_rows: int = 8, max_abs: float = 2.0
) -> st.SearchStrategy[tuple[np.ndarray, np.ndarray]]:
    """A strategy for a batch ``(x, y)`` that suits ``spec``, as arrays of its dtype.

    * ``min_rows``, ``max_rows``: how many rows (1 to 8 by default).
    * ``max_abs``: inputs, and the targets of ``mse`` and ``l1``, lie in
      ``[-max_abs, max_abs]`` (default 2).

    Targets are what the loss needs: values in [0, 1] for ``bce`` and
    ``bce_with_logits``, rows of class probabilities (non-negative, summing to 1)
    for ``cross_entropy``. Every value is finite, not subnormal and exactly
    representable in float32.
    """
    if not isinstance(spec, NetworkSpec):
        raise NnparityError(f"batches: spec must be an nnparity.NetworkSpec; got {spec!r:.80}.")
    rows = _int_range("rows", min_rows, max_rows, floor=1)
    bound = _number("max_abs", max_abs)
    if not 0 < bound <= FLOAT32_MAX:
        raise NnparityError(f"batches: max_abs must be > 0 and at most float32's largest; got {max_abs!r}.")
    return _batches(spec, rows, _float32_below(bound))


@st.composite
def _batches(
    draw: Any, spec: NetworkSpec, rows: tuple[int, int], max_abs: float
) -> tuple[np.ndarray, np.ndarray]:
    n = draw(st.integers(*rows))
    n_in, n_out = spec.sizes[0], spec.sizes[-1]
    x = draw(_matrix(n, n_in, -max_abs, max_abs))
    if spec.loss in ("mse", "l1"):
        y = draw(_matrix(n, n_out, -max_abs, max_abs))
    elif spec.loss == "cross_entropy":
        y = _probability_rows(draw(_matrix(n, n_out, 0.0, 1.0)))
    else:  # bce, bce_with_logits
        y = draw(_matrix(n, n_out, 0.0, 1.0))
    return x.astype(spec.np_dtype), y.astype(spec.np_dtype)


def _matrix(rows: int, cols: int, lo: float, hi: float) -> st.SearchStrategy[np.ndarray]:
    # Python floats that float32 represents exactly, drawn into a float64 array.
    element = st.floats(lo, hi, width=32, allow_subnormal=False)
    return st.lists(element, min_size=rows * cols, max_size=rows * cols).map(
        lambda values: np.array(values, dtype=np.float64).reshape(rows, cols)
    )


def _float32_below(value: float) -> float:
    """The largest float32 number <= ``value`` (hypothesis needs float32 bounds for width=32)."""
    rounded = np.float32(value)
    if float(rounded) > value:
        rounded = np.nextafter(rounded, np.float32(0))
    return float(rounded)


def _probability_rows(weights: np.ndarray) -> np.ndarray:
    """Each row scaled to sum to 1; a row of zeros becomes all on the first class."""
    weights = weights.copy()
    weights[weights.sum(axis=1) == 0, 0] = 1.0
    return weights / weights.sum(axis=1, keepdims=True)


def initial_params(
    spec: NetworkSpec, *, schemes: Collection[str] | None = None
) -> st.SearchStrategy[list[LayerParams]]:
    """A strategy for starting weights for ``spec``: ``init_params(spec, seed=..., scheme=...)``.

    * ``schemes``: the :func:`nnparity.init_params` schemes to draw from (default:
      ``"numpy-rand"`` and ``"torch"``).

    The weights are drawn as a scheme and a seed, not element by element, so any
    example can be written down exactly as a config's ``[init] scheme`` and
    ``seed``; hypothesis prints a falsifying example as that call.
    """
    if not isinstance(spec, NetworkSpec):
        raise NnparityError(f"initial_params: spec must be an nnparity.NetworkSpec; got {spec!r:.80}.")
    names = _names("schemes", schemes, SCHEMES, where="initial_params")
    return st.builds(init_params, st.just(spec), scheme=st.sampled_from(names), seed=st.integers(0, MAX_SEED))


def init_choices(schemes: Collection[str] = SCHEMES) -> st.SearchStrategy[tuple[str, int]]:
    """``(scheme, seed)`` pairs, as :func:`initial_params` draws them."""
    names = _names("schemes", schemes, SCHEMES, where="init_choices")
    return st.tuples(st.sampled_from(names), st.integers(0, MAX_SEED))


def _int_range(name: str, min_value: object, max_value: object, *, floor: int) -> tuple[int, int]:
    lo, hi = _whole(f"min_{name}", min_value), _whole(f"max_{name}", max_value)
    if lo < floor:
        raise NnparityError(f"min_{name} must be at least {floor}; got {lo}.")
    if lo > hi:
        raise NnparityError(f"min_{name}={lo} is larger than max_{name}={hi}.")
    return lo, hi


def _float_range(name: str, min_value: object, max_value: object) -> tuple[float, float]:
    lo, hi = _number(f"min_{name}", min_value), _number(f"max_{name}", max_value)
    if lo > hi:
        raise NnparityError(f"min_{name}={lo} is larger than max_{name}={hi}.")
    return lo, hi


def _whole(label: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise NnparityError(f"{label} must be a whole number; got {value!r}.")
    return value


def _number(label: str, value: object) -> float:
    """A finite number >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise NnparityError(f"{label} must be a number; got {value!r}.")
    if not (math.isfinite(value) and value >= 0):
        raise NnparityError(f"{label} must be a finite number >= 0; got {value!r}.")
    return float(value)


def _names(
    what: str, given: object, known: tuple[str, ...], *, where: str = "network_specs"
) -> tuple[str, ...]:
    """The names in ``given`` (all of ``known`` for ``None``), in ``known``'s order."""
    if given is None:
        return known
    if isinstance(given, (str, bytes)) or not isinstance(given, Collection):
        example = list(known[:2])
        raise NnparityError(f"{where}: {what} must be a list of names such as {example}; got {given!r}.")
    unknown = [name for name in given if name not in known]
    if unknown:
        raise NnparityError(f"{where}: unknown {what} {unknown!r}; choose from {', '.join(known)}.")
    chosen = tuple(name for name in known if name in given)
    if not chosen:
        raise NnparityError(f"{where}: {what} must name at least one of {', '.join(known)}.")
    return chosen
