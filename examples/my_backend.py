"""A user's own NumPy backend, written against nnparity's contract and nothing else.

It supports what a first hand-written network usually does: sigmoid, tanh, ReLU and identity
layers, with or without biases, the mean squared error, and SGD with plain momentum, in
float64 or float32. Anything else makes the constructor raise ``NotImplementedError``, which
the packaged suite reports as a skip; ``nnparity_supports`` narrows its hypothesis search to
the same set. Check it three ways (see the README):

    nnparity verify --candidate my_backend:MyBackend --config notebook.toml --steps 200
    pytest test_my_backend.py                       # assert_parity in your own tests
    pytest --pyargs nnparity.suite --nnparity-backend my_backend:MyBackend

Break one line of ``step`` (say, drop ``* (1.0 - a)`` from the sigmoid derivative) and each
of them names the step, stage, layer and tensor that went wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from nnparity import LayerParams, NetworkSpec, StepResult


def forward_rule(name: str, z: np.ndarray) -> np.ndarray:
    if name == "sigmoid":
        return 1.0 / (1.0 + np.exp(-z))
    if name == "tanh":
        return np.tanh(z)
    if name == "relu":
        return np.maximum(z, 0.0)
    return z  # identity


def derivative(name: str, a: np.ndarray) -> np.ndarray:
    """da/dz, from the activation a = f(z) itself."""
    if name == "sigmoid":
        return a * (1.0 - a)
    if name == "tanh":
        return 1.0 - a * a
    if name == "relu":
        return (a > 0.0).astype(a.dtype)
    return np.ones_like(a)  # identity


class MyBackend:
    """Manual backprop for a fully connected network, trained with SGD (+ momentum)."""

    nnparity_supports: ClassVar[dict[str, Any]] = {
        "activations": ["identity", "sigmoid", "tanh", "relu"],
        "losses": ["mse"],
        "reductions": ["mean"],
        "allow_dampening": False,
        "allow_nesterov": False,
        "allow_weight_decay": False,
    }

    def __init__(self, spec: NetworkSpec, params: Sequence[LayerParams]) -> None:
        opt = spec.optimizer
        unsupported = [a for a in spec.activations if a not in self.nnparity_supports["activations"]]
        if unsupported:
            raise NotImplementedError(f"activation {unsupported[0]}")
        if spec.loss != "mse" or spec.reduction != "mean":
            raise NotImplementedError(f"loss {spec.loss} ({spec.reduction})")
        if opt.dampening or opt.nesterov or opt.weight_decay:
            raise NotImplementedError("SGD with dampening, Nesterov or weight decay")
        self.spec = spec
        self.velocity: list[np.ndarray | None] = [None] * (2 * len(params))
        self.set_params(params)

    def set_params(self, params: Sequence[LayerParams]) -> None:
        dtype = self.spec.dtype
        self.weights = [np.array(p.weight, dtype=dtype) for p in params]
        self.biases = [None if p.bias is None else np.array(p.bias, dtype=dtype) for p in params]

    def _forward(self, x: np.ndarray) -> list[np.ndarray]:
        outs = [x]
        for W, b, name in zip(self.weights, self.biases, self.spec.activations):
            z = outs[-1] @ W if b is None else outs[-1] @ W + b
            outs.append(forward_rule(name, z))
        return outs

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self._forward(np.asarray(x, dtype=self.spec.dtype))[-1]

    def step(self, x: np.ndarray, y: np.ndarray) -> StepResult:
        x = np.asarray(x, dtype=self.spec.dtype)
        y = np.asarray(y, dtype=self.spec.dtype)
        outs = self._forward(x)
        f = outs[-1]
        loss = float(np.mean((f - y) ** 2))

        # Backward, last layer first: dE/df of the mean squared error, then the chain rule.
        dE_da = (f - y) * (2.0 / f.size)
        grads: list[LayerParams] = []
        for i in reversed(range(len(self.weights))):
            a = outs[i + 1]
            dE_dz = dE_da * derivative(self.spec.activations[i], a)
            dE_dW = outs[i].T @ dE_dz
            dE_db = None if self.biases[i] is None else dE_dz.sum(axis=0)
            grads.insert(0, LayerParams(dE_dW, dE_db))
            dE_da = dE_dz @ self.weights[i].T

        # SGD as torch.optim.SGD does it: v = g on the first step, then v = momentum * v + g.
        lr, momentum = self.spec.optimizer.lr, self.spec.optimizer.momentum
        for i, g in enumerate(grads):
            self.weights[i] = self._sgd(2 * i, self.weights[i], g.weight, lr, momentum)
            bias = self.biases[i]
            if bias is not None and g.bias is not None:
                self.biases[i] = self._sgd(2 * i + 1, bias, g.bias, lr, momentum)
        return StepResult(
            loss=loss,
            grads=grads,
            params=[
                LayerParams(W.copy(), None if b is None else b.copy())
                for W, b in zip(self.weights, self.biases)
            ],
            activations=outs[1:],
        )

    def _sgd(self, slot: int, p: np.ndarray, g: np.ndarray, lr: float, momentum: float) -> np.ndarray:
        if momentum:
            v = self.velocity[slot]
            v = g.copy() if v is None else momentum * v + g
            self.velocity[slot] = v
            g = v
        return p - lr * g
