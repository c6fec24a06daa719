"""Hypothesis strategies for networks, batches and starting weights.

Public API, written the way ``hypothesis.extra.numpy`` writes its strategies: the
options are keyword-only, and a bad option raises :class:`nnparity.NnparityError`
when the strategy is made, before anything is drawn::

    from hypothesis import given, strategies as st
    from nnparity import verify
    from nnparity.strategies import batches, initial_params, network_specs

    @given(st.data())
    def test_my_backend(data):
        spec = data.draw(network_specs(losses=["mse"], dtypes=["float64"]))
        x, y = data.draw(batches(spec))
        params = data.draw(initial_params(spec))
        assert verify(spec, x, y, steps=3, params=params, candidate=MyBackend).ok

Values are drawn where float64 and float32 are both meaningful: where two correct
backends, which round differently, still agree at the verifier's default tolerances
(float32's rtol is only about ten units in the last place), so that a divergence is a
bug and not rounding. The default ranges come from letting hypothesis hunt for
divergences between the built-in NumPy and torch backends (``hypothesis.target`` on
the largest error) and narrowing until it found none in 8,000 networks; each limit
below is one a hunt crossed:

- layers are at most 4 wide (``max_width``). At width 6, a three-layer float32 network
  with ``reduction="sum"``, e.g. sizes (6, 4, 6, 5), sums gradient terms in the
  hundreds to a result near 1, and the two backends' summation orders then differ by
  1.5e-5, more than float32's ``atol`` of 1e-5: catastrophic cancellation, not a bug.
- inputs and regression targets lie in [-1, 1] (``max_abs``). With [-2, 2] the same
  float32 cancellation appears at width 6 even with tiny learning rates.
- learning rates lie in [0.001, 0.1] with ``reduction="mean"``. From 0.2, with
  momentum and the notebook's all-positive ``numpy-rand`` weights, three layers of
  training overshoot and explode within five steps, in float64 up to ``inf``, which
  never agrees with anything; float32 rounding is amplified long before that.
- with ``reduction="sum"`` the learning rate is also divided by ``8 * max_width``
  (8 rows by ``max_width`` outputs, the most a batch has by default): a summed loss
  is up to that many times steeper than its mean, and summed networks exploded
  without the divisor.
- starting weights come from :func:`nnparity.init_params` (uniform on [0, 1), or
  ``nn.Linear``'s small uniform range), never larger.
- every input and target is exactly representable in float32 and not subnormal, so a
  float32 run and a float64 run of the same example see the same numbers.

Float32 still cannot follow float64 everywhere in these ranges: a sigmoid output
rounds to exactly 1.0 in float32 once its input passes about 16.6, where ``BCELoss``
clamps ``log(0)`` to -100 while float64 still resolves it. That is torch's own reason
for ``BCEWithLogitsLoss``, and it leaves the NumPy and torch backends in agreement
(both saturate alike); only a comparison of float32 with float64 must leave ``bce`` out.
"""

from __future__ import annotations

import functools
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

__all__ = ["batches", "init_choices", "initial_params", "network_specs", "output_activations"]

MAX_SEED = 2**32 - 1
DEFAULT_MAX_ROWS = 8
FLOAT32_MAX = float(np.finfo(np.float32).max)
FLOAT32_TINY = float(np.finfo(np.float32).tiny)  # the smallest normal float32
MAX_DRAWN = 8192  # the longest list hypothesis draws (a batch's x or y is one list of numbers)
DTYPE_ORDER = ("float64", "float32")  # float64 first, so that examples shrink towards it
MOMENTUM_RANGE = (0.1, 0.9)
DAMPENING_RANGE = (0.1, 0.9)
WEIGHT_DECAY_RANGE = (1e-3, 0.1)
_BOOLEANS = st.booleans()


def output_activations(loss: str, activations: Collection[str] = tuple(ACTIVATIONS)) -> tuple[str, ...]:
    """The activations among ``activations`` that ``loss`` accepts on the output layer."""
    needed = PROBABILITY_LOSSES.get(loss)
    return tuple(a for a in activations if needed is None or a in needed)


class _SpecStrategies(NamedTuple):
    """The strategies a spec is drawn from, built once per ``network_specs`` call."""

    n_layers: st.SearchStrategy[int]
    width: st.SearchStrategy[int]
    loss: st.SearchStrategy[str]
    hidden: st.SearchStrategy[str]
    output: dict[str, st.SearchStrategy[str]]  # by loss
    reduction: st.SearchStrategy[str]
    bias: st.SearchStrategy[bool]
    lr: dict[str, st.SearchStrategy[float]]  # by reduction
    momentum: st.SearchStrategy[float] | None
    dampening: st.SearchStrategy[float] | None
    nesterov: bool
    weight_decay: st.SearchStrategy[float] | None
    dtype: st.SearchStrategy[str]


