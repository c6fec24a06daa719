"""Starting weights, the same for both backends.

Two schemes:

``"numpy-rand"`` (the notebook's)
    ``numpy.random.seed(seed)``, then ``numpy.random.rand(fan_in, fan_out)`` for
    each layer's weight, first layer first. When the network has biases they are
    drawn *after all the weights*, ``numpy.random.rand(fan_out)`` layer by layer,
    so switching biases on or off never changes the weights. Uniform on [0, 1).
    A private ``RandomState`` gives exactly that stream without touching NumPy's
    global generator.

``"torch"``
    ``torch.nn.Linear``'s own initialisation under ``torch.manual_seed(seed)``:
    layer by layer, the weight then (when there are biases) the bias, both uniform
    on ``(-1/sqrt(fan_in), 1/sqrt(fan_in))``, drawn in the spec's dtype. torch's
    global generator is restored afterwards.
"""

from __future__ import annotations

import numpy as np

from nnparity.errors import NnparityError
from nnparity.records import LayerParams, as_real
from nnparity.resources import check_memory
from nnparity.spec import NetworkSpec

SCHEMES = ("numpy-rand", "torch")


def init_params(spec: NetworkSpec, seed: int = 1, scheme: str = "numpy-rand") -> list[LayerParams]:
    """Starting parameters for ``spec``, in the notebook's ``(fan_in, fan_out)`` layout."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
        raise NnparityError(f"The seed must be a whole number from 0 to 2**32 - 1; got {seed!r}.")
    if scheme not in SCHEMES:
        raise NnparityError(f"Unknown init scheme {scheme!r}; choose from {', '.join(SCHEMES)}.")
    check_memory(spec, rows=0)  # before allocating weights that could never fit
    if scheme == "numpy-rand":
        return _numpy_rand(spec, int(seed))
    return _torch_linear(spec, int(seed))


def _layer_shapes(spec: NetworkSpec) -> list[tuple[int, int]]:
    return list(zip(spec.sizes[:-1], spec.sizes[1:]))


def _numpy_rand(spec: NetworkSpec, seed: int) -> list[LayerParams]:
    rng = np.random.RandomState(seed)
    dtype = spec.np_dtype
    weights = [rng.rand(fan_in, fan_out).astype(dtype) for fan_in, fan_out in _layer_shapes(spec)]
    if not spec.bias:
        return [LayerParams(w, None) for w in weights]
    biases = [rng.rand(fan_out).astype(dtype) for _, fan_out in _layer_shapes(spec)]
    return [LayerParams(w, b) for w, b in zip(weights, biases)]


def _torch_linear(spec: NetworkSpec, seed: int) -> list[LayerParams]:
    import torch

    dtype = getattr(torch, spec.dtype)
    params = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for fan_in, fan_out in _layer_shapes(spec):
            layer = torch.nn.Linear(fan_in, fan_out, bias=spec.bias, dtype=dtype)
            weight = layer.weight.detach().numpy().T.copy()
            bias = None if layer.bias is None else layer.bias.detach().numpy().copy()
            params.append(LayerParams(weight, bias))
    return params


def check_params(spec: NetworkSpec, params: object) -> list[LayerParams]:
    """``params`` as fresh arrays of the spec's dtype, or a sentence saying what does not fit."""
    if not isinstance(params, (list, tuple)) or len(params) != spec.n_layers:
        raise NnparityError(
            f"Expected a list of {spec.n_layers} LayerParams for sizes {spec.sizes}; got {params!r:.80}."
        )
    checked = []
    for i, ((fan_in, fan_out), layer) in enumerate(zip(_layer_shapes(spec), params)):
        if _looks_like_a_pair(layer):
            raise NnparityError(
                f"Layer {i} is a plain pair; give LayerParams(weight, bias), or the weight alone "
                "without biases."
            )
        weight, bias = (layer.weight, layer.bias) if isinstance(layer, LayerParams) else (layer, None)
        weight = _array(weight, spec, f"Layer {i}'s weight")
        if weight.shape != (fan_in, fan_out):
            raise NnparityError(
                f"Layer {i}'s weight must have shape (fan_in, fan_out) = {(fan_in, fan_out)}; "
                f"got {weight.shape}."
            )
        if spec.bias:
            if bias is None:
                raise NnparityError(f"Layer {i} has no bias, but the spec has bias=True.")
            bias = _array(bias, spec, f"Layer {i}'s bias")
            if bias.shape != (fan_out,):
                raise NnparityError(f"Layer {i}'s bias must have shape {(fan_out,)}; got {bias.shape}.")
        elif bias is not None:
            raise NnparityError(f"Layer {i} has a bias, but the spec has bias=False.")
        checked.append(LayerParams(weight, bias))
    return checked


def _looks_like_a_pair(layer: object) -> bool:
    """``(weight, bias)`` as a plain tuple (not a weight written as a tuple of two rows)."""
    if not isinstance(layer, tuple) or isinstance(layer, LayerParams) or len(layer) != 2:
        return False
    weight, bias = layer
    try:
        return np.ndim(weight) == 2 and (bias is None or np.ndim(bias) == 1)
    except ValueError:  # ragged
        return False


def _array(value: object, spec: NetworkSpec, what: str) -> np.ndarray:
    """A fresh, finite array of the spec's dtype, or a sentence naming ``what`` is wrong."""
    try:
        arr = np.array(as_real(value, spec.np_dtype), copy=True)
    except (TypeError, ValueError) as exc:
        raise NnparityError(f"{what} must be an array of real numbers; it {exc}.") from exc
    if not np.isfinite(arr).all():
        raise NnparityError(f"{what} has non-finite values (inf or NaN); starting weights must be finite.")
    return arr
