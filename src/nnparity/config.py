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

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nnparity.errors import NnparityError
from nnparity.initialization import SCHEMES
from nnparity.optim import SGD
from nnparity.spec import NetworkSpec
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
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise NnparityError(f"Cannot read config file {str(path)!r}: {exc.strerror or exc}.") from exc
    except UnicodeDecodeError as exc:
        raise NnparityError(f"{path}: byte {exc.start} is not UTF-8 text; save the config as UTF-8.") from exc
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise NnparityError(f"{path} is not valid TOML: {exc}.") from exc
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
    try:
        optimizer = SGD(
            lr=get("optimizer", "lr", 0.05),
            momentum=get("optimizer", "momentum", 0.0),
            dampening=get("optimizer", "dampening", 0.0),
            weight_decay=get("optimizer", "weight_decay", 0.0),
            nesterov=get("optimizer", "nesterov", False),
        )
        sizes = get("network", "sizes", [2, 3, 1])
        spec = NetworkSpec(
            sizes=tuple(sizes),
            activations=tuple(get("network", "activations", ["sigmoid"] * (len(sizes) - 1))),
            bias=get("network", "bias", False),
            loss=get("loss", "name", "mse"),
            reduction=get("loss", "reduction", "mean"),
            optimizer=optimizer,
            dtype=get("network", "dtype", "float64"),
        )
    except NnparityError as exc:
        raise NnparityError(where + str(exc)) from exc
    scheme = get("init", "scheme", "numpy-rand")
    if scheme not in SCHEMES:
        raise NnparityError(f"{where}[init] scheme {scheme!r} is unknown; choose from {', '.join(SCHEMES)}.")
    seed = get("init", "seed", 1)
    if not 0 <= seed < 2**32:
        raise NnparityError(f"{where}[init] seed must be from 0 to 2**32 - 1; got {seed}.")
    steps = get("train", "steps", NOTEBOOK_STEPS)
    check_steps(steps, where + "[train] steps")
    mode = get("train", "mode", "free")
    if mode not in MODES:
        raise NnparityError(f"{where}[train] mode {mode!r} is unknown; choose from {', '.join(MODES)}.")
    rtol, atol = get("train", "rtol", None), get("train", "atol", None)
    if (rtol is None) != (atol is None):
        raise NnparityError(f"{where}[train] rtol and atol go together: give both or neither.")
    csv = get("data", "csv", None)
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


def check_steps(steps: int, what: str) -> None:
    if not 1 <= steps <= MAX_STEPS:
        raise NnparityError(f"{what} must be from 1 to {MAX_STEPS:,}; got {steps}.")


def _sections() -> str:
    return ", ".join(f"[{s}]" for s in SCHEMA)
