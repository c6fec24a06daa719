"""Golden trajectories: a recorded run that replays as the reference, with no torch at check time.

:func:`record` trains a backend (torch by default) and keeps, per step, the loss, and for every
``every``-th step the gradients, the updated parameters and the activations; :func:`save`
writes them to one ``.npz`` file and :func:`load` reads it back. :func:`replay_backend` turns a
trajectory into a :class:`~nnparity.Backend` class that hands back the recorded steps, so::

    verify(spec, x, y, steps=..., params=..., candidate="numpy", reference=replay_backend("run.npz"))

checks an edit to the backprop math against the stored run (in CI without torch, or across a
torch upgrade). The replay checks that the network, the starting weights and the data are the
recording's, and says so in a sentence when they are not.

**The file.** ``np.savez_compressed`` with these members:

- ``header``: a JSON string: ``format`` ``"nnparity-trajectory"``, ``version`` 1, ``spec``
  (``NetworkSpec.to_dict()``), ``steps``, ``every``, ``rows``, ``data_sha256`` (of the batch in
  the spec's dtype), ``init`` (``{"scheme", "seed"}`` or ``null``), ``backend``,
  ``activations`` (recorded or not), ``versions`` (python, numpy, torch, nnparity);
- ``losses``: ``(steps,)``, the loss of every step, in the spec's dtype as float64;
- ``start``: the starting parameters, flattened;
- ``grads``, ``params``, ``activations``: one row per recorded step (``0, every, 2 every, ...``),
  each row every layer's tensors flattened in torch's order (layer 0 weight, layer 0 bias, layer
  1 weight, ...; weights in the notebook's ``(fan_in, fan_out)`` layout, C order), stored
  exactly but compactly: each row XOR'd bitwise with the row before, then split into byte
  planes (``(itemsize, columns, rows)`` uint8), which deflate well since consecutive steps share
  their high bytes. :func:`load` undoes both.

The notebook's 10,000 steps, all of it recorded, take about 1.6 MB.

**Replay needs ``every=1``.** A replay must hand back every step the verifier asks for and
cannot compute an unrecorded one without the backend it came from, so only a trajectory
recorded at every step replays; one with ``every > 1`` (all losses, the tensors of every k-th
step) is an archive, read with :func:`load` and :meth:`Trajectory.result`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from nnparity import arguments
from nnparity.errors import NnparityError
from nnparity.files import atomic_write
from nnparity.optim import SGD
from nnparity.records import LayerParams, StepResult
from nnparity.spec import NetworkSpec

FORMAT = "nnparity-trajectory"
VERSION = 1
NOTEBOOK_TRAJECTORY = "notebook_trajectory.npz"
_TENSORS = ("grads", "params", "activations")


# --- the record ---------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Trajectory:
    """A recorded run: the header (see the module) and the arrays, decoded."""

    header: dict[str, Any]
    losses: np.ndarray
    start: np.ndarray
    grads: np.ndarray
    params: np.ndarray
    activations: np.ndarray | None

    @cached_property
    def spec(self) -> NetworkSpec:
        return spec_from_dict(self.header["spec"])

    @property
    def steps(self) -> int:
        return int(self.header["steps"])

    @property
    def every(self) -> int:
        return int(self.header["every"])

    def start_params(self) -> list[LayerParams]:
        return unflatten_params(self.spec, self.start)

    def result(self, step: int) -> StepResult:
        """The recorded step ``step`` (one of ``0, every, 2 every, ...``)."""
        if not 0 <= step < self.steps:
            raise NnparityError(f"The trajectory has steps 0 to {self.steps - 1}; there is no step {step}.")
        row, off = divmod(step, self.every)
        if off:
            raise NnparityError(
                f"The trajectory keeps the tensors of every {self.every}th step only; step {step} is not one."
            )
        spec = self.spec
        acts = None
        if self.activations is not None:
            acts = _split(self.activations[row], [(self.header["rows"], w) for w in spec.sizes[1:]])
        return StepResult(
            loss=float(self.losses[step]),
            grads=unflatten_params(spec, self.grads[row]),
            params=unflatten_params(spec, self.params[row]),
            activations=acts,
        )

    def check(
        self,
        spec: NetworkSpec,
        x: np.ndarray | None = None,
        y: np.ndarray | None = None,
        params: Sequence[LayerParams] | None = None,
        steps: int | None = None,
        *,
        name: str = "The trajectory",
    ) -> None:
        """Raise :class:`NnparityError` unless ``spec`` (and whatever else is given) is the recording's."""
        if spec.to_dict() != self.header["spec"]:
            raise NnparityError(
                f"{name} was recorded for the network {_describe(self.header['spec'])}, "
                f"not {_describe(spec.to_dict())}; record it again for this network."
            )
        if x is not None and y is not None and data_sha256(spec, x, y) != self.header["data_sha256"]:
            raise NnparityError(
                f"{name} was recorded on other training data ({self.header['rows']} rows, sha256 "
                f"{self.header['data_sha256'][:12]}...); give it the data it was recorded on."
            )
        if params is not None and not np.array_equal(flatten_params(spec, params), self.start):
            init = self.header.get("init")
            origin = f"init {init['scheme']} seed {init['seed']}" if init else "the weights it was given"
            raise NnparityError(f"{name} starts from other weights ({origin}); start from the same weights.")
        if steps is not None and steps > self.steps:
            raise NnparityError(f"{name} holds {self.steps} steps; verify {self.steps} steps or fewer.")


