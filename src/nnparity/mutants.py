"""``nnparity mutants``: realistic backprop and SGD bugs planted in the NumPy backend, to prove
that the verifier catches each one and names the right place.

Every mutant is a one-line edit (two for a reordering) of the shipped source of
:mod:`nnparity.activations`, :mod:`nnparity.losses`, :mod:`nnparity.optim` or
:mod:`nnparity.numpy_backend`: the edited modules are compiled afresh, off to the side, and the
mutant is their ``NumpyBackend``. Nothing is patched in place, so the real backend stays right.
Each mutant names the small network on which its bug shows and where the verifier must report
it: the step, stage, layer and tensor. An edit whose text is no longer in the source fails
loudly, so the catalog cannot silently drift from the code it mutates.

Mutants are importable backends, ``nnparity verify --candidate nnparity.mutants:MissingFactorTwo``.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import sys
import types
from collections.abc import Iterable
from typing import Any, NamedTuple

import numpy as np

from nnparity.errors import NnparityError
from nnparity.optim import SGD
from nnparity.spec import NetworkSpec

# The files a mutant may edit, in import order (a later one imports from the earlier ones).
FILES = ("activations", "losses", "optim", "numpy_backend")
STEPS = 3


class Edit(NamedTuple):
    """Replace ``old`` (which must occur exactly once) by ``new`` in ``nnparity/<file>.py``."""

    file: str
    old: str
    new: str


class Place(NamedTuple):
    step: int
    stage: str
    layer: int | None
    tensor: str

    def __str__(self) -> str:
        layer = "-" if self.layer is None else self.layer
        return f"step {self.step} {self.stage} {layer} {self.tensor}"


class Mutant(NamedTuple):
    name: str
    kind: str
    description: str
    edits: tuple[Edit, ...]
    network: str
    expected: Place


_DEEP = NetworkSpec((3, 5, 4, 2), ("sigmoid", "tanh", "identity"), bias=True, optimizer=SGD(0.05))
NETWORKS: dict[str, NetworkSpec] = {
    # Gradients are compared layer 2 weight, layer 2 bias, layer 1 weight, ...: each layer
    # has its own activation, so a derivative's bug is placed at the layer that uses it.
    "deep": _DEEP,
    "relu": dataclasses.replace(_DEEP, activations=("relu", "relu", "identity")),
    # Square weights: a missing transpose still has the right shape.
    "cube": NetworkSpec((3, 3, 3, 3), ("tanh", "tanh", "identity"), optimizer=SGD(0.05)),
    "softmax": NetworkSpec((3, 4, 3), ("tanh", "identity"), bias=True, loss="cross_entropy"),
    "momentum": dataclasses.replace(
        _DEEP, optimizer=SGD(0.05, momentum=0.9, dampening=0.3, weight_decay=0.01)
    ),
    "nesterov": dataclasses.replace(_DEEP, optimizer=SGD(0.05, momentum=0.9, nesterov=True)),
}


def _mutant(
    name: str, kind: str, description: str, network: str, expected: Place, *edits: tuple[str, str, str]
) -> Mutant:
    return Mutant(name, kind, description, tuple(Edit(*e) for e in edits), network, expected)


CATALOG: dict[str, Mutant] = {
    m.name: m
    for m in (
        _mutant(
            "SigmoidDerivativeOfInput",
            "wrong derivative",
            "sigmoid's derivative taken of the pre-activation: z (1 - z) instead of a (1 - a)",
            "deep",
            Place(0, "gradient", 0, "weight"),
            ("activations", "return a * (1.0 - a)", "return z * (1.0 - z)"),
        ),
        _mutant(
            "TanhDerivativeOfInput",
            "wrong derivative",
            "tanh's derivative taken of the pre-activation: 1 - z^2 instead of 1 - a^2",
            "deep",
            Place(0, "gradient", 1, "weight"),
            ("activations", "return 1.0 - a * a", "return 1.0 - z * z"),
        ),
        _mutant(
            "ReluGradientEverywhere",
            "wrong derivative",
            "ReLU's derivative is 1 where the output is 0 too (a >= 0 instead of a > 0)",
            "relu",
            Place(0, "gradient", 1, "weight"),
            ("activations", "(a > 0.0).astype(z.dtype)", "(a >= 0.0).astype(z.dtype)"),
        ),
        _mutant(
            "MissingFactorTwo",
            "forgotten factor",
            "dE/df of the squared error without its 2: (f - y) / N",
            "deep",
            Place(0, "gradient", 2, "weight"),
            ("losses", "(a - y) * _norm(a.size, reduction, 2.0)", "(a - y) * _norm(a.size, reduction)"),
        ),
        _mutant(
            "LossMeanOverRows",
            "wrong reduction",
            "the loss's mean divides by the rows, not by rows x outputs",
            "deep",
            Place(0, "loss", None, "loss"),
            ("losses", "total / per_item.size", "total / len(per_item)"),
        ),
        _mutant(
            "SoftmaxOverBatch",
            "wrong axis",
            "log-softmax normalises over the batch (axis 0) instead of the classes",
            "softmax",
            Place(0, "loss", None, "loss"),
            (
                "losses",
                "np.exp(shifted).sum(axis=1, keepdims=True)",
                "np.exp(shifted).sum(axis=0, keepdims=True)",
            ),
        ),
        _mutant(
            "CrossEntropyMeanOverElements",
            "wrong reduction",
            "cross-entropy's gradient divides by rows x classes instead of the rows",
            "softmax",
            Place(0, "gradient", 1, "weight"),
            ("losses", "-y * _norm(a.shape[0], reduction)", "-y * _norm(a.size, reduction)"),
        ),
        _mutant(
            "BiasGradientMean",
            "wrong reduction",
            "the bias gradient averaged over the rows instead of summed",
            "deep",
            Place(0, "gradient", 2, "bias"),
            ("numpy_backend", "dE_dz.sum(axis=0)", "dE_dz.mean(axis=0)"),
        ),
        _mutant(
            "ForwardWithoutBias",
            "forgotten term",
            "the forward pass forgets the bias: z = a_prev @ W",
            "deep",
            Place(0, "forward", 0, "activation"),
            (
                "numpy_backend",
                "z = np.dot(a, W) if b is None else np.dot(a, W) + b",
                "z = np.dot(a, W)",
            ),
        ),
        _mutant(
            "HiddenDerivativeForgotten",
            "forgotten term",
            "only the output layer multiplies by its activation's derivative",
            "deep",
            Place(0, "gradient", 1, "weight"),
            (
                "numpy_backend",
                "dE_dz = dE_da * da_dz\n",
                "dE_dz = dE_da * da_dz if l == n - 1 else dE_da\n",
            ),
        ),
        _mutant(
            "UntransposedBackprop",
            "transposed product",
            "the error goes back through W instead of W.T (square layers, so the shapes fit)",
            "cube",
            Place(0, "gradient", 1, "weight"),
            ("numpy_backend", "dE_da = np.dot(dE_dz, dz_da.T)", "dE_da = np.dot(dE_dz, dz_da)"),
        ),
        _mutant(
            "BackpropThroughUpdatedWeights",
            "wrong order of steps",
            "each layer is updated before the error goes back through it",
            "deep",
            Place(0, "gradient", 1, "weight"),
            (
                "numpy_backend",
                "dz_da = self._weights[l]",
                "dz_da = self._weights[l] - self._optimizer.lr * dE_dW[l]",
            ),
        ),
        _mutant(
            "Float32Inputs",
            "precision loss",
            "the inputs are rounded to float32 in a float64 network",
            "deep",
            Place(0, "forward", 0, "activation"),
            ("numpy_backend", "a = x\n", "a = x.astype(np.float32)\n"),
        ),
        _mutant(
            "BiasNeverUpdated",
            "forgotten term",
            "the updated biases are computed but never stored",
            "deep",
            Place(0, "update", 0, "bias"),
            (
                "numpy_backend",
                "self._weights, self._biases[:] = new[0::2], new[1::2]",
                "self._weights = new[0::2]",
            ),
        ),
        _mutant(
            "GradientAscent",
            "wrong sign",
            "the update climbs the gradient: p + lr g",
            "deep",
            Place(0, "update", 0, "weight"),
            ("optim", "p + (-opt.lr) * g", "p + opt.lr * g"),
        ),
        _mutant(
            "MomentumBufferFromZero",
            "optimizer state",
            "the momentum buffer starts at zero, so the first step is dampened",
            "momentum",
            Place(0, "update", 0, "weight"),
            ("optim", 'buf = g.copy(order="K")', "buf = (1.0 - opt.dampening) * g"),
        ),
        _mutant(
            "DampeningIgnored",
            "optimizer option ignored",
            "momentum without dampening: right at step 0 (the buffer is the gradient), wrong after",
            "momentum",
            Place(1, "update", 0, "weight"),
            ("optim", "buf * opt.momentum + (1.0 - opt.dampening) * g", "buf * opt.momentum + g"),
        ),
        _mutant(
            "NesterovIgnored",
            "optimizer option ignored",
            "Nesterov momentum applied as plain momentum",
            "nesterov",
            Place(0, "update", 0, "weight"),
            ("optim", "g = g + opt.momentum * buf if opt.nesterov else buf", "g = buf"),
        ),
        _mutant(
            "WeightDecayAfterMomentum",
            "wrong order of steps",
            "weight decay added after the momentum buffer instead of before: same first step, wrong after",
            "momentum",
            Place(1, "update", 0, "weight"),
            ("optim", "g = g + opt.weight_decay * p", "pass"),
            (
                "optim",
                "g = g + opt.momentum * buf if opt.nesterov else buf",
                "g = (g + opt.momentum * buf if opt.nesterov else buf) + opt.weight_decay * p",
            ),
        ),
        _mutant(
            "WeightDecayWrongSign",
            "wrong sign",
            "weight decay subtracted from the gradient: g - wd p",
            "momentum",
            Place(0, "update", 0, "weight"),
            ("optim", "g = g + opt.weight_decay * p", "g = g - opt.weight_decay * p"),
        ),
    )
}

_BUILT: dict[str, type] = {}


def __getattr__(name: str) -> type:
    """``nnparity.mutants.NAME``: the mutant's backend class, built on first use."""
    if name in CATALOG:
        return mutant_backend(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(CATALOG))


