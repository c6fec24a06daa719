"""A third opinion: the disputed quantity recomputed in float64, independently of both backends.

Nothing here calls a backend, nor nnparity's own NumPy math (``activations.py``, ``losses.py``,
``optim.py``): the activations, losses and the SGD update are written again below from torch's
documentation, so a bug in the candidate's rules cannot hide in the oracle as well.

**Gradients** come from central finite differences of the float64 loss ``E``, extrapolated to
fourth order. For one element ``p`` of a weight or bias::

    D(h)  = (E(p + h) - E(p - h)) / 2h          error h^2 E'''/6 + O(h^4)
    D4(h) = (4 D(h) - D(2h)) / 3                Richardson: error O(h^4)
    h     = eps^(1/5) max(1, |p|), rounded to a power of 2      (eps = 2.2e-16: h ~ 7e-4)

``h ~ eps^(1/5)`` balances the truncation error (``~h^4``) against rounding (``~u / h``, where ``u`` is
the rounding error of one evaluation of ``E``). The bound reported beside each value is measured::

    err = |D4(h) - D4(2h)| + 2 u / h,           u = 4 eps sum(|loss terms|) / norm

(for BCE, ``u`` also counts ``4 eps sum(y + (1 - y) f / (1 - f)) / norm``: near saturation ``log1p(-f)``
magnifies the rounding of ``f`` by ``1 / (1 - f)``, and where ``f`` rounded to 1 the bound is infinite).

The first term is about 15 times ``D4(h)``'s truncation error (Richardson's argument once more), the
second bounds its rounding. Against torch's float64 autograd, for every activation and loss, the
difference stays below a fifth of ``err``, and ``err`` is typically ~1e-12 of the loss's scale: the
oracle can arbitrate a float32 round trip inside a float64 run (relative error up to 6e-8), not a
1e-14 difference between summation orders. The oracle always works in float64 (in a float32 run, from
the float32 weights), so ``h`` and ``err`` follow float64's epsilon; the run's dtype enters the verdict
through its tolerance (see :mod:`nnparity.diagnosis`).

**Kinks.** Where a move of up to ``4h`` takes a ReLU, leaky-ReLU or ELU pre-activation across 0 (a
softplus across its threshold, L1's ``f - y`` across 0), ``E`` is not smooth there and ``D4`` means
nothing. Such an element is redone at second order, ``D(h)`` with ``h = eps^(1/3) max(1, |p|)`` (~6e-6)
and ``err = |D(h) - D(2h)| + 2 u / h``. If even that step crosses, the element sits on the kink, where the
derivative is a convention (torch takes ``relu'(0) = 0``): the spread of the one-sided slopes
``|D+ - D-|`` joins ``err``, and any value between them is accepted, so the oracle cannot tell.

**Forward pass and loss** are recomputed in float64 with a first-order rounding-error bound carried
along (``n eps |a| @ |W|`` per product, propagated through each later layer by ``|W|`` and ``|f'|``).

**A correct side's rounding.** The oracle's value is (nearly) exact; a correct backend working in the
run's dtype lands some way off it, farther where a sum cancels. :func:`rounding_spread` measures how
far, by Monte Carlo arithmetic: the step is recomputed in float64 a few times with every product
``A @ B`` of ``n``-term sums moved by up to ``n u (|A| @ |B|)``, each transcendental activation's
output by ``4 u`` one way for the whole tensor (a library's few-ulp bias), and every other operation
by up to ``u`` of its value, at random (``u`` the dtype's unit roundoff, 6e-8 for float32), and the
spread of the results, propagated through the layers, the loss and backpropagation as the real
rounding is, is what a correct side may be off by (:mod:`nnparity.diagnosis` adds it to the allowance).

**Update**: ``torch.optim.SGD``'s documented update, applied to each side's own reported gradient
from the parameters it started the step with. Momentum buffers are not part of the ``Backend``
interface, so the buffer after step ``t - 1`` is read back from that step's displacement: a step is
``p' = p - lr d``, and ``d`` is the buffer (or ``g + momentum * buf`` with Nesterov), hence
``buf = (p - p') / lr`` (or ``((p - p') / lr - g) / momentum``). The rounding of ``p - p'`` costs
``~eps |p| / lr`` in the buffer, i.e. ``~eps |p|`` in the recomputed parameter.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import numpy as np

from nnparity.optim import SGD
from nnparity.records import LayerParams
from nnparity.spec import NetworkSpec

Array = np.ndarray
F64 = np.dtype(np.float64)
EPS = float(np.finfo(np.float64).eps)
FD_STEP = EPS ** (1.0 / 5.0)  # h = FD_STEP * max(1, |p|), fourth order
FD_STEP_NEAR_KINK = EPS ** (1.0 / 3.0)  # second order, where a kink lies within 4h
ROUNDING = 4.0  # u = ROUNDING * eps * sum(|loss terms|) / norm

# torch's defaults: LeakyReLU(0.01), Softplus(beta=1, threshold=20), ELU(alpha=1); BCELoss clamps
# its logarithms at -100.
LEAKY_SLOPE, SOFTPLUS_THRESHOLD, ELU_ALPHA, LOG_FLOOR = 0.01, 20.0, 1.0, -100.0


# --- activations, as torch.nn documents them: forward f(z) and derivative f'(z) ----------------------


def _sigmoid(z: Array) -> Array:
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-z))


def _softplus(z: Array) -> Array:
    with np.errstate(over="ignore"):
        return np.where(z > SOFTPLUS_THRESHOLD, z, np.log1p(np.exp(np.minimum(z, SOFTPLUS_THRESHOLD))))


def _elu(z: Array) -> Array:
    return np.where(z > 0, z, ELU_ALPHA * np.expm1(np.minimum(z, 0.0)))


FORWARD: dict[str, Callable[[Array], Array]] = {
    "identity": lambda z: z,
    "sigmoid": _sigmoid,
    "tanh": np.tanh,
    "relu": lambda z: np.maximum(z, 0.0),
    "leaky_relu": lambda z: np.where(z > 0, z, LEAKY_SLOPE * z),
    "softplus": _softplus,
    "elu": _elu,
}
DERIVATIVE: dict[str, Callable[[Array], Array]] = {
    "identity": np.ones_like,
    "sigmoid": lambda z: _sigmoid(z) * (1.0 - _sigmoid(z)),
    "tanh": lambda z: 1.0 - np.tanh(z) ** 2,
    "relu": lambda z: (z > 0).astype(F64),
    "leaky_relu": lambda z: np.where(z > 0, 1.0, LEAKY_SLOPE),
    "softplus": lambda z: np.where(z > SOFTPLUS_THRESHOLD, 1.0, _sigmoid(z)),
    "elu": lambda z: np.where(z > 0, 1.0, ELU_ALPHA * np.exp(np.minimum(z, 0.0))),
}
# Where each piecewise function switches rule; crossing one of these makes E non-smooth.
PIECES: dict[str, Callable[[Array], Array]] = {
    "relu": lambda z: z > 0,
    "leaky_relu": lambda z: z > 0,
    "elu": lambda z: z > 0,
    "softplus": lambda z: z > SOFTPLUS_THRESHOLD,
}


# --- losses, as torch.nn documents them: one term per row, and what the mean divides by -------------


def _loss_terms(name: str, f: Array, y: Array) -> Array:
    """The loss's terms summed within each row (the last axis), so ``E = terms.sum() / norm``.

    ``f`` may carry leading batch axes, ``(..., rows, outputs)``, for many perturbed networks at once.
    """
    if name == "mse":
        return ((f - y) ** 2).sum(axis=-1)
    if name == "l1":
        return np.abs(f - y).sum(axis=-1)
    if name == "bce":
        with np.errstate(divide="ignore", invalid="ignore"):
            log_f, log_1mf = np.maximum(np.log(f), LOG_FLOOR), np.maximum(np.log1p(-f), LOG_FLOOR)
        return -(y * log_f + (1.0 - y) * log_1mf).sum(axis=-1)
    if name == "bce_with_logits":
        return (np.maximum(f, 0.0) - f * y + np.log1p(np.exp(-np.abs(f)))).sum(axis=-1)
    if name == "cross_entropy":  # class-probability targets
        shifted = f - f.max(axis=-1, keepdims=True)
        log_softmax = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
        return -(y * log_softmax).sum(axis=-1)
    raise ValueError(f"unknown loss {name!r}")


def _loss_norm(name: str, reduction: str, f: Array) -> float:
    """``mean`` divides by every element, except cross-entropy, which divides by the rows."""
    if reduction == "sum":
        return 1.0
    rows, outputs = f.shape[-2:]
    return float(rows if name == "cross_entropy" else rows * outputs)


def loss_value(
    spec: NetworkSpec, f: Array, y: Array, loss: str | None = None, reduction: str | None = None
) -> float:
    """``E`` for the network output ``f`` (``loss``/``reduction`` default to the spec's)."""
    name, red = loss or spec.loss, reduction or spec.reduction
    return float(_loss_terms(name, f, y).sum() / _loss_norm(name, red, f))


def loss_gradient(spec: NetworkSpec, f: Array, y: Array) -> Array:
    """``dE/df`` by finite differences (fourth order, as for :func:`gradient`), one output column at a
    time: every row's term depends on its own row only. Only for hints and error bounds."""
    norm = _loss_norm(spec.loss, spec.reduction, f)
    grad = np.empty_like(f)

    def central(j: int, h: Array) -> Array:
        up, down = f.copy(), f.copy()
        up[:, j] += h
        down[:, j] -= h
        diff = _loss_terms(spec.loss, up, y) - _loss_terms(spec.loss, down, y)
        return diff / ((up[:, j] - down[:, j]) * norm)

    for j in range(f.shape[1]):
        h = FD_STEP * np.maximum(1.0, np.abs(f[:, j]))
        grad[:, j] = (4 * central(j, h) - central(j, 2 * h)) / 3
    return grad


# --- the forward pass ----------------------------------------------------------------------------------


def as_float64(params: Sequence[LayerParams]) -> list[LayerParams]:
    """Fresh float64 copies, so the oracle never touches a backend's arrays."""
    return [
        LayerParams(
            np.array(p.weight, dtype=F64, order="C"),
            None if p.bias is None else np.array(p.bias, dtype=F64, order="C"),
        )
        for p in params
    ]


def forward(
    spec: NetworkSpec, params: Sequence[LayerParams], x: Array, first: int = 0
) -> tuple[list[Array], list[Array]]:
    """Pre-activations ``z`` and activations from layer ``first`` on; ``outs[0]`` is that layer's input."""
    zs: list[Array] = []
    outs = [x]
    for p, act in zip(params[first:], spec.activations[first:]):
        z = outs[-1] @ p.weight if p.bias is None else outs[-1] @ p.weight + p.bias
        zs.append(z)
        outs.append(FORWARD[act](z))
    return zs, outs


class Estimate(NamedTuple):
    """The oracle's value of a tensor, its error bound per element, where it is known, and kinks."""

    value: Array
    err: Array
    known: Array
    kink: Array


def _full(value: Array, err: Array) -> Estimate:
    return Estimate(value, err, np.ones(value.shape, bool), np.zeros(value.shape, bool))


def _forward_with_error(
    spec: NetworkSpec, params: Sequence[LayerParams], x: Array
) -> tuple[list, list, list]:
    """Forward pass with a first-order bound on each activation's rounding error."""
    zs, outs, errs = [], [x], [np.zeros_like(x)]
    for p, act in zip(params, spec.activations):
        a, e = outs[-1], errs[-1]
        n = p.weight.shape[0] + 1
        mag = np.abs(a) @ np.abs(p.weight) + (0.0 if p.bias is None else np.abs(p.bias))
        z = a @ p.weight if p.bias is None else a @ p.weight + p.bias
        z_err = n * EPS * mag + e @ np.abs(p.weight)
        out = FORWARD[act](z)
        zs.append(z)
        outs.append(out)
        errs.append(np.abs(DERIVATIVE[act](z)) * z_err + 4 * EPS * np.abs(out))
    return zs, outs, errs


def activation(spec: NetworkSpec, params: Sequence[LayerParams], x: Array, layer: int) -> Estimate:
    """Layer ``layer``'s activation recomputed in float64, with its rounding-error bound."""
    _, outs, errs = _forward_with_error(spec, as_float64(params), np.asarray(x, F64))
    return _full(outs[layer + 1], errs[layer + 1])


def loss(spec: NetworkSpec, params: Sequence[LayerParams], x: Array, y: Array) -> Estimate:
    """The loss recomputed in float64: ``u`` for the sum, plus the output's error through ``|dE/df|``."""
    _, outs, errs = _forward_with_error(spec, as_float64(params), np.asarray(x, F64))
    f, y = outs[-1], np.asarray(y, F64)
    terms = _loss_terms(spec.loss, f, y)
    norm = _loss_norm(spec.loss, spec.reduction, f)
    err = ROUNDING * EPS * np.abs(terms).sum() / norm + float(
        (np.abs(loss_gradient(spec, f, y)) * errs[-1]).sum()
    )
    return _full(np.array(terms.sum() / norm), np.array(err))


# --- gradients by finite differences -------------------------------------------------------------------


def _bce_magnification(f: Array, y: Array) -> float:
    """``sum |dE/df| |f|`` for BCE's terms: what an error of ``eps |f|`` in ``f`` costs ``E``, which
    near saturation is far more than ``eps |E|`` (infinite where ``f`` rounded to 1: E is flat there,
    a staircase of the rounding, and a finite difference of it means nothing)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        cost = y + np.where(y < 1.0, (1.0 - y) * f / (1.0 - f), 0.0)  # y = 1: no log1p(-f) term
    return float(cost.sum())


def _pieces(spec: NetworkSpec, zs: list[Array], f: Array, y: Array, first: int) -> list[Array]:
    """Which side of every kink each value is on, from layer ``first`` to the loss."""
    out = [PIECES[act](z) for z, act in zip(zs, spec.activations[first:]) if act in PIECES]
    if spec.loss == "l1":
        out.append(np.sign(f - y))
    return out


class _Perturbed:
    """The loss of many copies of the network, each with one element of one tensor moved.

    Moving ``W[i, j]`` by ``delta`` moves only column ``j`` of the layer's pre-activation, by
    ``delta * a_prev[:, i]`` (a bias element: by ``delta``); the layers after it are evaluated for all
    copies at once, as a batch. Steps are powers of 2, so ``delta * a_prev`` is exact.
    """

    MAX_BATCH_VALUES = 2_000_000  # floats per intermediate array: ~16 MB

    def __init__(self, spec: NetworkSpec, P: list[LayerParams], x: Array, y: Array, layer: int, tensor: str):
        self.spec, self.P, self.y, self.layer, self.tensor = spec, P, y, layer, tensor
        zs, outs = forward(spec, P, x)
        self.a_in, self.z = outs[layer], zs[layer]
        self.fan_out = self.z.shape[1]
        self.norm = _loss_norm(spec.loss, spec.reduction, outs[-1])
        self.base_E = loss_value(spec, outs[-1], y)
        self.base_pieces = _pieces(spec, zs[layer:], outs[-1], y, layer)
        # u: the rounding error of one evaluation of E
        self.u = ROUNDING * EPS * float(np.abs(_loss_terms(spec.loss, outs[-1], y)).sum()) / self.norm
        if spec.loss == "bce":  # log f and log1p(-f) magnify f's own rounding (~eps f) by 1/f, 1/(1 - f)
            self.u += ROUNDING * EPS * _bce_magnification(outs[-1], y) / self.norm
        width = max(spec.sizes[layer + 1 :])
        self.batch = max(1, self.MAX_BATCH_VALUES // (x.shape[0] * width))

    def losses(self, elements: Array, deltas: Array) -> tuple[Array, Array]:
        """``E`` with element ``elements[i]`` moved by ``deltas[i, k]`` (shaped like ``deltas``), and
        whether any move of element ``i`` crossed a kink."""
        n, m = deltas.shape
        flat_elements, flat_deltas = np.repeat(elements, m), deltas.ravel()
        E, crossed = np.empty(n * m), np.empty(n * m, bool)
        for lo in range(0, n * m, self.batch):
            sl = slice(lo, lo + self.batch)
            E[sl], crossed[sl] = self._losses(flat_elements[sl], flat_deltas[sl])
        return E.reshape(n, m), np.asarray(crossed.reshape(n, m).any(axis=1))

    def _losses(self, elements: Array, deltas: Array) -> tuple[Array, Array]:
        spec, B = self.spec, len(deltas)
        Z = np.repeat(self.z[None], B, axis=0)
        if self.tensor == "weight":
            i, j = np.divmod(elements, self.fan_out)
            Z[np.arange(B), :, j] += deltas[:, None] * self.a_in[:, i].T
        else:
            Z[np.arange(B), :, elements] += deltas[:, None]
        zs = [Z]
        a = FORWARD[spec.activations[self.layer]](Z)
        for p, act in zip(self.P[self.layer + 1 :], spec.activations[self.layer + 1 :]):
            Z = a @ p.weight if p.bias is None else a @ p.weight + p.bias
            zs.append(Z)
            a = FORWARD[act](Z)
        E = _loss_terms(spec.loss, a, self.y).sum(axis=-1) / self.norm
        crossed = np.zeros(B, bool)
        for got, base in zip(_pieces(spec, zs, a, self.y, self.layer), self.base_pieces):
            crossed |= (got != base).reshape(B, -1).any(axis=1)
        return E, crossed


def _power_of_two(h: Array) -> Array:
    return 2.0 ** np.round(np.log2(h))


def gradient(
    spec: NetworkSpec,
    params: Sequence[LayerParams],
    x: Array,
    y: Array,
    layer: int,
    tensor: str,
    elements: Array | None = None,
) -> Estimate:
    """``dE/d(tensor)`` of layer ``layer`` by finite differences at the given flat ``elements`` (all
    by default); see the module docstring for the step, the error bound and kinks."""
    P = as_float64(params)
    target = P[layer].weight if tensor == "weight" else P[layer].bias
    if target is None:
        raise ValueError(f"layer {layer} has no {tensor}")
    moved = _Perturbed(spec, P, np.asarray(x, F64), np.asarray(y, F64), layer, tensor)
    chosen = np.arange(target.size) if elements is None else np.asarray(elements, int)
    scale = np.maximum(1.0, np.abs(target.reshape(-1)[chosen]))

    # Fourth order: D4(h) = (4 D(h) - D(2h)) / 3 from E at +-h, +-2h, +-4h; err = |D4(h) - D4(2h)| + 2u/h.
    h = _power_of_two(FD_STEP * scale)
    E, crossed = moved.losses(chosen, h[:, None] * np.array([1, -1, 2, -2, 4, -4]))
    D = [(E[:, 2 * k] - E[:, 2 * k + 1]) / (2 * (2**k) * h) for k in range(3)]
    value = (4 * D[0] - D[1]) / 3
    err = np.abs(value - (4 * D[1] - D[2]) / 3) + 2 * moved.u / h
    kink = np.zeros(len(chosen), bool)

    if crossed.any():  # a kink within 4h: second order at a smaller step, E at +-h, +-2h
        h2 = _power_of_two(FD_STEP_NEAR_KINK * scale[crossed])
        E2, again = moved.losses(chosen[crossed], h2[:, None] * np.array([1, -1, 2, -2]))
        d1, d2 = (E2[:, 0] - E2[:, 1]) / (2 * h2), (E2[:, 2] - E2[:, 3]) / (4 * h2)
        bound = np.abs(d1 - d2) + 2 * moved.u / h2
        # Still crossing: the derivative is a convention there; any value between the one-sided
        # slopes is defensible, so their spread joins the bound.
        right, left = (E2[:, 0] - moved.base_E) / h2, (moved.base_E - E2[:, 1]) / h2
        bound = np.where(again, bound + np.abs(right - left), bound)
        value[crossed], err[crossed], kink[crossed] = d1, bound, again

    est = Estimate(
        np.full(target.shape, np.nan),
        np.full(target.shape, np.nan),
        np.zeros(target.shape, bool),
        np.zeros(target.shape, bool),
    )
    est.value.flat[chosen], est.err.flat[chosen], est.known.flat[chosen], est.kink.flat[chosen] = (
        value,
        err,
        True,
        kink,
    )
    return est


def backprop(
    spec: NetworkSpec,
    params: Sequence[LayerParams],
    x: Array,
    y: Array,
    *,
    derivatives: Mapping[int, Callable[[Array, Array], Array]] | None = None,
    back_weights: Mapping[int, Array] | None = None,
) -> tuple[list[LayerParams], list[Array]]:
    """Analytic gradients and each layer's ``dE/dz``, for testing a hint's counterfactual.

    Not used for a verdict. ``derivatives={k: f}`` takes layer ``k``'s activation derivative as
    ``f(z, a)``; ``back_weights={k: W}`` propagates ``dE/da`` back through ``W`` instead of layer
    ``k``'s weight.
    ``dE/df`` comes from :func:`loss_gradient` (finite differences, ~1e-10 relative).
    """
    P = as_float64(params)
    x, y = np.asarray(x, F64), np.asarray(y, F64)
    zs, outs = forward(spec, P, x)
    dE_da = loss_gradient(spec, outs[-1], y)
    grads: list[LayerParams] = [LayerParams(np.empty(0))] * spec.n_layers
    dE_dzs: list[Array] = [np.empty(0)] * spec.n_layers
    for l in reversed(range(spec.n_layers)):  # noqa: E741
        override = (derivatives or {}).get(l)
        da_dz = DERIVATIVE[spec.activations[l]](zs[l]) if override is None else override(zs[l], outs[l + 1])
        dE_dz = dE_da * da_dz
        dE_dzs[l] = dE_dz
        grads[l] = LayerParams(outs[l].T @ dE_dz, None if P[l].bias is None else dE_dz.sum(axis=0))
        W = (back_weights or {}).get(l, P[l].weight)
        dE_da = dE_dz @ np.asarray(W, F64).T
    return grads, dE_dzs


def gradient_at(
    spec: NetworkSpec, params: Sequence[LayerParams], x: Array, y: Array, layer: int, tensor: str
) -> Array:
    """One tensor of :func:`backprop`'s plain gradients."""
    g = backprop(spec, params, x, y)[0][layer]
    out = g.weight if tensor == "weight" else g.bias
    return np.asarray(out)


# --- how far a correct side may land: Monte Carlo arithmetic at the run's precision ------------------

ROUNDING_DRAWS = 4


class _Noise:
    """Rounding at unit roundoff ``unit``, drawn at random (or none, for the exact pass)."""

    def __init__(self, unit: float, rng: np.random.Generator | None) -> None:
        self.unit, self.rng = unit, rng

    def _draw(self, shape: tuple[int, ...]) -> Array:
        assert self.rng is not None
        return self.rng.uniform(-1.0, 1.0, shape)

    def op(self, a: Array) -> Array:
        """One operation's result, rounded."""
        return a if self.rng is None else a * (1.0 + self.unit * self._draw(a.shape))

    def function(self, a: Array) -> Array:
        """A transcendental activation's result (sigmoid, tanh, ...): libraries round these within a
        few ulps, and one implementation tends to the same side throughout a tensor, so the whole
        tensor moves by up to ``4 u`` one way (near saturation, ``1 - a^2`` and ``a (1 - a)`` keep only
        that, summed over every row)."""
        if self.rng is None:
            return a
        return a * (1.0 + 4.0 * self.unit * self.rng.choice((-1.0, 1.0)))

    def product(self, a: Array, b: Array) -> Array:
        """``a @ b``, each element a sum of ``n`` terms, rounded by up to ``n u`` times the sum of
        their sizes: the classic bound, which a plain running sum of like terms does reach (each
        addition rounds the same way); a cancelling sum loses the most against its result."""
        out = a @ b
        if self.rng is None:
            return out
        n = a.shape[-1]
        return out + n * self.unit * (np.abs(a) @ np.abs(b)) * self._draw(out.shape)

    def total(self, a: Array) -> Array:
        """``a`` summed over its rows (the first axis), rounded as :meth:`product` rounds."""
        return self.product(np.ones((1, a.shape[0])), a.reshape(a.shape[0], -1)).reshape(a.shape[1:])


# How torch's losses take dE/df (aten/src/ATen/native/Loss.cpp and friends), for rounding one step the
# way a backend does; ``/ norm`` for the reduction follows. Not used for the oracle's own values.
_EPSILON = 1e-12  # binary_cross_entropy_backward: (f - y) / max((1 - f) f, EPSILON)


def _loss_backward(name: str, f: Array, y: Array) -> Array:
    if name == "mse":
        return 2.0 * (f - y)
    if name == "l1":
        return np.sign(f - y)
    if name == "bce":
        return (f - y) / np.maximum((1.0 - f) * f, _EPSILON)
    if name == "bce_with_logits":
        return _sigmoid(f) - y
    if name == "cross_entropy":  # class-probability targets
        e = np.exp(f - f.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True) * y.sum(axis=-1, keepdims=True) - y
    raise ValueError(f"unknown loss {name!r}")


# Rounding keeps an activation within its range (torch's sigmoid is never above 1).
_RANGE = {"sigmoid": (0.0, 1.0), "tanh": (-1.0, 1.0)}
_TRANSCENDENTAL = ("sigmoid", "tanh", "softplus", "elu")
# torch (and the notebook) take these derivatives from the rounded output: near saturation 1 - a^2
# and a (1 - a) keep only the rounding of a.
_DERIVATIVE_FROM_OUTPUT: dict[str, Callable[[Array], Array]] = {
    "tanh": lambda a: 1.0 - a * a,
    "sigmoid": lambda a: a * (1.0 - a),
}


def _step_value(
    spec: NetworkSpec,
    P: list[LayerParams],
    x: Array,
    y: Array,
    stage: str,
    layer: int,
    tensor: str,
    noise: _Noise,
) -> Array:
    """The disputed tensor of one step (an activation, the loss or a gradient), rounded by ``noise``."""
    zs, outs = [], [x]
    last = layer if stage == "forward" else spec.n_layers - 1
    for p, act in zip(P[: last + 1], spec.activations):
        z = noise.product(outs[-1], p.weight)
        if p.bias is not None:
            z = noise.op(z + p.bias)
        zs.append(z)
        a = noise.function(FORWARD[act](z)) if act in _TRANSCENDENTAL else noise.op(FORWARD[act](z))
        outs.append(np.clip(a, *_RANGE[act]) if act in _RANGE else a)
    if stage == "forward":
        return outs[-1]
    f = outs[-1]
    if stage == "loss":
        terms = noise.op(_loss_terms(spec.loss, f, y))
        return noise.total(terms[:, None])[0] / _loss_norm(spec.loss, spec.reduction, f)
    dE_da = noise.op(_loss_backward(spec.loss, f, y) / _loss_norm(spec.loss, spec.reduction, f))
    for l in reversed(range(layer, spec.n_layers)):  # noqa: E741
        act = spec.activations[l]
        from_output = _DERIVATIVE_FROM_OUTPUT.get(act)
        da_dz = DERIVATIVE[act](zs[l]) if from_output is None else from_output(outs[l + 1])
        dE_dz = noise.op(dE_da * da_dz)
        if l == layer:
            return noise.product(outs[l].T, dE_dz) if tensor == "weight" else noise.total(dE_dz)
        dE_da = noise.product(dE_dz, P[l].weight.T)
    raise ValueError(f"no layer {layer}")


def rounding_spread(
    spec: NetworkSpec,
    params: Sequence[LayerParams],
    x: Array,
    y: Array,
    stage: str,
    layer: int,
    tensor: str,
    unit: float,
    draws: int = ROUNDING_DRAWS,
) -> Array:
    """How far a correct side computing at unit roundoff ``unit`` may land from the exact value of
    the disputed tensor (``stage`` forward, loss or gradient): the largest change over ``draws``
    randomly rounded recomputations (see the module docstring); fixed draws, so the same case
    always gets the same answer."""
    P = as_float64(params)
    x, y = np.asarray(x, F64), np.asarray(y, F64)
    with np.errstate(all="ignore"):
        exact = _step_value(spec, P, x, y, stage, layer, tensor, _Noise(unit, None))
        rng = np.random.default_rng(0)
        spread = np.zeros_like(exact)
        for _ in range(draws):
            rounded = _step_value(spec, P, x, y, stage, layer, tensor, _Noise(unit, rng))
            spread = np.fmax(spread, np.abs(rounded - exact))
    return spread


# --- the SGD update, as torch.optim.SGD documents it, and its common variants ----------------------


class Rule(NamedTuple):
    """One way to apply SGD. ``DOCUMENTED`` is torch's; the others are mistakes seen in the wild.

    torch (``maximize=False``), for parameter ``p`` with gradient ``g`` at step ``t``::

        g = g + weight_decay * p                       (decay="before")
        buf = g                                        if t == 1        (first="plain")
        buf = momentum * buf + (1 - dampening) * g     if t > 1         (dampen=True)
        d = g + momentum * buf  if nesterov  else  buf
        p = p - lr * d
    """

    decay: str = "before"  # "before" momentum, "after" it, or "none"
    first: str = "plain"  # first buffer: "plain" (buf = g) or "damped" (buf = (1 - dampening) g)
    dampen: bool = True  # apply dampening from the second step on
    momentum: bool = True  # keep a momentum buffer at all
    nesterov: bool | None = None  # None: as the optimizer says
    sign: float = 1.0  # -1: gradient ascent


DOCUMENTED = Rule()


def _nesterov(opt: SGD, rule: Rule) -> bool:
    return opt.nesterov if rule.nesterov is None else rule.nesterov


def sgd_direction(opt: SGD, rule: Rule, p: Array, g: Array, buf: Array | None) -> tuple[Array, Array | None]:
    """The step direction ``d`` (``p' = p - lr d``) and the new buffer; ``buf=None`` on the first step."""
    if rule.decay == "before" and opt.weight_decay:
        g = g + opt.weight_decay * p
    new_buf = None
    d = g
    if opt.momentum and rule.momentum:
        if buf is None:
            new_buf = g.copy() if rule.first == "plain" else (1.0 - opt.dampening) * g
        else:
            new_buf = opt.momentum * buf + ((1.0 - opt.dampening) if rule.dampen else 1.0) * g
        d = g + opt.momentum * new_buf if _nesterov(opt, rule) else new_buf
    if rule.decay == "after" and opt.weight_decay:
        d = d + opt.weight_decay * p
    return rule.sign * d, new_buf


def buffer_from_step(opt: SGD, rule: Rule, p_before: Array, p_after: Array, g: Array) -> Array | None:
    """The momentum buffer a step left behind, read back from its displacement (inverse of the above).

    ``None`` when the rule keeps no buffer; ``ValueError`` when ``lr == 0`` (a step that never moves
    says nothing about the buffer).
    """
    if not (opt.momentum and rule.momentum):
        return None
    if opt.lr == 0:
        raise ValueError("lr is 0, so the momentum buffer cannot be read back from the update")
    p_before, p_after, g = (np.asarray(a, F64) for a in (p_before, p_after, g))
    d = rule.sign * (p_before - p_after) / opt.lr
    if rule.decay == "after" and opt.weight_decay:
        d = d - opt.weight_decay * p_before
    if not _nesterov(opt, rule):
        return d
    if rule.decay == "before" and opt.weight_decay:
        g = g + opt.weight_decay * p_before
    return (d - g) / opt.momentum


def sgd_step(opt: SGD, rule: Rule, p: Array, g: Array, buf: Array | None) -> Array:
    """``p - lr d``, in float64."""
    p, g = np.asarray(p, F64), np.asarray(g, F64)
    d, _ = sgd_direction(opt, rule, p, g, buf)
    return p - opt.lr * d


def update(
    opt: SGD,
    p: Array,
    g: Array,
    buf: Array | None,
    *,
    dtype_eps: float = EPS,
    previous: tuple[Array, Array] | None = None,
) -> Estimate:
    """The documented update of one tensor. The bound is ``4 eps (|p| + lr |d|)``, plus, when the
    buffer was read back from ``previous = (p_before, p_after)``, ``4 momentum eps_dtype (|p_before| +
    |p_after|)`` for the rounding of that step's displacement."""
    value = sgd_step(opt, DOCUMENTED, p, g, buf)
    d, _ = sgd_direction(opt, DOCUMENTED, np.asarray(p, F64), np.asarray(g, F64), buf)
    err = 4 * EPS * (np.abs(p) + opt.lr * np.abs(d))
    if previous is not None:
        err = err + 4 * max(opt.momentum, 1.0) * dtype_eps * (np.abs(previous[0]) + np.abs(previous[1]))
    return _full(value, err)
