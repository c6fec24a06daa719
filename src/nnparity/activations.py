"""Activation functions: each forward rule with its derivative beside it.

The functions compute as torch does, overflowing to inf where it does (``exp`` of a
large argument), so they are meant to run under ``np.errstate(all="ignore")``, as
the NumPy backend runs them. Every function takes the pre-activation ``z`` (and, for the derivative, the
activation ``a = f(z)`` as well, so that a rule can reuse it as the notebook's
``dg_dyhat = g * (1.0 - g)`` does).  The constants are torch's defaults:
``LeakyReLU(0.01)``, ``Softplus(beta=1, threshold=20)``, ``ELU(alpha=1)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

Array = np.ndarray

LEAKY_RELU_SLOPE = 0.01
SOFTPLUS_THRESHOLD = 20.0
ELU_ALPHA = 1.0


class Activation(NamedTuple):
    """``forward(z) -> a`` and ``derivative(z, a) -> da/dz``, element by element."""

    name: str
    forward: Callable[[Array], Array]
    derivative: Callable[[Array, Array], Array]


def identity(z: Array) -> Array:
    return z


def d_identity(z: Array, a: Array) -> Array:
    return np.ones_like(z)


def sigmoid(z: Array) -> Array:
    # 1 / (1 + exp(-z)): exp(-z) overflows to inf for very negative z, and 1 / inf is the right 0.
    # np.reciprocal(t) rounds exactly as 1.0 / t and skips converting the Python scalar (0.13 us).
    return np.reciprocal(1.0 + np.exp(-z))


def d_sigmoid(z: Array, a: Array) -> Array:
    return a * (1.0 - a)


def tanh(z: Array) -> Array:
    return np.tanh(z)


def d_tanh(z: Array, a: Array) -> Array:
    return 1.0 - a * a


def relu(z: Array) -> Array:
    return np.maximum(z, 0.0)


def d_relu(z: Array, a: Array) -> Array:
    # torch's threshold_backward: the gradient passes where the output is > 0.
    return (a > 0.0).astype(z.dtype)


def leaky_relu(z: Array) -> Array:
    return np.where(z > 0.0, z, z * LEAKY_RELU_SLOPE)


def d_leaky_relu(z: Array, a: Array) -> Array:
    return np.where(z > 0.0, 1.0, LEAKY_RELU_SLOPE).astype(z.dtype)


def softplus(z: Array) -> Array:
    # log(1 + e^z), and z itself above the threshold, where torch switches to linear.
    return np.where(z > SOFTPLUS_THRESHOLD, z, np.log1p(np.exp(z)))


def d_softplus(z: Array, a: Array) -> Array:
    e = np.exp(z)  # inf / inf above the threshold is NaN, and not used
    return np.where(z > SOFTPLUS_THRESHOLD, 1.0, e / (e + 1.0)).astype(z.dtype)


def elu(z: Array) -> Array:
    return np.where(z > 0.0, z, ELU_ALPHA * np.expm1(z))


def d_elu(z: Array, a: Array) -> Array:
    return np.where(z > 0.0, 1.0, ELU_ALPHA * np.exp(z)).astype(z.dtype)


ACTIVATIONS: dict[str, Activation] = {
    act.name: act
    for act in (
        Activation("identity", identity, d_identity),
        Activation("sigmoid", sigmoid, d_sigmoid),
        Activation("tanh", tanh, d_tanh),
        Activation("relu", relu, d_relu),
        Activation("leaky_relu", leaky_relu, d_leaky_relu),
        Activation("softplus", softplus, d_softplus),
        Activation("elu", elu, d_elu),
    )
}
