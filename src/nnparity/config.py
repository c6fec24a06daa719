"""Run configuration files (TOML), validated once, here, with messages that name the key.

Every key is optional and defaults to the notebook's experiment::

    [network]    sizes = [2, 3, 1], activations = ["sigmoid", "sigmoid"], bias = false, dtype = "float64"
    [loss]       name = "mse", reduction = "mean"
    [optimizer]  lr = 0.05, momentum = 0, dampening = 0, weight_decay = 0, nesterov = false
    [init]       scheme = "numpy-rand", seed = 1
    [train]      steps = 10000, mode = "free", rtol / atol (together; default: the dtype's)
    [data]       csv = "or.csv" (relative to this file), index = "observation", targets = ["output"]

Without ``[data] csv`` the network trains on the notebook's OR table.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nnparity.activations import ACTIVATIONS
from nnparity.errors import NnparityError
from nnparity.initialization import SCHEMES
from nnparity.losses import LOSSES, REDUCTIONS
from nnparity.optim import SGD
from nnparity.spec import DTYPES, NetworkSpec
from nnparity.verify import MODES

NOTEBOOK_STEPS = 10_000
MAX_STEPS = 10**9

# section -> key -> (accepted types, what to write)
SCHEMA: dict[str, dict[str, tuple[tuple[type, ...], str]]] = {
    "network": {
        "sizes": ((list,), "a list of widths such as [2, 3, 1]"),
        "activations": ((list,), 'a list of names such as ["sigmoid", "sigmoid"]'),
        "bias": ((bool,), "true or false"),
        "dtype": ((str,), '"float32" or "float64"'),
    },
    "loss": {"name": ((str,), 'a loss name such as "mse"'), "reduction": ((str,), '"mean" or "sum"')},
    "optimizer": {
        "lr": ((int, float), "a number"),
        "momentum": ((int, float), "a number"),
        "dampening": ((int, float), "a number"),
        "weight_decay": ((int, float), "a number"),
        "nesterov": ((bool,), "true or false"),
    },
    "init": {"scheme": ((str,), f"one of {', '.join(SCHEMES)}"), "seed": ((int,), "a whole number")},
    "train": {
        "steps": ((int,), "a whole number of steps"),
        "mode": ((str,), f"one of {', '.join(MODES)}"),
        "rtol": ((int, float), "a number"),
        "atol": ((int, float), "a number"),
    },
    "data": {
        "csv": ((str,), "a path to a CSV file"),
        "index": ((str,), "a column name"),
        "targets": ((list,), 'a list of column names such as ["output"]'),
    },
}


# keys whose value is one name from a fixed list
CHOICES: dict[tuple[str, str], tuple[str, ...]] = {
    ("network", "dtype"): DTYPES,
    ("loss", "name"): tuple(LOSSES),
    ("loss", "reduction"): REDUCTIONS,
    ("init", "scheme"): SCHEMES,
    ("train", "mode"): MODES,
}


@dataclass(frozen=True)
class RunConfig:
    """Everything one verification run needs besides the backends."""

    spec: NetworkSpec = field(default_factory=lambda: NetworkSpec((2, 3, 1), ("sigmoid", "sigmoid")))
    scheme: str = "numpy-rand"
    seed: int = 1
    steps: int = NOTEBOOK_STEPS
    mode: str = "free"
    rtol: float | None = None
    atol: float | None = None
    csv: Path | None = None
    index: str | None = None
    targets: list[str] | None = None


def load_config(path: str | Path) -> RunConfig:
    """Read and validate a TOML run configuration."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")  # a byte-order mark, as some editors write
    except UnicodeDecodeError as exc:
        raise NnparityError(f"{path}: byte {exc.start} is not UTF-8 text; save the config as UTF-8.") from exc
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        reason = getattr(exc, "strerror", None) or exc
        raise NnparityError(f"Cannot read config file {str(path)!r}: {reason}.") from exc
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        last_line = text.count("\n") + 1  # tomllib's numbering
        reason = str(exc).replace("at end of document", f"at the end, line {last_line}")
        raise NnparityError(f"{path} is not valid TOML: {reason}.") from exc
    return parse_config(doc, str(path), base=path.parent)


