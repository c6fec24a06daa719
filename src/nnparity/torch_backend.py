"""The reference side: ``torch.nn.Sequential`` trained by ``torch.optim.SGD``.

The model is the notebook's: ``nn.Linear`` layers, each followed by its
activation module, a ``torch.nn`` loss module, and ``torch.optim.SGD``. Arrays
cross the interface in the notebook's ``(fan_in, fan_out)`` layout, so a weight
is transposed on the way in and out (``nn.Linear`` stores ``(fan_out, fan_in)``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from nnparity.errors import NnparityError
from nnparity.initialization import check_params
from nnparity.records import LayerParams, StepResult
from nnparity.spec import NetworkSpec

ACTIVATION_MODULES = {
    "identity": torch.nn.Identity,
    "sigmoid": torch.nn.Sigmoid,
    "tanh": torch.nn.Tanh,
    "relu": torch.nn.ReLU,
    "leaky_relu": torch.nn.LeakyReLU,
    "softplus": torch.nn.Softplus,
    "elu": torch.nn.ELU,
}
LOSS_MODULES = {
    "mse": torch.nn.MSELoss,
    "l1": torch.nn.L1Loss,
    "bce": torch.nn.BCELoss,
    "bce_with_logits": torch.nn.BCEWithLogitsLoss,
    "cross_entropy": torch.nn.CrossEntropyLoss,
}


def build_model(spec: NetworkSpec) -> torch.nn.Sequential:
    """``Linear, activation, Linear, activation, ...`` in the spec's dtype."""
    dtype = getattr(torch, spec.dtype)
    modules: list[torch.nn.Module] = []
    for fan_in, fan_out, act in zip(spec.sizes[:-1], spec.sizes[1:], spec.activations):
        modules.append(torch.nn.Linear(fan_in, fan_out, bias=spec.bias, dtype=dtype))
        modules.append(ACTIVATION_MODULES[act]())
    return torch.nn.Sequential(*modules)


def _tensor(a: np.ndarray, dtype: str) -> torch.Tensor:
    """A tensor sharing ``a``'s memory where it can (a read-only array is copied, as torch needs)."""
    arr = np.asarray(a, dtype=dtype)
    return torch.from_numpy(arr if arr.flags.writeable else arr.copy())


def _gradient(p: torch.Tensor) -> torch.Tensor:
    """``p.grad``, which a parameter that took no part in the loss does not have."""
    if p.grad is None:
        raise RuntimeError("torch produced no gradient for a parameter")
    return p.grad


def _numpy(t: torch.Tensor, copy: bool = True) -> np.ndarray:
    """``t`` as an array; ``copy=False`` shares its memory, for a tensor that torch will not change."""
    arr = t.detach().numpy()
    return arr.copy() if copy else arr


def _numpy_from(t: torch.Tensor, copy: bool = True) -> np.ndarray:
    """``t``, on another device than the CPU, as an array (always a copy)."""
    return t.detach().to("cpu", copy=True).numpy()  # the transfer is the copy