def network_specs(
    *,
    min_layers: int = 1,
    max_layers: int = 3,
    min_width: int = 1,
    max_width: int = 4,
    activations: Collection[str] | None = None,
    losses: Collection[str] | None = None,
    reductions: Collection[str] | None = None,
    dtypes: Collection[str] | None = None,
    bias: bool | None = None,
    min_lr: float = 1e-3,
    max_lr: float = 0.1,
    allow_momentum: bool = True,
    allow_dampening: bool = True,
    allow_nesterov: bool = True,
    allow_weight_decay: bool = True,
) -> st.SearchStrategy[NetworkSpec]:
    """A strategy for valid :class:`nnparity.NetworkSpec` values.

    * ``min_layers``, ``max_layers``: how many weight layers (1 to 3 by default).
    * ``min_width``, ``max_width``: the width of every layer, input and output
      included (1 to 4 by default).
    * ``activations``: the activation names to draw from (default: all of them).
      The output layer gets one its loss accepts (``bce`` needs ``sigmoid``).
    * ``losses``, ``reductions``, ``dtypes``: the names to draw from (default: all;
      for ``losses=None``, all that ``activations`` allow). A loss named here must
      be possible with the activations given.
    * ``bias``: ``True`` or ``False`` for every network, ``None`` for either.
    * ``min_lr``, ``max_lr``: the learning rate, ``0 <= min_lr <= max_lr``; with
      ``reduction="sum"`` both are divided by ``8 * max_width`` (see the module).
    * ``allow_momentum``, ``allow_dampening``, ``allow_nesterov``,
      ``allow_weight_decay``: whether those SGD options may be drawn. Momentum and
      dampening come from [0.1, 0.9], weight decay from [0.001, 0.1]; Nesterov
      momentum only with momentum and without dampening, as torch requires.

    Examples shrink towards fewer and narrower layers, the first names in nnparity's
    order (``identity``, ``mse``, ``mean``, ``float64``), no bias and plain SGD, so a
    failure shrinks to the simplest network that still fails.
    """
    where = "network_specs"
    layers = _int_range(where, "layers", min_layers, max_layers, floor=1)
    widths = _int_range(where, "width", min_width, max_width, floor=1)
    acts = _names(where, "activations", activations, tuple(ACTIVATIONS))
    if losses is None:
        loss_names = tuple(loss for loss in LOSSES if output_activations(loss, acts))
    else:
        loss_names = _names(where, "losses", losses, tuple(LOSSES))
        for loss in loss_names:
            if not output_activations(loss, acts):
                raise NnparityError(
                    f"{where}: loss {loss!r} needs the output activation "
                    f"{' or '.join(PROBABILITY_LOSSES[loss])}, which activations={list(acts)!r} leaves out."
                )
    if bias is not None and not isinstance(bias, bool):
        raise NnparityError(f"{where}: bias must be True, False or None; got {bias!r}.")
    flags = {
        "allow_momentum": allow_momentum,
        "allow_dampening": allow_dampening,
        "allow_nesterov": allow_nesterov,
        "allow_weight_decay": allow_weight_decay,
    }
    for name, value in flags.items():
        if not isinstance(value, bool):
            raise NnparityError(f"{where}: {name} must be True or False; got {value!r}.")
    lo, hi = _float_range(where, "lr", min_lr, max_lr)
    sum_divisor = DEFAULT_MAX_ROWS * widths[1]
    reduction_names = _names(where, "reductions", reductions, REDUCTIONS)
    return _specs(
        _SpecStrategies(
            n_layers=st.integers(*layers),
            width=st.integers(*widths),
            loss=st.sampled_from(loss_names),
            hidden=st.sampled_from(acts),
            output={loss: st.sampled_from(output_activations(loss, acts)) for loss in loss_names},
            reduction=st.sampled_from(reduction_names),
            bias=st.booleans() if bias is None else st.just(bias),
            lr={
                "mean": st.floats(lo, hi),
                "sum": st.floats(lo / sum_divisor, hi / sum_divisor),
            },
            momentum=st.floats(*MOMENTUM_RANGE) if allow_momentum else None,
            dampening=st.floats(*DAMPENING_RANGE) if allow_dampening else None,
            nesterov=allow_nesterov,
            weight_decay=st.floats(*WEIGHT_DECAY_RANGE) if allow_weight_decay else None,
            dtype=st.sampled_from(_names(where, "dtypes", dtypes, DTYPE_ORDER)),
        )
    )


