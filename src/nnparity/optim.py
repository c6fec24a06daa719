"""Stochastic gradient descent, as ``torch.optim.SGD`` documents it.

For each parameter ``p`` with gradient ``g`` at step ``t`` (``maximize=False``)::

    g = g + weight_decay * p                        if weight_decay != 0
    b = g                                           if momentum != 0 and t == 1
    b = momentum * b + (1 - dampening) * g          if momentum != 0 and t > 1
    g = g + momentum * b   (nesterov)   or   g = b  if momentum != 0
    p = p - lr * g

The arithmetic below follows ``torch.optim.sgd._single_tensor_sgd`` operation by
operation, so that a correct NumPy backend rounds exactly where torch does.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from nnparity.errors import NnparityError


@dataclass(frozen=True)
class SGD:
    """The arguments of ``torch.optim.SGD``, validated as torch validates them."""

    lr: float
    momentum: float = 0.0
    dampening: float = 0.0
    weight_decay: float = 0.0
    nesterov: bool = False

    def __post_init__(self) -> None:
        for name in ("lr", "momentum", "dampening", "weight_decay"):
            value = getattr(self, name)
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
                raise NnparityError(f"SGD {name} must be a number, not {value!r}.")
            if not math.isfinite(value):
                raise NnparityError(f"SGD {name} must be finite, not {value!r}.")
            object.__setattr__(self, name, float(value))
        if isinstance(self.nesterov, np.bool_):
            object.__setattr__(self, "nesterov", bool(self.nesterov))
        if not isinstance(self.nesterov, bool):
            raise NnparityError(f"SGD nesterov must be true or false, not {self.nesterov!r}.")
        if self.lr < 0.0:
            raise NnparityError(f"Invalid learning rate: {self.lr} (SGD lr must be >= 0).")
        if self.momentum < 0.0:
            raise NnparityError(f"Invalid momentum value: {self.momentum} (must be >= 0).")
        if self.weight_decay < 0.0:
            raise NnparityError(f"Invalid weight_decay value: {self.weight_decay} (must be >= 0).")
        if self.nesterov and (self.momentum <= 0.0 or self.dampening != 0.0):
            raise NnparityError(
                "Nesterov momentum requires a momentum > 0 and zero dampening; "
                f"got momentum={self.momentum}, dampening={self.dampening}."
            )


class SGDState(NamedTuple):
    """Momentum buffers, one per parameter tensor (``None`` before the first step)."""

    buffers: tuple[np.ndarray | None, ...]


def sgd_init(n_tensors: int) -> SGDState:
    return SGDState(buffers=(None,) * n_tensors)


def sgd_update(
    opt: SGD, params: list[np.ndarray], grads: list[np.ndarray], state: SGDState
) -> tuple[list[np.ndarray], SGDState]:
    """One step of SGD: new parameter arrays and the new state; inputs are not changed."""
    if len(state.buffers) != len(params):
        raise ValueError(f"{len(params)} parameter tensors, but an optimizer state for {len(state.buffers)}")
    directions = grads  # plain SGD steps along the gradients and keeps no state
    if opt.weight_decay != 0.0 or opt.momentum != 0.0:
        directions, buffers = [], []
        for p, g, buf in zip(params, grads, state.buffers, strict=True):
            if opt.weight_decay != 0.0:
                g = g + opt.weight_decay * p
            if opt.momentum != 0.0:
                if buf is None:
                    buf = g.copy(order="K")  # in g's memory order (a weight's, see numpy_backend)
                else:
                    buf = buf * opt.momentum + (1.0 - opt.dampening) * g
                g = g + opt.momentum * buf if opt.nesterov else buf
            directions.append(g)
            buffers.append(buf)
        state = SGDState(buffers=tuple(buffers))
    return [p + (-opt.lr) * g for p, g in zip(params, directions, strict=True)], state