class TorchBackend:
    """``torch.nn.Sequential`` + ``torch.optim.SGD`` (built-in backend ``"torch"``), on the CPU;
    :func:`on_device` makes one for another device."""

    device = "cpu"

    def __init__(self, spec: NetworkSpec, params: Sequence[LayerParams]) -> None:
        self.spec = spec
        self._on_cpu = torch.device(self.device).type == "cpu"
        self._numpy = _numpy if self._on_cpu else _numpy_from
        self.model = build_model(spec).to(self.device)
        self.linears: list[torch.nn.Linear] = [m for m in self.model if isinstance(m, torch.nn.Linear)]
        self.loss = LOSS_MODULES[spec.loss](reduction=spec.reduction)
        opt = spec.optimizer
        self.optimizer = torch.optim.SGD(
            self.model.parameters(),
            lr=opt.lr,
            momentum=opt.momentum,
            dampening=opt.dampening,
            weight_decay=opt.weight_decay,
            nesterov=opt.nesterov,
            # On the CPU torch chooses the per-tensor loop anyway; saying so skips that choice every step.
            foreach=False,
        )
        self._parameters = list(self.model.parameters())  # each layer's weight, then its bias
        # The gradients in a row's order: the last layer's first (see step_into).
        self._grads_order = [p for layer in reversed(self.linears) for p in layer.parameters()]
        self._flat: list[torch.Tensor] | None = None  # 1-D views of the parameters, made once
        self._inputs: dict[int, tuple[np.ndarray, torch.Tensor]] = {}
        self.model.train()
        self.set_params(params)

    def __getstate__(self) -> dict[str, object]:
        """Pickled without the input cache: its tensors share the caller's arrays, and a copy of
        them (what unpickling would give) would only be rebuilt at the next step."""
        state = self.__dict__.copy()
        state["_inputs"] = {}
        state["_flat"] = None
        return state

    def set_params(self, params: Sequence[LayerParams]) -> None:
        """Copy ``params`` into the model in place; the optimizer's momentum buffers are kept."""
        checked = check_params(self.spec, params)
        with torch.no_grad():
            for layer, p in zip(self.linears, checked):
                layer.weight.copy_(torch.from_numpy(p.weight.T))
                if p.bias is not None:
                    layer.bias.copy_(torch.from_numpy(p.bias))

    def _params(self, grads: bool) -> list[LayerParams]:
        # Gradients are fresh tensors every step (zero_grad sets them to None) and are shared;
        # parameters are copied, since the next optimizer step changes them in place.
        copy = not grads
        out = []
        for layer in self.linears:
            w = _gradient(layer.weight) if grads else layer.weight
            b = None if layer.bias is None else (_gradient(layer.bias) if grads else layer.bias)
            out.append(LayerParams(self._numpy(w, copy).T, None if b is None else self._numpy(b, copy)))
        return out

    def _tensor(self, a: np.ndarray, slot: int) -> torch.Tensor:
        """``a`` as a tensor; the same array object as last step gives the same (shared) tensor."""
        if not self._on_cpu:  # a copy on the device each step: it cannot follow changes to ``a``
            return _tensor(a, self.spec.dtype).to(self.device)
        cached = self._inputs.get(slot)
        if cached is not None and cached[0] is a:
            return cached[1]
        tensor = _tensor(a, self.spec.dtype)
        # Only a tensor sharing ``a``'s memory follows later changes to ``a``: cache only those.
        if tensor.data_ptr() == a.__array_interface__["data"][0] and a.flags.writeable:
            self._inputs[slot] = (a, tensor)
        return tensor

    def predict(self, x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self._numpy(self.model(_tensor(x, self.spec.dtype).to(self.device)))

    def step(self, x: np.ndarray, y: np.ndarray) -> StepResult:
        activations, error = self._backward(x, y)
        grads = self._params(grads=True)
        self.optimizer.step()
        return StepResult(
            loss=error.item(),
            grads=grads,
            params=self._params(grads=False),
            activations=[self._numpy(a, copy=False) for a in activations],
        )

    def _backward(self, x: np.ndarray, y: np.ndarray) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Forward, loss and backward of one step: each activation module's output, and the loss."""
        inputs = self._tensor(x, 0)
        targets = self._tensor(y, 1)
        # What Sequential.forward does, keeping each activation module's output.
        activations = []
        out = inputs
        for module in self.model:
            out = module(out)
            if not isinstance(module, torch.nn.Linear):
                activations.append(out)
        error = self.loss(out, targets)
        # optimizer.zero_grad(set_to_none=True), without its profiler bookkeeping.
        for p in self._parameters:
            p.grad = None
        error.backward()
        return activations, error

    def step_into(self, x: np.ndarray, y: np.ndarray, row: torch.Tensor, torch_order: bool = True) -> None:
        """:meth:`step`, written straight into ``row`` (a 1-D CPU tensor) in the order of
        :class:`nnparity.compare.RowLayout` with activations, weights as torch holds them
        (``torch_order``) or transposed: the same numbers, without the arrays and records in
        between (the worker process's fast path).

        SGD reads the gradients and leaves them as they are, so reading them after the update
        gives what :meth:`step` reads before it.
        """
        activations, error = self._backward(x, y)
        self.optimizer.step()
        with torch.no_grad():
            if torch_order:  # weights as torch holds them, (fan_out, fan_in): one cat of 1-D views
                if self._flat is None:  # SGD updates the parameters in place: their views stay true
                    self._flat = [p.detach().view(-1) for p in self._parameters]
                flat = [a.reshape(-1) for a in activations]
                flat.append(error.reshape(1))
                flat += [_gradient(p).view(-1) for p in self._grads_order]
                flat += self._flat
                torch.cat(flat, out=row)
                return
            # Transposed: each copied into its place once (a transposing copy, then a cat, cost
            # twice the memory traffic).
            parts: list[torch.Tensor] = [a.reshape(-1) for a in activations]
            parts.append(error.reshape(1))
            parts += [_gradient(p) for p in self._grads_order]
            parts += self._parameters
            at = 0
            for part in parts:
                size = part.numel()
                place = row[at : at + size]
                if part.dim() == 2:
                    place.view(part.shape[1], part.shape[0]).copy_(part.t())
                else:
                    place.copy_(part.reshape(-1))
                at += size


DEVICE_TYPES = ("cpu", "cuda", "mps", "xpu")


def on_device(device: str) -> type[TorchBackend]:
    """The torch backend on ``device`` (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...), as
    ``nnparity verify --device`` chooses it: ``verify(..., reference=on_device("cuda"))``."""
    try:
        where = torch.device(device)
        if where.type not in DEVICE_TYPES:
            raise RuntimeError(f"nnparity runs torch on {', '.join(DEVICE_TYPES)} devices")
        torch.empty(1, device=where)  # raises if the device is not there
    except (RuntimeError, TypeError, AssertionError) as exc:
        raise NnparityError(
            f"The torch device {device!r} is not available here ({str(exc).splitlines()[0]}); "
            "use --device cpu, or a device torch.cuda.is_available() confirms."
        ) from exc
    if where.type == "cpu":
        return TorchBackend
    return type(
        "TorchBackend",
        (TorchBackend,),
        {"device": str(where), "nnparity_label": f"torch ({where})", "__module__": __name__},
    )