@st.composite
def _specs(draw: Any, s: _SpecStrategies) -> NetworkSpec:
    n_layers = draw(s.n_layers)
    sizes = tuple(draw(s.width) for _ in range(n_layers + 1))
    loss = draw(s.loss)
    hidden = [draw(s.hidden) for _ in range(n_layers - 1)]
    output = draw(s.output[loss])
    reduction = draw(s.reduction)
    bias = draw(s.bias)
    lr = draw(s.lr[reduction])
    momentum = dampening = weight_decay = 0.0
    nesterov = False
    if s.momentum is not None and draw(_BOOLEANS):
        momentum = draw(s.momentum)
        if s.dampening is not None and draw(_BOOLEANS):
            dampening = draw(s.dampening)
        elif s.nesterov:
            nesterov = draw(_BOOLEANS)
    if s.weight_decay is not None and draw(_BOOLEANS):
        weight_decay = draw(s.weight_decay)
    return NetworkSpec(
        sizes=sizes,
        activations=(*hidden, output),
        bias=bias,
        loss=loss,
        reduction=reduction,
        optimizer=SGD(
            lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov
        ),
        dtype=draw(s.dtype),
    )


def batches(
    spec: NetworkSpec, *, min_rows: int = 1, max_rows: int = DEFAULT_MAX_ROWS, max_abs: float = 1.0
) -> st.SearchStrategy[tuple[np.ndarray, np.ndarray]]:
    """A strategy for a batch ``(x, y)`` that suits ``spec``: two arrays of its dtype.

    * ``min_rows``, ``max_rows``: how many rows (1 to 8 by default).
    * ``max_abs``: inputs, and the targets of ``mse`` and ``l1``, lie in
      ``[-max_abs, max_abs]`` (default 1; see the module on why not more).

    Targets are what the loss needs: values in [0, 1] for ``bce`` and
    ``bce_with_logits``, rows of class probabilities (non-negative, summing to 1)
    for ``cross_entropy``. Every value is finite, not subnormal and, before a
    cross-entropy row is scaled to sum to 1, exactly representable in float32.
    """
    where = "batches"
    if not isinstance(spec, NetworkSpec):
        raise NnparityError(f"{where}: spec must be an nnparity.NetworkSpec; got {spec!r:.80}.")
    rows = _int_range(where, "rows", min_rows, max_rows, floor=1)
    bound = _number(where, "max_abs", max_abs)
    if not FLOAT32_TINY <= bound <= FLOAT32_MAX:
        raise NnparityError(
            f"{where}: max_abs must lie between float32's smallest normal number and its largest "
            f"({FLOAT32_TINY:.3g} to {FLOAT32_MAX:.3g}); got {max_abs!r}."
        )
    widest = max(spec.sizes[0], spec.sizes[-1])
    if rows[1] * widest > MAX_DRAWN:
        raise NnparityError(
            f"{where}: {rows[1]} rows of {widest} numbers are more than hypothesis draws at once "
            f"({MAX_DRAWN:,}); ask for fewer rows (at most {MAX_DRAWN // widest}) or a narrower network."
        )
    return _batches(spec, rows, _float32_at_most(bound))


@st.composite
def _batches(
    draw: Any, spec: NetworkSpec, rows: tuple[int, int], max_abs: float
) -> tuple[np.ndarray, np.ndarray]:
    n = draw(_integers(*rows))
    n_in, n_out = spec.sizes[0], spec.sizes[-1]
    x = draw(_matrix(n, n_in, -max_abs, max_abs))
    if spec.loss in ("mse", "l1"):
        y = draw(_matrix(n, n_out, -max_abs, max_abs))
    elif spec.loss == "cross_entropy":
        y = _probability_rows(draw(_matrix(n, n_out, 0.0, 1.0)))
    else:  # bce, bce_with_logits
        y = draw(_matrix(n, n_out, 0.0, 1.0))
    return x.astype(spec.np_dtype), y.astype(spec.np_dtype)


