"""Training data: the notebook's OR table, and CSV files in the notebook's shape.

A CSV file has a header row; an optional index column (a row label such as the
notebook's ``observation``) is dropped, the target columns (default: the last)
are the targets, and every other column is an input, in file order.
"""

from __future__ import annotations

import csv
import io
from importlib import resources
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from nnparity.errors import NnparityError

# Floats must read back exactly as written (a reproduction's data, say): pandas 3 does so by
# default, pandas 2 when asked.
_PANDAS_MAJOR = int(pd.__version__.split(".")[0])
_EXACT_FLOATS: dict[str, str] = {} if _PANDAS_MAJOR >= 3 else {"float_precision": "round_trip"}


class Dataset(NamedTuple):
    """Inputs ``x`` and targets ``y`` as float arrays, and the table they came from."""

    x: np.ndarray
    y: np.ndarray
    frame: pd.DataFrame


def or_table() -> Dataset:
    """The notebook's OR table, with ``observation`` as the index and float32 arrays as it builds them."""
    text = resources.files("nnparity.data").joinpath("or.csv").read_text(encoding="utf-8")
    return read_table(text, "the OR table", index="observation")


def load_csv(path: str | Path, *, index: str | None = None, targets: list[str] | None = None) -> Dataset:
    """Read ``path``: drop the ``index`` column, ``targets`` (default: the last column) are targets."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise NnparityError(f"Cannot read data file {str(path)!r}: {exc.strerror or exc}.") from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise NnparityError(
            f"{path}: byte {exc.start} is not UTF-8 text; save the file as UTF-8 CSV."
        ) from exc
    return read_table(text, str(path), index=index, targets=targets)


def read_table(
    text: str, name: str, *, index: str | None = None, targets: list[str] | None = None
) -> Dataset:
    """Parse CSV ``text`` (``name`` is used in messages) into inputs and targets."""
    if not text.strip():
        raise NnparityError(f"{name} is empty; it needs a header row and at least one data row.")
    try:
        frame = pd.read_csv(io.StringIO(text), skipinitialspace=True, **_EXACT_FLOATS)
    except (pd.errors.ParserError, csv.Error, ValueError) as exc:
        raise NnparityError(f"{name} is not valid CSV: {str(exc).strip()}.") from exc
    if frame.empty:
        raise NnparityError(f"{name} has a header but no data rows.")
    columns = [str(c) for c in frame.columns]
    frame.columns = columns
    if index is not None:
        if index not in columns:
            raise NnparityError(
                f"{name} has no index column {index!r}; its columns are {', '.join(columns)}."
            )
        frame = frame.set_index(index)
    available = list(frame.columns)
    targets = list(targets) if targets else available[-1:]
    for col in targets:
        if col not in available:
            raise NnparityError(
                f"{name} has no target column {col!r}; its columns are {', '.join(available)}."
            )
    inputs = [c for c in available if c not in targets]
    if not inputs:
        raise NnparityError(f"{name} has no input columns besides the targets {', '.join(targets)}.")
    for col in available:
        values = pd.to_numeric(frame[col], errors="coerce")
        bad = values.isna() | ~np.isfinite(values.to_numpy(dtype=float, na_value=np.nan))
        if bad.any():
            row = int(np.argmax(bad.to_numpy()))
            cell = frame[col].iloc[row]
            raise NnparityError(
                f"{name}: column {col!r}, data row {row + 1} holds {cell!r}, "
                "which is not a finite number; every cell must be one."
            )
        frame[col] = values
    x = np.array(frame[inputs].to_numpy(dtype="float64"))  # writable copies: pandas' are read-only
    y = np.array(frame[targets].to_numpy(dtype="float64"))
    return Dataset(x, y, frame)