def mutant_backend(name: str) -> type:
    """The backend class of the mutant ``name``: ``NumpyBackend`` compiled from the edited source."""
    if name not in CATALOG:
        raise NnparityError(f"Unknown mutant {name!r}; the catalog has {', '.join(CATALOG)}.")
    if name not in _BUILT:
        mutant = CATALOG[name]
        module = patched_modules(mutant.edits, tag=name)["numpy_backend"]
        _BUILT[name] = type(
            name,
            (module.NumpyBackend,),
            {"__module__": __name__, "__qualname__": name, "__doc__": f"Mutant: {mutant.description}."},
        )
    return _BUILT[name]


def patched_modules(edits: Iterable[Edit], *, tag: str) -> dict[str, types.ModuleType]:
    """Fresh copies of the edited modules and of ``numpy_backend``, wired to each other."""
    edits = list(edits)
    unknown = {e.file for e in edits} - set(FILES)
    if unknown:
        raise NnparityError(
            f"Mutant {tag}: can only edit {', '.join(FILES)}, not {', '.join(sorted(unknown))}."
        )
    built: dict[str, types.ModuleType] = {}
    for short in FILES:
        mine = [e for e in edits if e.file == short]
        if not mine and short != "numpy_backend":
            continue
        original = importlib.import_module(f"nnparity.{short}")
        source = inspect.getsource(original)
        for edit in mine:
            count = source.count(edit.old)
            if count != 1:
                raise NnparityError(
                    f"Mutant {tag}: {edit.old!r} occurs {count} times in nnparity/{short}.py, not once; "
                    "update the mutant to the current source."
                )
            source = source.replace(edit.old, edit.new)
        name = f"nnparity._mutant_{tag}.{short}"
        module = types.ModuleType(name, original.__doc__)
        module.__file__ = original.__file__
        sys.modules[name] = module  # dataclasses look their module up while the class is made
        exec(compile(source, f"{original.__file__} ({tag})", "exec"), module.__dict__)
        # Names imported from an edited module are rebound to its edited copy.
        for dep_short, dep in built.items():
            dep_original = importlib.import_module(f"nnparity.{dep_short}")
            for attr, value in list(vars(module).items()):
                if not attr.startswith("__") and getattr(dep_original, attr, None) is value:
                    setattr(module, attr, getattr(dep, attr))
        built[short] = module
    return built


