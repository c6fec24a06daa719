"""Planted backprop bugs shared by the test modules: each a small backend, passed as ``candidate=``.

Bugs in the math itself (a dropped activation derivative, a missing factor in the loss
gradient) subclass :class:`NumpyBackend` and swap one of its rules. Bugs in what a
step hands back or in the update use :class:`Planted`, a wrapper that takes the
gradients from a correct ``NumpyBackend`` at its own current parameters, lets a
subclass corrupt them, and then applies the update *with the corrupted gradients*,
so the planted bug behaves as it would in a real hand-written implementation.

The tests import this module by name, with ``tests/`` on the Python path (pytest puts it there).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from nnparity import SGD, LayerParams, NetworkSpec, StepResult, init_params
from nnparity.activations import Activation, d_identity
from nnparity.initialization import check_params
from nnparity.losses import Loss, d_mse
from nnparity.numpy_backend import NumpyBackend
from nnparity.optim import SGDState, sgd_init, sgd_update
from nnparity.records import copy_params

ROWS = 6

# Three weight layers with biases: gradients are compared as layer 2 weight, layer 2 bias,
# layer 1 weight, ..., so a bug's position in that order is unambiguous.
DEEP = NetworkSpec((3, 5, 4, 2), ("sigmoid", "tanh", "identity"), bias=True, loss="mse")
# A square middle layer, so that a transposed weight gradient still has the right shape.
SQUARE = NetworkSpec((3, 3, 3, 2), ("tanh", "tanh", "identity"), loss="mse")
DAMPENED = dataclasses.replace(DEEP, optimizer=SGD(0.05, momentum=0.9, dampening=0.5))


def make_data(spec: NetworkSpec, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """``ROWS`` rows of inputs and targets for ``spec``."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(ROWS, spec.sizes[0]))
    y = rng.normal(scale=0.5, size=(ROWS, spec.sizes[-1]))
    return x, y


def make_params(spec: NetworkSpec) -> list[LayerParams]:
    return init_params(spec, seed=11, scheme="torch")


def flat(layers: Sequence[LayerParams]) -> list[np.ndarray]:
    """Tensors in torch's parameter order: each layer's weight, then its bias."""
    return [t for p in layers for t in (p.weight, p.bias) if t is not None]


def unflat(tensors: Sequence[np.ndarray], bias: bool) -> list[LayerParams]:
    it = iter(tensors)
    return [LayerParams(w, next(it) if bias else None) for w in it]


# --- bugs in the backprop math ------------------------------------------------------------------------


class DroppedActivationDerivative(NumpyBackend):
    """Layer 0's activation is treated as the identity on the way back (forward is right)."""

    def __init__(self, spec: NetworkSpec, params: Sequence[LayerParams]) -> None:
        super().__init__(spec, params)
        act = self._acts[0]
        self._acts[0] = Activation(act.name, act.forward, d_identity)


def _d_mse_without_the_2(a: np.ndarray, y: np.ndarray, reduction: str) -> np.ndarray:
    return d_mse(a, y, reduction) / 2.0


class MissingFactorTwo(NumpyBackend):
    """dE/df = (f - y) / N instead of 2 (f - y) / N: the tutorial's mistake."""

    def __init__(self, spec: NetworkSpec, params: Sequence[LayerParams]) -> None:
        super().__init__(spec, params)
        self._loss = Loss(self._loss.name, self._loss.value, _d_mse_without_the_2)


# --- bugs in what a step returns, or in the update ---------------------------------------------------


class Planted:
    """A backend whose gradients and update a subclass may corrupt; correct as it stands."""

    def __init__(self, spec: NetworkSpec, params: Sequence[LayerParams]) -> None:
        self.spec = spec
        self._inner = NumpyBackend(spec, params)
        self._params = check_params(spec, params)
        self._state = sgd_init(len(flat(self._params)))
        self.t = 0

    def set_params(self, params: Sequence[LayerParams]) -> None:
        self._params = check_params(self.spec, params)

    def predict(self, x: np.ndarray) -> np.ndarray:
        self._inner.set_params(self._params)
        return self._inner.predict(x)

    def gradients(self, grads: list[LayerParams]) -> list[LayerParams]:
        """The gradients the update uses and the step reports."""
        return grads

    def update(
        self, tensors: list[np.ndarray], grads: list[np.ndarray], state: SGDState
    ) -> tuple[list[np.ndarray], SGDState]:
        return sgd_update(self.spec.optimizer, tensors, grads, state)

    def step(self, x: np.ndarray, y: np.ndarray) -> StepResult:
        self._inner.set_params(self._params)
        right = self._inner.step(x, y)  # its own update is discarded
        grads = self.gradients([LayerParams(g.weight.copy(), g.bias) for g in right.grads])
        new, self._state = self.update(flat(self._params), flat(grads), self._state)
        self._params = unflat(new, self.spec.bias)
        self.t += 1
        return StepResult(right.loss, grads, copy_params(self._params), right.activations)


class TransposedGradient(Planted):
    """Layer 1's weight gradient comes out transposed (``dE_dz.T @ a_prev``)."""

    def gradients(self, grads: list[LayerParams]) -> list[LayerParams]:
        grads[1] = grads[1]._replace(weight=grads[1].weight.T.copy())
        return grads


class WrongSignUpdate(Planted):
    """``p + lr * g``: gradient ascent."""

    def update(
        self, tensors: list[np.ndarray], grads: list[np.ndarray], state: SGDState
    ) -> tuple[list[np.ndarray], SGDState]:
        return sgd_update(self.spec.optimizer, tensors, [-g for g in grads], state)


class AveragedBiasGradient(Planted):
    """One layer's bias gradient is the mean over the rows instead of the sum."""

    layer: ClassVar[int] = 0

    def gradients(self, grads: list[LayerParams]) -> list[LayerParams]:
        g = grads[self.layer]
        assert g.bias is not None
        grads[self.layer] = g._replace(bias=g.bias / ROWS)
        return grads


class AveragedBiasGradientLast(AveragedBiasGradient):
    layer: ClassVar[int] = 2


class Float32RoundTrip(Planted):
    """One layer's weight gradient passes through float32 inside a float64 run."""

    layer: ClassVar[int] = 1

    def gradients(self, grads: list[LayerParams]) -> list[LayerParams]:
        g = grads[self.layer]
        grads[self.layer] = g._replace(weight=g.weight.astype(np.float32).astype(np.float64))
        return grads


class Float32RoundTripFirst(Float32RoundTrip):
    layer: ClassVar[int] = 0


class IgnoresDampening(Planted):
    """Momentum without dampening: identical at step 0 (the buffer is the gradient), wrong after."""

    def update(
        self, tensors: list[np.ndarray], grads: list[np.ndarray], state: SGDState
    ) -> tuple[list[np.ndarray], SGDState]:
        opt = dataclasses.replace(self.spec.optimizer, dampening=0.0)
        return sgd_update(opt, tensors, grads, state)


class NaNLoss(NumpyBackend):
    """Reports a NaN loss (everything else right)."""

    def step(self, x: np.ndarray, y: np.ndarray) -> StepResult:
        return super().step(x, y)._replace(loss=float("nan"))
