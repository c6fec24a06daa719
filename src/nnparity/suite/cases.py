"""The suite's networks: one small network per option, each with its batch and starting weights.

Every case trains a few steps in ``resync`` mode (each step from the reference's weights, so
each step tests one step's math); :data:`FREE_RUNS` train longer on their own weights.
Batches and weights come from NumPy's seeded generator alone, so building a case needs no torch.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from nnparity.activations import ACTIVATIONS
from nnparity.optim import SGD
from nnparity.records import LayerParams
from nnparity.spec import NetworkSpec

ROWS = 5
STEPS = 3  # momentum buffers need two steps to matter; a third catches a bug that waits a step
FREE_STEPS = 40

_BASE = NetworkSpec((3, 4, 2), ("tanh", "identity"), bias=True, loss="mse", optimizer=SGD(0.1))
_OUTPUT = {"mse": "identity", "l1": "identity", "bce": "sigmoid", "bce_with_logits": "identity"}
_MOMENTUM = SGD(0.1, momentum=0.9)


def _with(**changes: object) -> NetworkSpec:
    return dataclasses.replace(_BASE, **changes)  # type: ignore[arg-type]


CASES: dict[str, NetworkSpec] = {
    **{f"activation-{name}": _with(activations=(name, name)) for name in ACTIVATIONS},
    **{f"loss-{loss}": _with(loss=loss, activations=("tanh", act)) for loss, act in _OUTPUT.items()},
    "loss-cross_entropy": _with(sizes=(3, 4, 3), loss="cross_entropy"),
    "reduction-sum": _with(reduction="sum", optimizer=SGD(0.02)),
    "no-bias": _with(bias=False),
    "float32": _with(dtype="float32"),
    "deep": _with(sizes=(3, 5, 4, 3, 2), activations=("sigmoid", "tanh", "relu", "identity")),
    "sgd-momentum": _with(optimizer=_MOMENTUM),
    "sgd-dampening": _with(optimizer=SGD(0.1, momentum=0.9, dampening=0.3)),
    "sgd-nesterov": _with(optimizer=SGD(0.1, momentum=0.9, nesterov=True)),
    "sgd-weight_decay": _with(optimizer=SGD(0.1, weight_decay=0.01)),
    "sgd-everything": _with(optimizer=SGD(0.1, momentum=0.8, dampening=0.2, weight_decay=0.01)),
}
# The notebook's network, and a momentum one, over more steps on their own weights.
FREE_RUNS: dict[str, NetworkSpec] = {
    "free-notebook": NetworkSpec((2, 3, 1), ("sigmoid", "sigmoid"), optimizer=SGD(0.05)),
    "free-momentum": _with(optimizer=_MOMENTUM),
}


def batch(spec: NetworkSpec, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``ROWS`` inputs from a normal distribution and targets the spec's loss accepts."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(ROWS, spec.sizes[0]))
    out = spec.sizes[-1]
    if spec.loss == "cross_entropy":
        y = np.eye(out)[rng.integers(0, out, size=ROWS)]
    elif spec.loss in ("bce", "bce_with_logits"):
        y = rng.uniform(size=(ROWS, out))
    else:
        y = rng.normal(scale=0.5, size=(ROWS, out))
    return x.astype(spec.dtype), y.astype(spec.dtype)


def start(spec: NetworkSpec, seed: int = 0) -> list[LayerParams]:
    """Weights (and biases) uniform on (-1/sqrt(fan_in), 1/sqrt(fan_in)), as ``nn.Linear`` draws them."""
    rng = np.random.default_rng(seed + 1)
    params = []
    for fan_in, fan_out in zip(spec.sizes[:-1], spec.sizes[1:]):
        bound = 1.0 / np.sqrt(fan_in)
        weight = rng.uniform(-bound, bound, size=(fan_in, fan_out)).astype(spec.dtype)
        bias = rng.uniform(-bound, bound, size=fan_out).astype(spec.dtype) if spec.bias else None
        params.append(LayerParams(weight, bias))
    return params