def spec_from_dict(data: dict[str, Any]) -> NetworkSpec:
    """The inverse of ``NetworkSpec.to_dict()``."""
    try:
        fields = dict(data)
        optimizer = SGD(**fields.pop("optimizer"))
        return NetworkSpec(
            sizes=tuple(fields.pop("sizes")),
            activations=tuple(fields.pop("activations")),
            optimizer=optimizer,
            **fields,
        )
    except (TypeError, KeyError, AttributeError) as exc:
        raise NnparityError(f"The trajectory's spec is not a network spec: {exc}.") from exc


def _describe(spec: dict[str, Any]) -> str:
    opt = spec["optimizer"]
    extras = [f"{k} {v}" for k, v in opt.items() if k != "lr" and v]
    return (
        f"{spec['sizes']} {'/'.join(spec['activations'])}, bias {spec['bias']}, {spec['loss']} "
        f"({spec['reduction']}), SGD lr {opt['lr']}{''.join(', ' + e for e in extras)}, {spec['dtype']}"
    )


def flatten_params(spec: NetworkSpec, params: Sequence[LayerParams]) -> np.ndarray:
    """Every layer's weight then bias, raveled and concatenated, in the spec's dtype."""
    parts = [
        np.asarray(t, dtype=spec.dtype).ravel() for p in params for t in (p.weight, p.bias) if t is not None
    ]
    return np.concatenate(parts) if parts else np.empty(0, dtype=spec.dtype)


def unflatten_params(spec: NetworkSpec, flat: np.ndarray) -> list[LayerParams]:
    shapes: list[tuple[int, ...]] = []
    for fan_in, fan_out in zip(spec.sizes[:-1], spec.sizes[1:]):
        shapes.append((fan_in, fan_out))
        if spec.bias:
            shapes.append((fan_out,))
    tensors = _split(flat, shapes)
    if not spec.bias:
        return [LayerParams(w, None) for w in tensors]
    return [LayerParams(w, b) for w, b in zip(tensors[::2], tensors[1::2])]


def _split(flat: np.ndarray, shapes: Sequence[tuple[int, ...]]) -> list[np.ndarray]:
    out, at = [], 0
    for shape in shapes:
        size = int(np.prod(shape))
        out.append(flat[at : at + size].reshape(shape))
        at += size
    return out


