"""The records that cross the ``Backend`` interface, all NumPy arrays.

Weights use the notebook's layout, ``(fan_in, fan_out)``, so that a layer's
forward pass is ``x @ weight + bias``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class LayerParams(NamedTuple):
    """One weight layer: ``weight`` is ``(fan_in, fan_out)``, ``bias`` ``(fan_out,)`` or ``None``."""

    weight: np.ndarray
    bias: np.ndarray | None = None


class StepResult(NamedTuple):
    """What one SGD step on one batch produced.

    ``loss`` is the loss before the update; ``grads`` the gradients at the
    pre-update weights; ``params`` the parameters after the update;
    ``activations`` each layer's output after its activation function, or
    ``None`` when a backend cannot report them.
    """

    loss: float
    grads: list[LayerParams]
    params: list[LayerParams]
    activations: list[np.ndarray] | None = None


def copy_params(params: list[LayerParams] | tuple[LayerParams, ...]) -> list[LayerParams]:
    """Independent copies, so that no backend can change another's arrays."""
    return [
        LayerParams(np.array(p.weight, copy=True), None if p.bias is None else np.array(p.bias, copy=True))
        for p in params
    ]


def as_real(value: object, dtype: np.dtype | str) -> np.ndarray:
    """``value`` as an array of ``dtype`` (no copy if it already is one).

    Raises ``TypeError`` unless it holds real numbers: a complex, text or object
    array would otherwise be cast silently (dropping an imaginary part, say).
    """
    if type(value) is np.ndarray and value.dtype == dtype:  # the common case, on the hot path
        return value
    try:
        arr = np.asarray(value)
    except RuntimeError as exc:  # torch: "Can't call numpy() on Tensor that requires grad"
        raise TypeError("is a tensor that requires grad; pass it .detach()-ed") from exc
    except ValueError as exc:  # "setting an array element with a sequence": ragged, or mixed
        raise TypeError("is not one rectangular array (rows of different lengths, or a pair?)") from exc
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"holds {arr.dtype} values, not real numbers")
    return arr.astype(dtype, copy=False)
