"""Fuzzing the config and CSV loaders: whatever a file holds, the only exception is NnparityError.

Random text and bytes first, then documents built from the keys and cells the loaders know, with
values chosen to hit the edges (wrong types, non-finite numbers, empty strings, quotes, unicode),
and last the whole command line, which must exit 0, 1 or 2 and never raise.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import string
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from nnparity import NnparityError
from nnparity.activations import ACTIVATIONS
from nnparity.cli import main
from nnparity.config import SCHEMA, RunConfig, load_config, parse_config
from nnparity.dataset import Dataset, load_csv, read_table

T = TypeVar("T")
OR_CSV = "a,b,y\n0,0,0\n0,1,1\n1,0,1\n1,1,1\n"  # fits sizes [2, ..., 1]
# The command line runs two backends per example; half the profile's examples keep it quick.
CLI_EXAMPLES = max(10, (settings.default or settings()).max_examples // 2)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One directory for every example (hypothesis does not mix with per-test tmp_path)."""
    return tmp_path_factory.mktemp("fuzz")


def write(folder: Path, name: str, content: str | bytes) -> Path:
    path = folder / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8", errors="surrogatepass")
    return path


def attempt(func: Callable[..., T], *args: Any, **kwargs: Any) -> T | str:
    """``func``'s result, or the message of the NnparityError it raised; any other exception escapes."""
    try:
        return func(*args, **kwargs)
    except NnparityError as exc:
        return str(exc)


def loaded_config(path: Path) -> None:
    config = attempt(load_config, path)
    if isinstance(config, str):
        assert config.endswith("."), "an error is a sentence"
    else:
        assert isinstance(config, RunConfig)


def loaded_csv(path: Path, index: str | None = None, targets: list[str] | None = None) -> None:
    data = attempt(load_csv, path, index=index, targets=targets)
    if isinstance(data, str):
        assert data.endswith("."), "an error is a sentence"
    else:
        check_dataset(data)


def check_dataset(data: Dataset) -> None:
    """What a loaded table promises: finite float64 arrays, a row each, at least one column each."""
    for arr in (data.x, data.y):
        assert arr.dtype == np.float64
        assert arr.ndim == 2
        assert arr.shape[1] >= 1
        assert np.isfinite(arr).all()
    assert data.x.shape[0] == data.y.shape[0] == len(data.frame) >= 1


# --- random text and bytes ------------------------------------------------------------------------

hyp = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])


@hyp
@given(text=st.text())
def test_config_from_random_text(folder: Path, text: str) -> None:
    loaded_config(write(folder, "random.toml", text))


@hyp
@given(raw=st.binary())
def test_config_from_random_bytes(folder: Path, raw: bytes) -> None:
    loaded_config(write(folder, "random.toml", raw))


@hyp
@given(
    text=st.text(), index=st.none() | st.text(max_size=3), targets=st.none() | st.lists(st.text(max_size=3))
)
def test_csv_from_random_text(folder: Path, text: str, index: str | None, targets: list[str] | None) -> None:
    loaded_csv(write(folder, "random.csv", text), index=index, targets=targets)


@hyp
@given(raw=st.binary())
def test_csv_from_random_bytes(folder: Path, raw: bytes) -> None:
    loaded_csv(write(folder, "random.csv", raw))


# --- configs built from the keys the loader knows ------------------------------------------------

SCALARS = (
    st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.sampled_from([0, 1, 2, 3, -1, 10**12])
    | st.floats()
    | st.sampled_from(
        ["sigmoid", "tanh", "relu", "identity", "mse", "bce", "sum", "float32", "free", "torch"]
    )
    | st.text(max_size=8)
    | st.dates()
)
VALUES = (
    SCALARS | st.lists(SCALARS, max_size=5) | st.lists(st.integers(min_value=-2, max_value=6), max_size=5)
)
ACTIVATION_NAMES = list(ACTIVATIONS)
KNOWN_KEYS = [(section, key) for section, keys in SCHEMA.items() for key in keys]
KEYS = st.sampled_from(KNOWN_KEYS) | st.tuples(
    st.sampled_from([*SCHEMA, "netwrk"]), st.text(min_size=1, max_size=6)
)


def value_for(section: str, key: str) -> st.SearchStrategy[Any]:
    """Any value; but a data path stays in the fuzz folder (random text could name a device)."""
    if (section, key) == ("data", "csv"):
        return st.sampled_from(["data.csv", "missing.csv", ".", "", "data.csv/x", "run.toml"])
    return VALUES


@st.composite
def valid_documents(draw: st.DrawFn) -> dict[str, Any]:
    """A config the loader accepts, for 2 inputs and 1 target in data.csv, with one key perhaps spoiled."""
    widths = draw(st.lists(st.integers(min_value=1, max_value=4), max_size=2))
    sizes = [2, *widths, 1]
    activations = draw(
        st.lists(st.sampled_from(ACTIVATION_NAMES), min_size=len(sizes) - 1, max_size=len(sizes) - 1)
    )
    loss = draw(st.sampled_from(["mse", "l1", "bce", "bce_with_logits", "cross_entropy"]))
    if loss == "bce":
        activations[-1] = "sigmoid"
    momentum = draw(st.sampled_from([0.0, 0.5, 0.9]))
    doc: dict[str, Any] = {
        "network": {"sizes": sizes, "activations": activations, "bias": draw(st.booleans())},
        "loss": {"name": loss, "reduction": draw(st.sampled_from(["mean", "sum"]))},
        "optimizer": {
            "lr": draw(st.sampled_from([0.0, 0.05, 0.5, 1e3])),
            "momentum": momentum,
            "nesterov": momentum > 0 and draw(st.booleans()),
            "weight_decay": draw(st.sampled_from([0.0, 1e-4])),
        },
        "init": {"scheme": draw(st.sampled_from(["numpy-rand", "torch"])), "seed": draw(st.integers(0, 9))},
        "train": {"mode": draw(st.sampled_from(["free", "resync"]))},
        "data": {"csv": "data.csv"},
    }
    doc["network"]["dtype"] = draw(st.sampled_from(["float32", "float64"]))
    if draw(st.booleans()):
        section, key = draw(st.sampled_from(KNOWN_KEYS))
        doc[section][key] = draw(value_for(section, key))
    return doc


