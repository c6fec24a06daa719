"""Hand-written backends for ``nnparity check`` to test against: one correct, the rest each
with one planted bug of the kind hand-written backprop has.

``Correct`` is written from scratch the way a user would write one, on the rules of
:mod:`nnparity.activations` and :mod:`nnparity.losses`; every buggy subclass overrides
one small method. The tests import this module by name (``buggy_backends:SignFlip``),
with ``tests/`` on the Python path.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from nnparity import LayerParams, NetworkSpec, StepResult
from nnparity.activations import ACTIVATIONS
from nnparity.losses import LOSSES


class Correct:
    """Manual backprop and torch's SGD, operation by operation."""

    def __init__(self, spec: NetworkSpec, params: Sequence[LayerParams]) -> None:
        self.spec = spec
        self.buffers: dict[tuple[int, str], np.ndarray] = {}
        self.set_params(params)

    def set_params(self, params: Sequence[LayerParams]) -> None:
        dtype = self.spec.np_dtype
        self.weights = [np.array(p.weight, dtype=dtype) for p in params]
        self.biases = [None if p.bias is None else np.array(p.bias, dtype=dtype) for p in params]

    def forward(self, x: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        zs, outs = [], [x]
        for W, b, name in zip(self.weights, self.biases, self.spec.activations):
            z = outs[-1] @ W if b is None else outs[-1] @ W + b
            zs.append(z)
            outs.append(ACTIVATIONS[name].forward(z))
        return zs, outs

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.forward(np.asarray(x, dtype=self.spec.np_dtype))[1][-1]

    # The pieces the planted bugs replace.
    def activation_derivative(self, name: str, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        return ACTIVATIONS[name].derivative(z, a)

    def loss_gradient(self, f: np.ndarray, y: np.ndarray) -> np.ndarray:
        return LOSSES[self.spec.loss].gradient(f, y, self.spec.reduction)

    def bias_gradient(self, dE_dz: np.ndarray) -> np.ndarray:
        return dE_dz.sum(axis=0)

    def first_buffer(self, g: np.ndarray) -> np.ndarray:
        return g.copy()

    def direction(self, g: np.ndarray, buf: np.ndarray) -> np.ndarray:
        return g + self.spec.optimizer.momentum * buf if self.spec.optimizer.nesterov else buf

    def decayed(self, g: np.ndarray, p: np.ndarray) -> np.ndarray:
        wd = self.spec.optimizer.weight_decay
        return g + wd * p if wd != 0.0 else g

    def updated(self, p: np.ndarray, g: np.ndarray) -> np.ndarray:
        return p + (-self.spec.optimizer.lr) * g

    def sgd(self, key: tuple[int, str], p: np.ndarray, g: np.ndarray) -> np.ndarray:
        opt = self.spec.optimizer
        g = self.decayed(g, p)
        if opt.momentum != 0.0:
            buf = self.buffers.get(key)
            buf = self.first_buffer(g) if buf is None else buf * opt.momentum + (1.0 - opt.dampening) * g
            self.buffers[key] = buf
            g = self.direction(g, buf)
        return self.updated(p, g)

    def step(self, x: np.ndarray, y: np.ndarray) -> StepResult:
        dtype = self.spec.np_dtype
        x, y = np.asarray(x, dtype=dtype), np.asarray(y, dtype=dtype)
        zs, outs = self.forward(x)
        loss = LOSSES[self.spec.loss].value(outs[-1], y, self.spec.reduction)
        grads: list[LayerParams] = []
        dE_da = self.loss_gradient(outs[-1], y)
        for i in reversed(range(len(self.weights))):
            dE_dz = dE_da * self.activation_derivative(self.spec.activations[i], zs[i], outs[i + 1])
            dE_db = None if self.biases[i] is None else self.bias_gradient(dE_dz)
            grads.insert(0, LayerParams(outs[i].T @ dE_dz, dE_db))
            dE_da = dE_dz @ self.weights[i].T
        for i, g in enumerate(grads):
            self.weights[i] = self.sgd((i, "weight"), self.weights[i], g.weight)
            bias = self.biases[i]
            if bias is not None and g.bias is not None:
                self.biases[i] = self.sgd((i, "bias"), bias, g.bias)
        return StepResult(
            loss=loss,
            grads=grads,
            params=[LayerParams(W, b) for W, b in zip(self.weights, self.biases)],
            activations=outs[1:],
        )


class SignFlip(Correct):
    """Climbs the gradient: ``p + lr * g``."""

    def updated(self, p: np.ndarray, g: np.ndarray) -> np.ndarray:
        return p + self.spec.optimizer.lr * g


class TanhFromInput(Correct):
    """tanh's derivative taken of the pre-activation, ``1 - z**2``, not ``1 - a**2``."""

    def activation_derivative(self, name: str, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        return 1.0 - z * z if name == "tanh" else super().activation_derivative(name, z, a)


class LeakyAsRelu(Correct):
    """leaky_relu's derivative is 0, not the slope, for negative inputs."""

    def activation_derivative(self, name: str, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        if name == "leaky_relu":
            return (z > 0.0).astype(z.dtype)
        return super().activation_derivative(name, z, a)


class MeanOverRows(Correct):
    """An element-wise loss's mean gradient divided by the rows, not rows x outputs."""

    def loss_gradient(self, f: np.ndarray, y: np.ndarray) -> np.ndarray:
        grad = super().loss_gradient(f, y)
        if self.spec.reduction == "mean" and self.spec.loss != "cross_entropy":
            grad = grad * (f.size / f.shape[0])
        return grad


class BiasMean(Correct):
    """The bias gradient averaged over the rows instead of summed."""

    def bias_gradient(self, dE_dz: np.ndarray) -> np.ndarray:
        return dE_dz.mean(axis=0)


class DampenedFirstStep(Correct):
    """Dampening applied on the first step too (torch starts the buffer at the gradient)."""

    def first_buffer(self, g: np.ndarray) -> np.ndarray:
        return (1.0 - self.spec.optimizer.dampening) * g


class NesterovIgnored(Correct):
    """Nesterov momentum treated as plain momentum."""

    def direction(self, g: np.ndarray, buf: np.ndarray) -> np.ndarray:
        return buf


class NoWeightDecay(Correct):
    """Weight decay forgotten."""

    def decayed(self, g: np.ndarray, p: np.ndarray) -> np.ndarray:
        return g


class Float32Inside(Correct):
    """The forward pass uses the weights rounded to float32, even in a float64 network."""

    def forward(self, x: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        weights = self.weights
        self.weights = [W.astype(np.float32).astype(W.dtype) for W in weights]
        try:
            return super().forward(x)
        finally:
            self.weights = weights


class NoBiasSupport(Correct):
    """Correct, but refuses networks with biases (narrow the search with ``--bias off``)."""

    def __init__(self, spec: NetworkSpec, params: Sequence[LayerParams]) -> None:
        if spec.bias:
            raise NotImplementedError("biases are not supported")
        super().__init__(spec, params)
