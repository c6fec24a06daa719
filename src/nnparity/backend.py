"""The ``Backend`` protocol every implementation speaks, and how one is found by name."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from nnparity.errors import NnparityError
from nnparity.records import LayerParams, StepResult
from nnparity.spec import NetworkSpec

BUILTIN_BACKENDS = {
    "numpy": "nnparity.numpy_backend:NumpyBackend",
    "torch": "nnparity.torch_backend:TorchBackend",
}


@runtime_checkable
class Backend(Protocol):
    """A network and its optimizer, trained one batch at a time.

    Constructed as ``Backend(spec, params)`` from a :class:`NetworkSpec` and one
    :class:`LayerParams` per weight layer. Everything goes in and comes out as
    NumPy arrays in the notebook's layout (weights ``(fan_in, fan_out)``).

    What the verifier holds a backend to (each breach is reported as a divergence at
    its step, never a crash): the arrays of a :class:`StepResult` are of the spec's
    dtype and must not change afterwards (return copies of arrays you go on
    updating in place); ``x`` and ``y`` must not be changed (the candidate gets
    them read-only); the parameters given to the constructor and ``set_params``
    are the backend's own copies, to keep or change as it likes.
    """

    def __init__(self, spec: NetworkSpec, params: Sequence[LayerParams]) -> None: ...

    def step(self, x: np.ndarray, y: np.ndarray) -> StepResult:
        """One SGD step on the batch ``(x, y)``."""
        ...

    def predict(self, x: np.ndarray) -> np.ndarray:
        """The network's output for ``x``, without training."""
        ...

    def set_params(self, params: Sequence[LayerParams]) -> None:
        """Replace the parameters; optimizer state (momentum buffers) is kept."""
        ...


def load_backend(name_or_path: str | type) -> type[Backend]:
    """A backend class from ``"numpy"``, ``"torch"``, ``"package.module:Class"``, a trajectory
    file ``"run.npz"`` (replayed, see :mod:`nnparity.trajectory`) or a class."""
    if isinstance(name_or_path, type):
        return _check_class(name_or_path, name_or_path.__qualname__)
    if not isinstance(name_or_path, str):
        raise NnparityError(f"A backend is a name, a 'module:Class' string or a class; got {name_or_path!r}.")
    if name_or_path.endswith(".npz"):  # a recorded trajectory, replayed as a backend
        from nnparity.trajectory import replay_backend

        return replay_backend(name_or_path)
    target = BUILTIN_BACKENDS.get(name_or_path, name_or_path)
    module_name, sep, class_name = target.partition(":")
    if not sep or not module_name or not class_name:
        raise NnparityError(
            f"Unknown backend {name_or_path!r}: use {' or '.join(map(repr, BUILTIN_BACKENDS))}, "
            "or 'package.module:Class' for your own."
        )
    try:
        module = importlib.import_module(module_name)
    except (Exception, SystemExit) as exc:  # any failure importing a user's module is theirs to fix
        missing = getattr(exc, "name", None) if isinstance(exc, ModuleNotFoundError) else None
        if missing is not None and (module_name == missing or module_name.startswith(missing + ".")):
            raise NnparityError(
                f"Cannot find backend module {module_name!r} ({exc}); check that it is installed or "
                "on the Python path (run from the directory that holds it, or set PYTHONPATH)."
            ) from exc
        raise NnparityError(
            f"Backend module {module_name!r} was found, but importing it failed "
            f"({type(exc).__name__}: {exc}); fix the module, or install what it imports."
        ) from exc
    cls: object = module
    for part in class_name.split("."):  # a class nested in another (its __qualname__, as labels have)
        cls = getattr(cls, part, None)
        if cls is None:
            raise NnparityError(f"Module {module_name!r} has no class {class_name!r}.")
    return _check_class(cls, target)


def _check_class(cls: object, label: str) -> type[Backend]:
    if not isinstance(cls, type):
        raise NnparityError(f"Backend {label!r} is not a class; got {cls!r}.")
    missing = [name for name in ("step", "predict", "set_params") if not callable(getattr(cls, name, None))]
    if missing:
        raise NnparityError(
            f"Backend {label!r} is not a Backend: it has no {', '.join(missing)} method "
            "(see nnparity.Backend)."
        )
    return cls


def backend_label(name_or_path: str | type) -> str:
    """A short name for reports: the string as given, or ``module:Class`` for a class."""
    if isinstance(name_or_path, str):
        return name_or_path
    label = getattr(name_or_path, "nnparity_label", None)  # e.g. "torch (cuda)"
    return label if isinstance(label, str) else f"{name_or_path.__module__}:{name_or_path.__qualname__}"
