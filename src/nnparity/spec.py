"""What network to train, and how: the record both backends are built from."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from nnparity.activations import ACTIVATIONS
from nnparity.errors import NnparityError
from nnparity.losses import LOSSES, REDUCTIONS
from nnparity.optim import SGD

DTYPES = ("float32", "float64")
# Losses that read the network's output as probabilities need an output activation
# that keeps it in [0, 1].
PROBABILITY_LOSSES = {"bce": ("sigmoid",)}


def _choices(options: Sequence[str]) -> str:
    return ", ".join(options)


@dataclass(frozen=True)
class NetworkSpec:
    """A fully connected network and its training setup.

    ``sizes`` are the layer widths including input and output, e.g. ``(2, 3, 1)``;
    ``activations`` has one name per weight layer (``len(sizes) - 1``).
    """

    sizes: tuple[int, ...]
    activations: tuple[str, ...]
    bias: bool = False
    loss: str = "mse"
    reduction: str = "mean"
    optimizer: SGD = field(default_factory=lambda: SGD(0.05))
    dtype: str = "float64"

    def __post_init__(self) -> None:
        sizes = _as_tuple(self.sizes, "sizes")
        activations = _as_tuple(self.activations, "activations")
        if len(sizes) < 2:
            raise NnparityError(
                f"sizes needs at least an input and an output width, e.g. (2, 3, 1); got {sizes!r}."
            )
        for width in sizes:
            if isinstance(width, bool) or not isinstance(width, (int, np.integer)) or width < 1:
                raise NnparityError(f"Every layer width must be a whole number >= 1; got {sizes!r}.")
        object.__setattr__(self, "sizes", tuple(int(w) for w in sizes))
        if len(activations) != len(sizes) - 1:
            n = len(sizes) - 1
            need = (
                f"{n} weight layers need {n} activations" if n != 1 else "1 weight layer needs 1 activation"
            )
            raise NnparityError(f"{need}; got {len(activations)}: {activations!r}.")
        for act in activations:
            if not isinstance(act, str) or act not in ACTIVATIONS:
                raise NnparityError(f"Unknown activation {act!r}; choose from {_choices(list(ACTIVATIONS))}.")
        object.__setattr__(self, "activations", activations)
        if not isinstance(self.bias, bool):
            raise NnparityError(f"bias must be true or false, not {self.bias!r}.")
        if not isinstance(self.loss, str) or self.loss not in LOSSES:
            raise NnparityError(f"Unknown loss {self.loss!r}; choose from {_choices(list(LOSSES))}.")
        if not isinstance(self.reduction, str) or self.reduction not in REDUCTIONS:
            raise NnparityError(f"Unknown reduction {self.reduction!r}; choose from {_choices(REDUCTIONS)}.")
        if not isinstance(self.dtype, str) or self.dtype not in DTYPES:
            raise NnparityError(f"Unknown dtype {self.dtype!r}; choose from {_choices(DTYPES)}.")
        if not isinstance(self.optimizer, SGD):
            raise NnparityError(f"optimizer must be an nnparity.SGD, not {self.optimizer!r}.")
        needed = PROBABILITY_LOSSES.get(self.loss)
        if needed and activations[-1] not in needed:
            raise NnparityError(
                f"Loss {self.loss!r} takes probabilities, so the output activation must be "
                f"{' or '.join(needed)}, not {activations[-1]!r}; or use 'bce_with_logits' on logits."
            )

    @property
    def n_layers(self) -> int:
        """The number of weight layers."""
        return len(self.sizes) - 1

    @property
    def np_dtype(self) -> np.dtype:
        return np.dtype(self.dtype)

    @property
    def n_params(self) -> int:
        return sum(
            fan_in * fan_out + (fan_out if self.bias else 0)
            for fan_in, fan_out in zip(self.sizes[:-1], self.sizes[1:])
        )

    def to_dict(self) -> dict[str, object]:
        opt = self.optimizer
        return {
            "sizes": list(self.sizes),
            "activations": list(self.activations),
            "bias": self.bias,
            "loss": self.loss,
            "reduction": self.reduction,
            "optimizer": {
                "lr": opt.lr,
                "momentum": opt.momentum,
                "dampening": opt.dampening,
                "weight_decay": opt.weight_decay,
                "nesterov": opt.nesterov,
            },
            "dtype": self.dtype,
        }


def _as_tuple(value: object, name: str) -> tuple:
    if isinstance(value, np.ndarray) and value.ndim == 1:
        return tuple(value.tolist())
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise NnparityError(f"{name} must be a list, e.g. [2, 3, 1]; got {value!r}.")
    return tuple(value)