def describe_edits(mutant: Mutant) -> str:
    """``file.py:line: old -> new`` of the mutant's first edit, and how many more it makes."""
    first, more = mutant.edits[0], len(mutant.edits) - 1
    return f"{first.file}.py:{edit_line(first)}: {first.old.strip()} -> {first.new.strip()}" + (
        f" (and {more} more)" if more else ""
    )


def edit_line(edit: Edit) -> int:
    """The line of ``nnparity/<file>.py`` that the edit changes (1-based)."""
    source = inspect.getsource(importlib.import_module(f"nnparity.{edit.file}"))
    return source[: source.find(edit.old)].count("\n") + 1


def problem(mutant: Mutant) -> tuple[NetworkSpec, np.ndarray, np.ndarray, list[Any]]:
    """The mutant's network, a batch and starting weights (all from NumPy's seeded generator)."""
    from nnparity.suite.cases import batch, start

    spec = NETWORKS[mutant.network]
    x, y = batch(spec, seed=7)
    return spec, x, y, start(spec, seed=7)


COLUMNS = ["mutant", "kind", "network", "caught", "found", "expected", "placed", "verdict", "edit"]


def check_mutants(
    names: Iterable[str] | None = None,
    *,
    mode: str = "resync",
    reference: str | type = "torch",
    steps: int = STEPS,
) -> Any:
    """Verify each mutant against ``reference``; one row per mutant (a pandas DataFrame).

    ``caught`` is whether the run diverged, ``found`` where, ``expected`` where it should have,
    ``placed`` whether the two agree, and ``verdict`` which side the diagnosis blames (for
    information: the exit status of ``nnparity mutants`` depends on ``caught`` and ``placed``).
    """
    import pandas as pd

    from nnparity.verify import verify

    chosen = list(CATALOG) if names is None else list(names)
    rows = []
    for name in chosen:
        cls = mutant_backend(name)
        mutant = CATALOG[name]
        spec, x, y, params = problem(mutant)
        report = verify(spec, x, y, steps=steps, params=params, candidate=cls, reference=reference, mode=mode)
        d = report.first_divergence
        found = None if d is None else Place(d.step, d.stage, d.layer, d.tensor)
        rows.append(
            {
                "mutant": name,
                "kind": mutant.kind,
                "network": mutant.network,
                "caught": d is not None,
                "found": "-" if found is None else str(found),
                "expected": str(mutant.expected),
                "placed": found == mutant.expected,
                "verdict": "-" if d is None else d.verdict or "-",
                "edit": describe_edits(mutant),
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS)


def all_placed(frame: Any) -> bool:
    return bool(len(frame)) and bool(frame["caught"].all()) and bool(frame["placed"].all())


# --- command line: nnparity mutants -------------------------------------------------------------------


def add_mutants_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "mutants",
        help="plant realistic backprop bugs in the NumPy backend and check each is caught in the right place",
        description="Verify each mutant of the NumPy backend (a one-line edit of its source) against the "
        "reference, and report whether it was caught and at which step, stage, layer and tensor. "
        "Exit 0 only when every mutant is caught where it should be.",
    )
    parser.add_argument("--only", metavar="NAMES", help="comma-separated mutant names (default: all)")
    parser.add_argument("--mode", choices=("free", "resync"), default="resync", help="default resync")
    parser.add_argument("--list", action="store_true", help="list the catalog and exit")
    parser.add_argument("--json", action="store_true", help="print the table as JSON records")
    return parser


def run_mutants(args: argparse.Namespace) -> int:
    """``nnparity mutants``: 0 when every mutant is caught and placed, 1 otherwise, 2 for bad names."""
    import pandas as pd

    if args.list:
        listing = pd.DataFrame(
            [(m.name, m.kind, m.network, str(m.expected), m.description) for m in CATALOG.values()],
            columns=["mutant", "kind", "network", "expected", "description"],
        )
        print(listing.to_string(index=False))
        return 0
    names = None
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in CATALOG]
        if unknown or not names:
            raise NnparityError(
                f"Unknown mutant {', '.join(map(repr, unknown or [args.only]))}; see nnparity mutants --list."
            )
    frame = check_mutants(names, mode=args.mode)
    if args.json:
        print(frame.to_json(orient="records", indent=2))
    else:
        with pd.option_context("display.max_colwidth", 70, "display.width", 250):
            print(frame.to_string(index=False))
        good = int((frame["caught"] & frame["placed"]).sum())
        print(f"\n{good} of {len(frame)} mutants caught and placed correctly (mode {args.mode}).")
    return 0 if all_placed(frame) else 1
