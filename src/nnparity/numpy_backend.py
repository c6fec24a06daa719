"""The reference notebook's backpropagation, generalised: any depth, activation and loss.

Names follow the notebook's derivation. For layer ``l`` with input ``a_prev``::

    z = a_prev . W + b            (the notebook's ``yhat = linear(inputs, v, bias)``)
    a = act(z)                    (``g = sigmoid(yhat)``)

and, going back from the loss ``E``::

    dE_dz = dE_da * da_dz         (``dE_dyhat = dE_dg * dg_dyhat``)
    dE_dW = a_prev.T . dE_dz      (``dE_dv = numpy.dot(dyhat_dv.T, dE_dyhat)``)
    dE_db = sum over rows of dE_dz
    dE_da_prev = dE_dz . W.T      (``dE_dg = numpy.dot(dE_dy, dy_dg.T)``)

Every activation's derivative sits beside it in :mod:`nnparity.activations`, every
loss gradient in :mod:`nnparity.losses`, and the update in :mod:`nnparity.optim`.
Products are ``numpy.dot``, as in the notebook (for 2-D arrays it rounds exactly as ``@``
does, and costs less per call on small ones).

A weight is the notebook's ``(fan_in, fan_out)`` array, kept in memory as torch keeps its own,
``(fan_out, fan_in)`` row by row: in Fortran order. The math is the same (BLAS reads a transposed
operand in place; its kernel for that order may round the last bit differently, as torch's and
NumPy's kernels do), and the verifier then reads the two sides' weights and gradients in the same
order, without a transposing copy on either side.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from nnparity.activations import ACTIVATIONS
from nnparity.initialization import check_params
from nnparity.losses import LOSSES
from nnparity.optim import sgd_init, sgd_update
from nnparity.records import LayerParams, StepResult
from nnparity.spec import NetworkSpec


class NumpyBackend:
    """Manual backpropagation in NumPy (built-in backend ``"numpy"``)."""

    def __init__(self, spec: NetworkSpec, params: Sequence[LayerParams]) -> None:
        self.spec = spec
        self._dtype = spec.np_dtype
        self._acts = [ACTIVATIONS[name] for name in spec.activations]
        self._loss = LOSSES[spec.loss]
        self._reduction = spec.reduction
        self._optimizer = spec.optimizer
        self._n_layers = spec.n_layers
        self._state = sgd_init(2 * spec.n_layers if spec.bias else spec.n_layers)
        self.set_params(params)

    def set_params(self, params: Sequence[LayerParams]) -> None:
        """Replace the parameters (copied); the optimizer's momentum buffers are kept."""
        checked = check_params(self.spec, params)
        self._weights = [np.asfortranarray(p.weight) for p in checked]
        self._biases = [p.bias for p in checked]

    def _forward(self, x: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Pre-activations ``z`` and activations ``a`` of every layer (``a[0]`` is the input)."""
        zs: list[np.ndarray] = []
        a = x
        outs = [a]
        for W, b, act in zip(self._weights, self._biases, self._acts):
            z = np.dot(a, W) if b is None else np.dot(a, W) + b
            a = act.forward(z)
            zs.append(z)
            outs.append(a)
        return zs, outs

    def predict(self, x: np.ndarray) -> np.ndarray:
        with np.errstate(all="ignore"):
            return self._forward(np.asarray(x, dtype=self._dtype))[1][-1]

    # Overflow gives inf and inf - inf gives NaN, silently, as in torch; the verifier reports
    # non-finite values where they first appear. np.errstate as a decorator costs 0.3 us a call,
    # as a with-block 0.7: 2% of the notebook's step.
    @np.errstate(all="ignore")
    def step(self, x: np.ndarray, y: np.ndarray) -> StepResult:
        return self._step(x, y)

    # The math in a method of its own: mutmut (nox -s mutation) does not mutate decorated ones.
    def _step(self, x: np.ndarray, y: np.ndarray) -> StepResult:
        x = np.asarray(x, dtype=self._dtype)
        y = np.asarray(y, dtype=self._dtype)
        zs, outs = self._forward(x)
        f = outs[-1]
        E = self._loss.value(f, y, self._reduction)

        # Back from the loss, last layer first.
        dE_da = self._loss.gradient(f, y, self._reduction)  # the notebook's dE_df
        n = self._n_layers
        dE_dW: list[np.ndarray] = [dE_da] * n
        dE_db: list[np.ndarray | None] = [None] * n
        for l in range(n - 1, -1, -1):  # noqa: E741 (l is the layer, as in the math)
            da_dz = self._acts[l].derivative(zs[l], outs[l + 1])
            dE_dz = dE_da * da_dz
            dz_dW = outs[l]
            dE_dW[l] = np.dot(dE_dz.T, dz_dW).T  # = dz_dW.T . dE_dz, laid out as W is
            if self._biases[l] is not None:
                dE_db[l] = dE_dz.sum(axis=0)
            if l > 0:
                dz_da = self._weights[l]
                dE_da = np.dot(dE_dz, dz_da.T)

        # Update: SGD over the tensors in torch's order (each layer's weight, then its bias).
        if self._biases[0] is None:
            new, self._state = sgd_update(self._optimizer, self._weights, dE_dW, self._state)
            self._weights = new
        else:
            tensors = [t for W, b in zip(self._weights, self._biases) for t in (W, b)]
            grads = [g for gW, gb in zip(dE_dW, dE_db) for g in (gW, gb)]
            new, self._state = sgd_update(self._optimizer, tensors, grads, self._state)  # type: ignore[arg-type]
            self._weights, self._biases[:] = new[0::2], new[1::2]
        # Positional: a NamedTuple built from keywords costs ~0.2 us more, 1% of a small step.
        return StepResult(
            E,  # loss
            list(map(LayerParams, dE_dW, dE_db)),  # grads
            list(map(LayerParams, self._weights, self._biases)),  # params
            outs[1:],  # activations
        )