def data_sha256(spec: NetworkSpec, x: object, y: object) -> str:
    """A hash of the batch as the verifier sees it: 2-D arrays in the spec's dtype."""
    from nnparity.verify import check_batch

    xa, ya = check_batch(spec, x, y)
    digest = hashlib.sha256(f"{spec.dtype} {xa.shape} {ya.shape}".encode())
    digest.update(np.ascontiguousarray(xa).tobytes())
    digest.update(np.ascontiguousarray(ya).tobytes())
    return digest.hexdigest()


# --- recording ----------------------------------------------------------------------------------------


def record(
    spec: NetworkSpec,
    x: np.ndarray,
    y: np.ndarray,
    *,
    steps: int,
    params: Sequence[LayerParams] | None = None,
    backend: str | type = "torch",
    every: int = 1,
    activations: bool = True,
    init: tuple[str, int] | None = None,
) -> Trajectory:
    """Train ``backend`` for ``steps`` steps on ``(x, y)`` and keep what it did.

    The starting weights are ``params``, or ``init_params(spec, seed, scheme)`` for
    ``init=(scheme, seed)`` (default ``("numpy-rand", 1)``, the notebook's), which the header
    then records (give one or the other: the header could not vouch for weights given as
    ``params``). Every step's loss is kept; the gradients, updated parameters and (with
    ``activations``, when the backend reports them) activations of steps ``0, every, ...``.
    """
    from nnparity.backend import backend_label, load_backend
    from nnparity.initialization import check_params, init_params
    from nnparity.resources import check_memory
    from nnparity.verify import check_batch

    if not isinstance(spec, NetworkSpec):
        raise NnparityError(f"spec must be an nnparity.NetworkSpec; got {spec!r:.80}.")
    for name, value in (("steps", steps), ("every", every)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise NnparityError(f"{name} must be a whole number >= 1; got {value!r}.")
    x, y = check_batch(spec, x, y)
    check_memory(spec, x.shape[0], steps, recorded=-(-steps // every))
    if params is not None and init is not None:
        raise NnparityError(
            "Give record() the starting weights as params or as init=(scheme, seed), not both."
        )
    if params is None:
        scheme, seed = init or ("numpy-rand", 1)
        params = init_params(spec, seed=seed, scheme=scheme)
        init = (scheme, seed)
    start = check_params(spec, params)
    model = load_backend(backend)(spec, [LayerParams(p.weight.copy(), p.bias) for p in start])

    losses = np.empty(steps, dtype=np.float64)
    rows: dict[str, list[np.ndarray]] = {name: [] for name in _TENSORS}
    keep_acts = activations
    for t in range(steps):
        try:
            result = model.step(x, y)
        except Exception as exc:
            raise NnparityError(
                f"The backend {backend_label(backend)!r} raised {type(exc).__name__} at step {t}: {exc}"
            ) from exc
        losses[t] = result.loss
        if t % every:
            continue
        rows["grads"].append(flatten_params(spec, result.grads))
        rows["params"].append(flatten_params(spec, result.params))
        if keep_acts and result.activations is not None:
            rows["activations"].append(
                np.concatenate([np.asarray(a, spec.dtype).ravel() for a in result.activations])
            )
        else:
            keep_acts = False
    header = {
        "format": FORMAT,
        "version": VERSION,
        "spec": spec.to_dict(),
        "steps": int(steps),
        "every": int(every),
        "rows": int(x.shape[0]),
        "data_sha256": data_sha256(spec, x, y),
        "init": None if init is None else {"scheme": init[0], "seed": int(init[1])},
        "backend": backend_label(backend),
        "activations": bool(keep_acts),
        "versions": _versions(),
    }
    return Trajectory(
        header=header,
        losses=losses,
        start=flatten_params(spec, start),
        grads=np.array(rows["grads"], dtype=spec.dtype),
        params=np.array(rows["params"], dtype=spec.dtype),
        activations=np.array(rows["activations"], dtype=spec.dtype) if keep_acts else None,
    )


def _versions() -> dict[str, str | None]:
    import sys

    import nnparity

    torch = sys.modules.get("torch")
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": None if torch is None else str(torch.__version__),
        "nnparity": nnparity.__version__,
    }


# --- the file -----------------------------------------------------------------------------------------


def _encode(rows: np.ndarray) -> np.ndarray:
    """XOR each row with the one before (bitwise, so exact), then split into byte planes."""
    bits = rows.view(f"u{rows.dtype.itemsize}")
    delta = bits.copy()
    delta[1:] ^= bits[:-1]
    n, k = delta.shape
    return np.ascontiguousarray(delta.view(np.uint8).reshape(n, k, rows.dtype.itemsize).transpose(2, 1, 0))


def _decode(planes: np.ndarray, dtype: np.dtype) -> np.ndarray:
    itemsize, k, n = planes.shape
    if itemsize != dtype.itemsize:
        raise ValueError(f"{itemsize}-byte planes for {dtype}")
    delta = np.ascontiguousarray(planes.transpose(2, 1, 0)).view(f"u{itemsize}").reshape(n, k)
    bits = np.bitwise_xor.accumulate(delta, axis=0) if n else delta
    return bits.view(dtype)


def save(trajectory: Trajectory, path: str | os.PathLike[str]) -> Path:
    """Write ``trajectory`` to ``path`` (an ``.npz`` file), atomically."""
    path = Path(path)
    members: dict[str, np.ndarray] = {
        "header": np.array(json.dumps(trajectory.header, sort_keys=True)),
        "losses": trajectory.losses,
        "start": trajectory.start,
        "grads": _encode(trajectory.grads),
        "params": _encode(trajectory.params),
    }
    if trajectory.activations is not None:
        members["activations"] = _encode(trajectory.activations)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NnparityError(f"Cannot write {str(path)!r}: {exc.strerror or exc}.") from exc

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: given a path, savez would append ".npz"
            np.savez_compressed(f, **members)  # type: ignore[arg-type]

    atomic_write(path, write)
    return path


def resolve(path: str | os.PathLike[str]) -> Path:
    """``path`` itself, or the shipped trajectory of that name (``notebook_trajectory.npz``)."""
    given = Path(path)
    if not given.exists() and given.name == str(path):
        shipped = resources.files("nnparity.data").joinpath(given.name)
        if shipped.is_file():
            return Path(str(shipped))
    return given


def load(path: str | os.PathLike[str]) -> Trajectory:
    """Read a trajectory written by :func:`save` (or the shipped one by its name); a file that is
    not one, or is damaged, raises :class:`NnparityError` saying so."""
    try:  # the file is ours to close (the with-block below): np.load leaks one it fails to read
        file = open(resolve(path), "rb")  # noqa: SIM115
    except FileNotFoundError:
        raise NnparityError(f"Cannot read trajectory {str(path)!r}: no such file.") from None
    except OSError as exc:
        raise NnparityError(f"Cannot read trajectory {str(path)!r}: {exc.strerror or exc}.") from exc
    with file:
        try:
            npz = np.load(file, allow_pickle=False)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise NnparityError(
                f"{path} is not an nnparity trajectory (not a NumPy .npz file: {exc})."
            ) from exc
        if not isinstance(npz, np.lib.npyio.NpzFile):  # a single array (.npy)
            raise NnparityError(
                f"{path} is not an nnparity trajectory (a single .npy array, not an .npz file)."
            )
        try:
            with npz:
                members = {name: npz[name] for name in npz.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
            raise NnparityError(f"{path} is damaged: {exc}; record it again.") from exc
    try:
        header = _header(members)
        dtype = np.dtype(header["spec"]["dtype"])
        for name, want in (("losses", np.dtype(np.float64)), ("start", dtype)):
            if name not in members:
                raise ValueError(f"it has no {name}")
            if members[name].dtype != want:
                raise ValueError(f"its {name} are {members[name].dtype}, not {want}")
        for name in _TENSORS:
            if name in members and (members[name].dtype != np.uint8 or members[name].ndim != 3):
                raise ValueError(f"its {name} are not byte planes")
        if header["activations"] != ("activations" in members):
            raise ValueError("its header and its members disagree on the activations")
        arrays = {name: _decode(members[name], dtype) for name in _TENSORS if name in members}
        trajectory = Trajectory(
            header=header,
            losses=members["losses"],
            start=members["start"],
            grads=arrays["grads"],
            params=arrays["params"],
            activations=arrays.get("activations"),
        )
        spec = trajectory.spec
        recorded = -(-trajectory.steps // trajectory.every)
        widths = (spec.n_params, spec.n_params, header["rows"] * sum(spec.sizes[1:]))
        for name, width in zip(_TENSORS, widths):
            arr = getattr(trajectory, name)
            if arr is not None and arr.shape != (recorded, width):
                raise ValueError(f"{name} has shape {arr.shape}, not {(recorded, width)}")
        if trajectory.losses.shape != (trajectory.steps,) or trajectory.start.shape != (spec.n_params,):
            raise ValueError("the losses or the starting weights do not fit the header")
    except (KeyError, ValueError, TypeError, NnparityError) as exc:
        raise NnparityError(f"{path} is not a readable nnparity trajectory: {exc}.") from exc
    for arr in (
        trajectory.losses,
        trajectory.start,
        trajectory.grads,
        trajectory.params,
        trajectory.activations,
    ):
        if arr is not None:
            arr.flags.writeable = False  # a replay hands out views: nobody may change them
    return trajectory


def _header(members: dict[str, np.ndarray]) -> dict[str, Any]:
    """The file's header, checked to hold what :func:`record` writes, of the types it writes;
    raises ``ValueError`` (or ``KeyError``) saying what is wrong."""
    header = json.loads(str(members["header"]))
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError("its header names no nnparity trajectory")
    if header.get("version") != VERSION:
        raise ValueError(f"format version {header.get('version')}; this nnparity reads version {VERSION}")
    if not isinstance(header.get("spec"), dict):
        raise ValueError("its header holds no network spec")
    for name in ("steps", "every", "rows"):
        value = header.get(name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"its header's {name} is {value!r}, not a whole number >= 1")
    digest = header.get("data_sha256")
    if not isinstance(digest, str) or len(digest) != 64 or set(digest) - set("0123456789abcdef"):
        raise ValueError("its header holds no sha256 of the data")
    init = header.get("init")
    if init is not None and not (
        isinstance(init, dict)
        and isinstance(init.get("scheme"), str)
        and isinstance(init.get("seed"), int)
        and not isinstance(init.get("seed"), bool)
    ):
        raise ValueError(f"its header's init is {init!r}, not a scheme and a seed")
    if not isinstance(header.get("activations"), bool) or not isinstance(header.get("backend"), str):
        raise ValueError("its header does not say which backend it recorded, and whether activations")
    return header


def notebook_trajectory() -> Trajectory:
    """The notebook's run (torch, 10,000 steps, every step), shipped with nnparity."""
    return load(NOTEBOOK_TRAJECTORY)


# --- replay -------------------------------------------------------------------------------------------


class ReplayBackend:
    """A backend that hands back a recorded run's steps; made by :func:`replay_backend`."""

    trajectory: ClassVar[Trajectory]
    source: ClassVar[str] = "The trajectory"

    def __init__(self, spec: NetworkSpec, params: Sequence[LayerParams]) -> None:
        traj = self.trajectory
        if traj.every != 1:
            raise NnparityError(
                f"{self.source} keeps the tensors of every {traj.every}th step only, so it cannot be "
                "replayed; record it with --every 1 to replay it."
            )
        traj.check(spec, params=params, name=self.source)
        self.spec = spec
        self._t = 0
        self._data: tuple[object, object] | None = None

    def step(self, x: np.ndarray, y: np.ndarray) -> StepResult:
        if self._data is None or self._data[0] is not x or self._data[1] is not y:
            self.trajectory.check(self.spec, x, y, name=self.source)
            self._data = (x, y)
        if self._t >= self.trajectory.steps:
            raise NnparityError(
                f"{self.source} holds {self.trajectory.steps} steps; there is no step {self._t}."
            )
        result = self.trajectory.result(self._t)
        self._t += 1
        return result

    def set_params(self, params: Sequence[LayerParams]) -> None:
        """Ignored: a recording goes on from its own weights."""

    def predict(self, x: np.ndarray) -> np.ndarray:
        raise NnparityError(f"{self.source} is a recording: it can replay its steps but not predict.")


def replay_backend(trajectory: Trajectory | str | os.PathLike[str]) -> type[ReplayBackend]:
    """A :class:`ReplayBackend` class bound to ``trajectory`` (a :class:`Trajectory` or a file)."""
    if isinstance(trajectory, Trajectory):
        source, traj = "The trajectory", trajectory
    else:
        source, traj = str(trajectory), load(trajectory)
    name = f"Replay[{Path(source).name}]"
    return type(name, (ReplayBackend,), {"trajectory": traj, "source": source, "__qualname__": name})


def start_for_replay(
    path: str | os.PathLike[str], config: Any, x: np.ndarray, y: np.ndarray
) -> list[LayerParams]:
    """For ``nnparity verify --reference FILE.npz``: the recording's starting weights, after checking
    that ``config`` (a :class:`nnparity.config.RunConfig`: network, ``[init]``, steps) and the data
    are the recording's. Taking the weights from the file means a torch-initialised run replays
    without torch."""
    trajectory = load(path)
    name = str(path)
    init = trajectory.header.get("init")
    if init is not None and (init["scheme"], init["seed"]) != (config.scheme, config.seed):
        raise NnparityError(
            f"{name} was recorded from [init] scheme {init['scheme']!r} seed {init['seed']}, "
            f"not scheme {config.scheme!r} seed {config.seed}; use the config it was recorded with."
        )
    params = trajectory.start_params()
    trajectory.check(config.spec, x, y, params, config.steps, name=name)
    return params


# --- command line: nnparity record --------------------------------------------------------------------


def add_record_parser(subparsers: Any) -> argparse.ArgumentParser:
    from nnparity.cli import add_run_options

    parser: argparse.ArgumentParser = subparsers.add_parser(
        "record",
        help="record a run's trajectory, to replay later as the reference (--reference FILE.npz)",
        description="Train a backend (default torch) and write every step's loss, gradients, updated "
        "parameters and activations to an .npz file. `nnparity verify --reference FILE.npz` then "
        "replays it as the reference, without torch. With no --config, the notebook's experiment.",
    )
    add_run_options(parser)
    parser.add_argument(
        "--every", type=arguments.count, default=1, help="keep the tensors of every K-th step (default 1)"
    )
    parser.add_argument("--backend", default="torch", help="torch (default), numpy or MODULE:CLASS")
    parser.add_argument("--no-activations", action="store_true", help="leave the activations out")
    parser.add_argument("--out", type=Path, required=True, help="the .npz file to write")
    return parser


def run_record(args: argparse.Namespace) -> int:
    """``nnparity record``: 0 when written; bad input raises :class:`NnparityError` (exit 2)."""
    from nnparity.cli import load_run

    if args.out.suffix != ".npz":
        raise NnparityError(f"--out {args.out} must end in .npz.")
    config, data = load_run(args)
    spec, steps = config.spec, config.steps
    trajectory = record(
        spec,
        data.x,
        data.y,
        steps=steps,
        backend=args.backend,
        every=args.every,
        activations=not args.no_activations,
        init=(config.scheme, config.seed),
    )
    path = save(trajectory, args.out)
    print(
        f"Recorded {steps} steps of {trajectory.header['backend']} "
        f"({'every step' if args.every == 1 else f'tensors every {args.every} steps'}) "
        f"to {path} ({path.stat().st_size / 1e6:.2f} MB)."
    )
    return 0