@functools.lru_cache(maxsize=1024)
def _matrix(rows: int, cols: int, lo: float, hi: float) -> st.SearchStrategy[np.ndarray]:
    # Strategies are cached: building and validating them costs more than drawing from them.
    element = st.floats(lo, hi, width=32, allow_subnormal=False)
    return st.lists(element, min_size=rows * cols, max_size=rows * cols).map(
        lambda values: np.array(values, dtype=np.float64).reshape(rows, cols)
    )


@functools.lru_cache(maxsize=64)
def _integers(lo: int, hi: int) -> st.SearchStrategy[int]:
    return st.integers(lo, hi)


def _probability_rows(weights: np.ndarray) -> np.ndarray:
    """Each row scaled to sum to 1; a row of zeros becomes all on the first class. A share that
    scaling makes smaller than float32's smallest normal number becomes 0 (not subnormal)."""
    weights = weights.copy()
    weights[weights.sum(axis=1) == 0, 0] = 1.0
    rows = weights / weights.sum(axis=1, keepdims=True)
    rows[rows < FLOAT32_TINY] = 0.0
    return rows


def _float32_at_most(value: float) -> float:
    """The largest float32 number <= ``value`` (hypothesis needs float32 bounds for width=32)."""
    rounded = np.float32(value)
    if float(rounded) > value:
        rounded = np.nextafter(rounded, np.float32(0))
    return float(rounded)


def initial_params(
    spec: NetworkSpec, *, schemes: Collection[str] | None = None
) -> st.SearchStrategy[list[LayerParams]]:
    """A strategy for starting weights: ``init_params(spec, scheme=..., seed=...)``.

    * ``schemes``: the :func:`nnparity.init_params` schemes to draw from (default:
      ``"numpy-rand"`` and ``"torch"``).

    The weights are drawn as a scheme and a seed, not element by element, so that
    any example can be written down exactly as a config's ``[init] scheme`` and
    ``seed``; hypothesis prints a failing example as that call.
    """
    if not isinstance(spec, NetworkSpec):
        raise NnparityError(f"initial_params: spec must be an nnparity.NetworkSpec; got {spec!r:.80}.")
    names = _names("initial_params", "schemes", schemes, SCHEMES)
    return st.builds(init_params, st.just(spec), scheme=st.sampled_from(names), seed=st.integers(0, MAX_SEED))


def init_choices(*, schemes: Collection[str] | None = None) -> st.SearchStrategy[tuple[str, int]]:
    """A strategy for ``(scheme, seed)`` pairs, as :func:`initial_params` draws them."""
    names = _names("init_choices", "schemes", schemes, SCHEMES)
    return st.tuples(st.sampled_from(names), st.integers(0, MAX_SEED))


# Upper bounds: a search draws many networks, so each must stay small (hypothesis itself refuses
# lists of more than 8,192 elements, such as 64 rows of 32 inputs and 32 targets; and wide float32
# networks differ by rounding alone).
CEILINGS = {"layers": 8, "width": 32, "rows": 64}


def _int_range(where: str, name: str, min_value: object, max_value: object, *, floor: int) -> tuple[int, int]:
    lo, hi = _whole(where, f"min_{name}", min_value), _whole(where, f"max_{name}", max_value)
    if lo < floor:
        raise NnparityError(f"{where}: min_{name} must be at least {floor}; got {lo}.")
    ceiling = CEILINGS[name]
    if hi > ceiling:
        raise NnparityError(
            f"{where}: max_{name} must be at most {ceiling} (a search tries many small networks); got {hi}."
        )
    if lo > hi:
        raise NnparityError(f"{where}: min_{name}={lo} is larger than max_{name}={hi}.")
    return lo, hi


def _float_range(where: str, name: str, min_value: object, max_value: object) -> tuple[float, float]:
    lo, hi = _number(where, f"min_{name}", min_value), _number(where, f"max_{name}", max_value)
    if lo > hi:
        raise NnparityError(f"{where}: min_{name}={lo} is larger than max_{name}={hi}.")
    return lo, hi


def _whole(where: str, label: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise NnparityError(f"{where}: {label} must be a whole number; got {value!r}.")
    return value


def _number(where: str, label: str, value: object) -> float:
    """``value`` as a float, if it is a finite number >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise NnparityError(f"{where}: {label} must be a number; got {value!r}.")
    if not (math.isfinite(value) and value >= 0):
        raise NnparityError(f"{where}: {label} must be a finite number >= 0; got {value!r}.")
    return float(value)


def _names(where: str, what: str, given: object, known: tuple[str, ...]) -> tuple[str, ...]:
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