@st.composite
def random_documents(draw: st.DrawFn) -> dict[str, Any]:
    """A parsed TOML document: a few [section] key = value pairs, mostly known keys."""
    doc: dict[str, Any] = {}
    for section, key in draw(st.lists(KEYS, max_size=8)):
        doc.setdefault(section, {})[key] = draw(value_for(section, key))
    if draw(st.booleans()):  # a value where a table belongs
        doc[draw(st.sampled_from(list(SCHEMA)))] = draw(SCALARS)
    return doc


def documents() -> st.SearchStrategy[dict[str, Any]]:
    return valid_documents() | random_documents()


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return (
            ("-" if value < 0 else "") + "inf"
            if math.isinf(value)
            else "nan"
            if math.isnan(value)
            else repr(value)
        )
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string, escapes and all
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return str(value)  # int, date


def toml_text(doc: dict[str, Any]) -> str:
    plain = [f"{json.dumps(k)} = {toml_value(v)}" for k, v in doc.items() if not isinstance(v, dict)]
    tables = [
        f"[{json.dumps(section)}]\n"
        + "".join(f"{json.dumps(k)} = {toml_value(v)}\n" for k, v in body.items())
        for section, body in doc.items()
        if isinstance(body, dict)
    ]
    return "\n".join(plain) + "\n" + "\n".join(tables)


@given(doc=documents())
def test_parse_config_of_any_document(doc: dict[str, Any]) -> None:
    config = attempt(parse_config, doc, "fuzz.toml", base=Path("."))
    if isinstance(config, str):
        assert config.startswith("fuzz.toml: "), "a config error names the file"
    else:
        assert isinstance(config, RunConfig)


@hyp
@given(doc=documents())
def test_load_config_of_any_document(folder: Path, doc: dict[str, Any]) -> None:
    loaded_config(write(folder, "built.toml", toml_text(doc)))


# --- CSV files built from cells at the edges -----------------------------------------------------

CELLS = st.sampled_from(
    [
        "0",
        "1",
        "-0",
        "0.5",
        "1e-300",
        "1e400",
        "-1e400",
        "nan",
        "NaN",
        "inf",
        "-inf",
        "",
        " ",
        "NA",
        "True",
        "x",
        "1,5",
        '"1"',
        '"2',
        "\uff11",  # a fullwidth 1
        "٣",
        "1_0",
        "0x10",
        "1e",
        "é",
        "\x00",
        "9" * 400,
    ]
) | st.text(alphabet=string.printable + "éß٣\u2028", max_size=6)
NAMES = st.sampled_from(["a", "b", "y", "row", "", " a", "a", "é"]) | st.text(max_size=3)


@st.composite
def csv_texts(draw: st.DrawFn) -> str:
    """A header and a few rows, cells joined by commas, sometimes quoted, rows sometimes ragged."""
    header = draw(st.lists(NAMES, min_size=1, max_size=4))
    width = len(header)
    rows = draw(st.lists(st.lists(CELLS, min_size=max(0, width - 1), max_size=width + 1), max_size=4))

    def line(cells: list[str]) -> str:
        quote = draw(st.booleans())
        return ",".join('"' + c.replace('"', '""') + '"' if quote else c for c in cells)

    newline = draw(st.sampled_from(["\n", "\r\n"]))
    return newline.join(line(cells) for cells in [header, *rows]) + draw(st.sampled_from(["", newline]))


@given(
    text=csv_texts(),
    index=st.none() | NAMES,
    targets=st.none() | st.lists(NAMES, min_size=1, max_size=2),
)
def test_read_table_of_any_cells(text: str, index: str | None, targets: list[str] | None) -> None:
    data = attempt(read_table, text, "fuzz.csv", index=index, targets=targets)
    if isinstance(data, str):
        assert data.startswith("fuzz.csv"), "a CSV error names the file"
    else:
        check_dataset(data)


@given(values=st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=2, max_size=6))
def test_finite_floats_read_back_exactly(values: list[float]) -> None:
    text = "a,y\n" + "\n".join(f"{v!r},{-v!r}" for v in values) + "\n"
    data = read_table(text, "exact.csv")
    assert data.x[:, 0].tolist() == values
    assert data.y[:, 0].tolist() == [-v for v in values]
    assert [math.copysign(1, v) for v in data.x[:, 0]] == [math.copysign(1, v) for v in values]


# --- the command line ------------------------------------------------------------------------------


@settings(
    max_examples=CLI_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(doc=documents(), good_csv=st.sampled_from([True, True, False]), data=st.data())
def test_verify_command_exits_0_1_or_2(
    folder: Path, doc: dict[str, Any], good_csv: bool, data: st.DataObject
) -> None:
    write(folder, "data.csv", OR_CSV if good_csv else data.draw(csv_texts(), label="csv"))
    config = write(folder, "run.toml", toml_text(doc))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(["verify", "--config", str(config), "--steps", "2"])
    event(f"exit status {status}")
    assert status in (0, 1, 2)
    if status == 2:
        assert err.getvalue().startswith("nnparity: error: ")
        assert err.getvalue().count("\n") == 1
    else:
        assert "Traceback" not in err.getvalue()
