"""Training data: the notebook's OR table, and CSV files in the notebook's shape.

A CSV file has a header row; an optional index column (a row label such as the
notebook's ``observation``) is dropped, the target columns (default: the last)
are the targets, and every other column is an input, in file order.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Sequence
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
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        reason = getattr(exc, "strerror", None) or exc
        raise NnparityError(f"Cannot read data file {str(path)!r}: {reason}.") from exc
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
    rows = _rows(text, name)
    try:
        frame = pd.read_csv(io.StringIO(text), skipinitialspace=True, keep_default_na=False, **_EXACT_FLOATS)
    except (pd.errors.ParserError, csv.Error, ValueError) as exc:
        raise NnparityError(f"{name} is not valid CSV: {str(exc).strip()}.") from exc
    if frame.empty:
        raise NnparityError(f"{name} has a header but no data rows.")
    columns = [str(c) for c in frame.columns]
    frame.columns = columns
    cells = dict(zip(columns, zip(*rows[1:]))) if len(columns) == len(rows[0]) else {}
    if index is not None:
        if index not in columns:
            raise NnparityError(
                f"{name} has no index column {index!r}; its columns are {', '.join(columns)}."
            )
        frame = frame.set_index(index)
    available = list(frame.columns)
    targets = list(targets) if targets else available[-1:]
    twice = next((col for i, col in enumerate(targets) if col in targets[:i]), None)
    if twice is not None:
        raise NnparityError(f"{name}: the targets name column {twice!r} twice; name each target once.")
    for col in targets:
        if col not in available:
            raise NnparityError(
                f"{name} has no target column {col!r}; its columns are {', '.join(available)}."
            )
    inputs = [c for c in available if c not in targets]
    if not inputs:
        raise NnparityError(f"{name} has no input columns besides the targets {', '.join(targets)}.")
    for col in available:
        frame[col] = _numbers(frame[col], cells.get(col), f"{name}: column {col!r}")
    x = np.array(frame[inputs].to_numpy(dtype="float64"))  # writable copies: pandas' are read-only
    y = np.array(frame[targets].to_numpy(dtype="float64"))
    return Dataset(x, y, frame)


def _rows(text: str, name: str) -> list[list[str]]:
    """The rows as text, after checking for a header of distinct, non-empty names and as many
    cells in every row as it names.

    pandas would quietly turn a row with one cell too many into a row label, number a
    repeated name ``a.1`` and fill short rows with NaN; here each is a sentence instead.
    """
    reader = csv.reader(io.StringIO(text, newline=""), skipinitialspace=True, strict=True)
    try:
        # pandas skips blank lines (nothing but spaces), so these do too
        rows = [row for row in reader if len(row) > 1 or (row and row[0].strip())]
    except csv.Error as exc:
        raise NnparityError(f"{name} is not valid CSV: {exc} (line {reader.line_num}).") from exc
    if not rows:
        raise NnparityError(f"{name} has only blank lines; it needs a header row and at least one data row.")
    header = rows[0]
    for number, column in enumerate(header, start=1):
        if not column.strip():
            raise NnparityError(
                f"{name}: column {number} has no name in the header row; name every column "
                "(a row label too, and pass it as the index column)."
            )
        if header.index(column) != number - 1:
            raise NnparityError(
                f"{name}: the header row names column {column!r} twice; give every column its own name."
            )
    for number, row in enumerate(rows[1:], start=1):
        if len(row) != len(header):
            cells = f"{len(row)} cell" + ("" if len(row) == 1 else "s")
            raise NnparityError(
                f"{name}: data row {number} has {cells}, but the header row names "
                f"{len(header)} columns; every row needs one cell per column."
            )
    return rows


def _numbers(column: pd.Series, text: Sequence[str] | None, what: str) -> pd.Series:
    """``column`` as numbers (integers stay integers), or a sentence naming its first bad cell
    as ``text`` (the column's cells as written, when known) has it."""
    if column.dtype.kind in "iuf":
        values = column
    else:  # text, or booleans pandas read from True/False: float() decides, as Python reads numbers
        values = pd.Series([_float(cell) for cell in column], index=column.index, dtype="float64")
    bad = ~np.isfinite(values.to_numpy(dtype="float64"))
    if bad.any():
        row = int(np.argmax(bad))
        cell = text[row] if text is not None and len(text) == len(column) else column.iloc[row]
        shown = repr(cell if isinstance(cell, str) else str(cell))
        shown = shown if len(shown) <= 40 else shown[:36] + "...'"
        raise NnparityError(
            f"{what}, data row {row + 1} holds {shown}, which is not a finite number; every cell must be one."
        )
    return values


# A number as a CSV file writes one: ASCII digits, a point, an exponent (not Python's 1_000, nor
# digits of other scripts, which float() also reads).
_NUMBER = re.compile(r"\s*[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\s*")


def _float(cell: object) -> float:
    """``cell`` as a float if it is written as a number, else NaN (reported by the caller)."""
    if isinstance(cell, bool) or not isinstance(cell, (str, int)):
        return math.nan
    text = str(cell)
    return float(text) if _NUMBER.fullmatch(text) else math.nan


def check_range(data: Dataset, dtype: str, name: str) -> None:
    """Raise unless every number in ``data`` fits in ``dtype`` (float32 ends at about 3.4e38)."""
    limit = float(np.finfo(dtype).max)
    for col in data.frame.columns:
        values = data.frame[col].to_numpy(dtype="float64")
        too_big = np.abs(values) > limit
        if too_big.any():
            row = int(np.argmax(too_big))
            raise NnparityError(
                f"{name}: column {col!r}, data row {row + 1} holds {values[row]:g}, which is beyond "
                f"{dtype}'s range (±{limit:.3g}); use float64 or scale the data down."
            )