def parse_config(doc: dict[str, Any], name: str = "config", base: Path | None = None) -> RunConfig:
    """Validate a parsed TOML document; ``base`` is where relative data paths start."""
    for section, body in doc.items():
        if section not in SCHEMA:
            raise NnparityError(f"{name}: unknown section [{section}]; sections are {_sections()}.")
        if not isinstance(body, dict):
            raise NnparityError(f"{name}: {section} must be a [{section}] table, not a value.")
        for key, value in body.items():
            if key not in SCHEMA[section]:
                known = ", ".join(SCHEMA[section])
                raise NnparityError(f"{name}: unknown key {key!r} in [{section}]; known keys are {known}.")
            types, expected = SCHEMA[section][key]
            if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
                raise NnparityError(f"{name}: [{section}] {key} must be {expected}; got {value!r}.")

    def get(section: str, key: str, default: Any) -> Any:
        return doc.get(section, {}).get(key, default)

    where = f"{name}: "
    for (section, key), options in CHOICES.items():
        value = get(section, key, None)
        if value is not None and value not in options:
            raise NnparityError(
                f"{where}[{section}] {key} {value!r} is unknown; choose from {', '.join(options)}."
            )
    sizes = get("network", "sizes", [2, 3, 1])
    if len(sizes) < 2 or not all(type(width) is int and width >= 1 for width in sizes):
        raise NnparityError(
            f"{where}[network] sizes must list at least an input and an output width, each a whole "
            f"number >= 1, such as [2, 3, 1]; got {sizes!r}."
        )
    activations = get("network", "activations", ["sigmoid"] * (len(sizes) - 1))
    for act in activations:
        if not isinstance(act, str) or act not in ACTIVATIONS:
            raise NnparityError(
                f"{where}[network] activations: {act!r} is not an activation; "
                f"choose from {', '.join(ACTIVATIONS)}."
            )
    if len(activations) != len(sizes) - 1:
        raise NnparityError(
            f"{where}[network] activations has {len(activations)} names, but sizes {sizes!r} has "
            f"{_layers(len(sizes) - 1)}; give one activation per weight layer."
        )
    try:
        optimizer = SGD(
            lr=get("optimizer", "lr", 0.05),
            momentum=get("optimizer", "momentum", 0.0),
            dampening=get("optimizer", "dampening", 0.0),
            weight_decay=get("optimizer", "weight_decay", 0.0),
            nesterov=get("optimizer", "nesterov", False),
        )
    except NnparityError as exc:
        raise NnparityError(f"{where}[optimizer] {exc}") from exc
    try:
        spec = NetworkSpec(
            sizes=tuple(sizes),
            activations=tuple(activations),
            bias=get("network", "bias", False),
            loss=get("loss", "name", "mse"),
            reduction=get("loss", "reduction", "mean"),
            optimizer=optimizer,
            dtype=get("network", "dtype", "float64"),
        )
    except NnparityError as exc:
        raise NnparityError(where + str(exc)) from exc
    scheme = get("init", "scheme", "numpy-rand")
    seed = get("init", "seed", 1)
    if not 0 <= seed < 2**32:
        raise NnparityError(f"{where}[init] seed must be from 0 to 2**32 - 1; got {seed}.")
    steps = get("train", "steps", NOTEBOOK_STEPS)
    _check_steps(steps, where + "[train] steps")
    mode = get("train", "mode", "free")
    rtol, atol = get("train", "rtol", None), get("train", "atol", None)
    if (rtol is None) != (atol is None):
        raise NnparityError(f"{where}[train] rtol and atol go together: give both or neither.")
    for key, tol in (("rtol", rtol), ("atol", atol)):
        if tol is not None and not (math.isfinite(tol) and tol >= 0):
            raise NnparityError(f"{where}[train] {key} must be a finite number >= 0; got {tol!r}.")
    csv = get("data", "csv", None)
    if csv is not None and not csv.strip():
        raise NnparityError(f"{where}[data] csv is empty; name a CSV file, or leave the key out.")
    targets = get("data", "targets", None)
    if targets is not None and (not targets or not all(isinstance(t, str) for t in targets)):
        raise NnparityError(
            f"{where}[data] targets must be a non-empty list of column names; got {targets!r}."
        )
    return RunConfig(
        spec=spec,
        scheme=scheme,
        seed=seed,
        steps=steps,
        mode=mode,
        rtol=rtol,
        atol=atol,
        csv=None if csv is None else (base or Path.cwd()) / csv,
        index=get("data", "index", None),
        targets=targets,
    )


def _check_steps(steps: int, what: str) -> None:
    if not 1 <= steps <= MAX_STEPS:
        raise NnparityError(f"{what} must be from 1 to {MAX_STEPS:,}; got {steps}.")


def _sections() -> str:
    return ", ".join(f"[{s}]" for s in SCHEMA)


def _layers(n: int) -> str:
    return f"{n} weight layer" + ("" if n == 1 else "s")
