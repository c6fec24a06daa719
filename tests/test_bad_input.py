"""Bad input on the command line, in a config or in a CSV file: exit status 2 and one line on stderr.

A table in the style of hypothesis's ``tests/numpy/test_argument_validation.py``: each row is one
``nnparity`` command line, the files it reads (text, or raw bytes) written into a fresh directory
that is the working directory, the exit status and a fragment of the one line the command must
print. The fragment names the file, key or column at fault; no row runs a verification.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

from nnparity.cli import main

CSV = "a,b,y\n0,0,0\n0,1,1\n1,0,1\n1,1,1\n"  # fits the default network, sizes [2, 3, 1]
DATA = "[data]\ncsv = 'data.csv'\n"


def bad(
    label: str,
    argv: list[str],
    fragment: str,
    files: Mapping[str, str | bytes] | None = None,
    status: int = 2,
) -> object:
    """One row: ``nnparity *argv`` with ``files`` written first must exit ``status``, saying ``fragment``."""
    return pytest.param(argv, dict(files or {}), status, fragment, id=label)


def csv_case(label: str, csv: str | bytes, fragment: str, *options: str) -> object:
    """``nnparity verify --data data.csv *options`` with ``csv`` as the file."""
    return bad(label, ["verify", "--data", "data.csv", *options], fragment, {"data.csv": csv})


def config_case(label: str, config: str | bytes, fragment: str, csv: str = CSV) -> object:
    """``nnparity verify --config run.toml`` with ``config`` as the file (and ``data.csv`` beside it)."""
    return bad(label, ["verify", "--config", "run.toml"], fragment, {"run.toml": config, "data.csv": csv})


CSV_CASES = [
    csv_case("csv-empty", "", "data.csv is empty; it needs a header row and at least one data row"),
    csv_case("csv-blank", "\n  \n", "data.csv is empty"),
    csv_case("csv-header-only", "a,b,y\n", "data.csv has a header but no data rows"),
    csv_case(
        "csv-non-numeric",
        "a,b,y\n0,0,0\n1,x,1\n",
        "data.csv: column 'b', data row 2 holds 'x', which is not a finite number",
    ),
    csv_case("csv-boolean", "a,b,y\nTrue,0,1\n", "data.csv: column 'a', data row 1 holds 'True'"),
    csv_case("csv-missing-value", "a,b,y\n1,,0\n", "data.csv: column 'b', data row 1 holds ''"),
    csv_case("csv-na", "a,b,y\n1,NA,0\n", "data.csv: column 'b', data row 1 holds 'NA'"),
    csv_case("csv-inf", "a,b,y\n1,inf,0\n", "column 'b', data row 1 holds 'inf', which is not a finite"),
    csv_case("csv-minus-inf", "a,b,y\n1,0,-inf\n", "column 'y', data row 1 holds '-inf'"),
    csv_case("csv-nan", "a,b,y\n1,0,0\nnan,0,1\n", "column 'a', data row 2 holds 'nan'"),
    csv_case("csv-overflow", "a,b,y\n1,1e400,0\n", "column 'b', data row 1 holds '1e400'"),
    csv_case("csv-huge-integer", "a,b,y\n1," + "9" * 400 + ",0\n", "column 'b', data row 1 holds '999"),
    csv_case(
        "csv-short-row",
        "a,b,y\n0,0,0\n1,0\n",
        "data.csv: data row 2 has 2 cells, but the header row names 3 columns",
    ),
    csv_case("csv-long-first-row", "a,b,y\n1,0,1,1\n", "data row 1 has 4 cells, but the header row names 3"),
    csv_case("csv-long-row", "a,b,y\n0,0,0\n1,0,1,1\n", "data row 2 has 4 cells"),
    csv_case("csv-duplicate-column", "a,a,y\n0,0,0\n", "data.csv: the header row names column 'a' twice"),
    csv_case("csv-unnamed-column", ",a,y\n0,0,0\n", "data.csv: column 1 has no name in the header row"),
    csv_case("csv-unclosed-quote", 'a,b,y\n"1,0,0\n', "data.csv is not valid CSV: unexpected end of data"),
    csv_case(
        "csv-too-many-inputs",
        "a,b,c,y\n0,0,0,0\n",
        "data.csv has 3 input columns and 1 target column, but sizes [2, 3, 1] take 2 and 1",
    ),
    csv_case(
        "csv-too-many-targets",
        "a,b,c,y\n0,0,0,0\n",
        "data.csv has 2 input columns and 2 target columns, but sizes [2, 3, 1] take 2 and 1",
        "--targets",
        "c,y",
    ),
    csv_case(
        "csv-unknown-index",
        CSV,
        "data.csv has no index column 'row'; its columns are a, b, y",
        "--index",
        "row",
    ),
    csv_case(
        "csv-unknown-target",
        CSV,
        "data.csv has no target column 't9'; its columns are a, b, y",
        "--targets",
        "t9",
    ),
    csv_case("csv-index-is-target", CSV, "has no target column 'y'", "--index", "y", "--targets", "y"),
    csv_case(
        "csv-target-twice",
        "a,b,y\n0,0,0\n",
        "data.csv: the targets name column 'y' twice",
        "--targets",
        "y,y",
    ),
    # float() reads these, but no CSV writer writes them as numbers
    csv_case("csv-underscore-number", "a,b,y\n1_000,0,0\n", "column 'a', data row 1 holds '1_000'"),
    csv_case("csv-arabic-digit", "a,b,y\n\u0661,0,0\n", "column 'a', data row 1 holds '\u0661'"),
    csv_case("csv-no-inputs", "y\n1\n", "data.csv has no input columns besides the targets y"),
    csv_case("csv-undecodable", b"a,b,y\n1,\xff\xfe,0\n", "data.csv: byte 8 is not UTF-8 text"),
    csv_case("csv-latin-1", b"a,b,y\n1,0,0\n" + "é\n".encode("latin-1"), "is not UTF-8 text"),
    bad("csv-missing", ["verify", "--data", "missing.csv"], "Cannot read data file 'missing.csv'"),
    bad("csv-directory", ["verify", "--data", "."], "Cannot read data file '.'"),
    bad(
        "csv-beyond-float32",
        ["verify", "--config", "run.toml"],
        "data.csv: column 'b', data row 1 holds 1e+39, which is beyond float32's range",
        {"run.toml": DATA + "[network]\ndtype = 'float32'\n", "data.csv": "a,b,y\n1,1e39,0\n"},
    ),
    bad(
        "targets-without-csv",
        ["verify", "--targets", "y"],
        "--index/--targets name columns of a CSV file, but no CSV is given",
    ),
    bad(
        "config-targets-without-csv",
        ["verify", "--config", "run.toml"],
        "[data] index/targets name columns of a CSV file, but no CSV is given",
        {"run.toml": "[data]\ntargets = ['y']\n"},
    ),
    bad(
        "csv-none-but-sizes-need-one",
        ["verify", "--config", "run.toml"],
        "the default OR table has 2 inputs and 1 target, which does not fit sizes [3, 3, 1]",
        {"run.toml": "[network]\nsizes = [3, 3, 1]\n"},
    ),
]

CONFIG_CASES = [
    config_case("config-empty-csv", "[data]\ncsv = ''\n", "run.toml: [data] csv is empty; name a CSV file"),
    # the file itself
    bad("config-missing", ["verify", "--config", "missing.toml"], "Cannot read config file 'missing.toml'"),
    bad("config-directory", ["verify", "--config", "."], "Cannot read config file '.'"),
    config_case("config-undecodable", b"[network]\n# \xff\n", "run.toml: byte 12 is not UTF-8 text"),
    config_case(
        "toml-bad-value", "[network]\nbias = yes\n", "run.toml is not valid TOML: Invalid value (at line 2"
    ),
    config_case("toml-unclosed-table", "[network\n", "run.toml is not valid TOML:"),
    config_case("toml-unclosed-array", "[network]\nsizes = [2, 3, 1\n", "(at the end, line 3)"),
    config_case(
        "toml-duplicate-key", "[loss]\nname = 'mse'\nname = 'l1'\n", "Cannot overwrite a value (at line 3"
    ),
    # sections, keys and types
    config_case(
        "unknown-section", "[netwrk]\n", "run.toml: unknown section [netwrk]; sections are [network]"
    ),
    config_case("section-as-value", "network = 3\n", "run.toml: network must be a [network] table"),
    config_case(
        "unknown-key", "[network]\nsize = [2, 3, 1]\n", "unknown key 'size' in [network]; known keys"
    ),
    config_case("sizes-not-a-list", "[network]\nsizes = 3\n", "run.toml: [network] sizes must be a list"),
    config_case("bias-not-a-bool", "[network]\nbias = 1\n", "run.toml: [network] bias must be true or false"),
    config_case("lr-not-a-number", "[optimizer]\nlr = 'fast'\n", "run.toml: [optimizer] lr must be a number"),
    config_case("lr-a-bool", "[optimizer]\nlr = true\n", "[optimizer] lr must be a number; got True"),
    config_case("steps-a-float", "[train]\nsteps = 10.0\n", "[train] steps must be a whole number"),
    config_case("steps-a-date", "[train]\nsteps = 1979-05-27\n", "[train] steps must be a whole number"),
    config_case("seed-a-bool", "[init]\nseed = true\n", "[init] seed must be a whole number"),
    config_case("csv-a-number", "[data]\ncsv = 3\n", "[data] csv must be a path to a CSV file"),
    config_case("targets-a-string", "[data]\ntargets = 'y'\n", "[data] targets must be a list of column"),
    config_case("targets-empty", "[data]\ntargets = []\n", "[data] targets must be a non-empty list"),
    config_case("targets-numbers", "[data]\ntargets = [1]\n", "[data] targets must be a non-empty list"),
    # the network
    config_case("width-zero", "[network]\nsizes = [2, 0, 1]\n", "run.toml: [network] sizes must list at"),
    config_case("width-negative", "[network]\nsizes = [2, -3, 1]\n", "each a whole number >= 1"),
    config_case("width-float", "[network]\nsizes = [2, 3.5, 1]\n", "got [2, 3.5, 1]"),
    config_case("width-string", "[network]\nsizes = [2, '3', 1]\n", "[network] sizes must list"),
    config_case("one-width", "[network]\nsizes = [2]\n", "at least an input and an output width"),
    config_case(
        "unknown-activation",
        "[network]\nactivations = ['sigmoid', 'swish']\n",
        "run.toml: [network] activations: 'swish' is not an activation; choose from identity",
    ),
    config_case(
        "activation-not-a-name",
        "[network]\nactivations = [['sigmoid'], 'sigmoid']\n",
        "[network] activations: ['sigmoid'] is not an activation",
    ),
    config_case(
        "too-few-activations",
        "[network]\nactivations = ['sigmoid']\n",
        "run.toml: [network] activations has 1 names, but sizes [2, 3, 1] has 2 weight layers",
    ),
    config_case(
        "too-many-activations",
        "[network]\nactivations = ['sigmoid', 'sigmoid', 'tanh']\n",
        "activations has 3 names, but sizes [2, 3, 1] has 2 weight layers",
    ),
    config_case(
        "unknown-dtype",
        "[network]\ndtype = 'float16'\n",
        "run.toml: [network] dtype 'float16' is unknown; choose from float32, float64",
    ),
    config_case(
        "unknown-loss", "[loss]\nname = 'hinge'\n", "run.toml: [loss] name 'hinge' is unknown; choose"
    ),
    config_case("unknown-reduction", "[loss]\nreduction = 'none'\n", "[loss] reduction 'none' is unknown"),
    config_case(
        "bce-without-sigmoid",
        "[loss]\nname = 'bce'\n[network]\nactivations = ['sigmoid', 'relu']\n",
        "run.toml: Loss 'bce' takes probabilities, so the output activation must be sigmoid",
    ),
    # the optimizer, validated as torch.optim.SGD validates it
    config_case("negative-lr", "[optimizer]\nlr = -1\n", "run.toml: [optimizer] Invalid learning rate: -1.0"),
    config_case("nan-lr", "[optimizer]\nlr = nan\n", "[optimizer] SGD lr must be finite, not nan"),
    config_case("inf-lr", "[optimizer]\nlr = inf\n", "[optimizer] SGD lr must be finite, not inf"),
    config_case("negative-momentum", "[optimizer]\nmomentum = -0.9\n", "[optimizer] Invalid momentum value"),
    config_case("negative-weight-decay", "[optimizer]\nweight_decay = -1\n", "Invalid weight_decay value"),
    config_case(
        "nesterov-without-momentum",
        "[optimizer]\nnesterov = true\n",
        "[optimizer] Nesterov momentum requires a momentum > 0",
    ),
    config_case(
        "nesterov-with-dampening",
        "[optimizer]\nnesterov = true\nmomentum = 0.9\ndampening = 0.1\n",
        "requires a momentum > 0 and zero dampening",
    ),
    # init, train, data
    config_case("unknown-scheme", "[init]\nscheme = 'xavier'\n", "[init] scheme 'xavier' is unknown; choose"),
    config_case("negative-seed", "[init]\nseed = -1\n", "[init] seed must be from 0 to 2**32 - 1"),
    config_case("unknown-mode", "[train]\nmode = 'sometimes'\n", "[train] mode 'sometimes' is unknown"),
    config_case(
        "steps-zero", "[train]\nsteps = 0\n", "run.toml: [train] steps must be from 1 to 1,000,000,000"
    ),
    config_case("steps-absurd", "[train]\nsteps = 99999999999999\n", "[train] steps must be from 1"),
    config_case("rtol-alone", "[train]\nrtol = 1e-6\n", "[train] rtol and atol go together"),
    config_case("rtol-negative", "[train]\nrtol = -1\natol = 0\n", "run.toml: [train] rtol must be a finite"),
    config_case("atol-nan", "[train]\nrtol = 0\natol = nan\n", "[train] atol must be a finite number >= 0"),
    config_case("data-missing", "[data]\ncsv = 'nope.csv'\n", "Cannot read data file"),
    config_case("data-index-unknown", DATA + "index = 'row'\n", "data.csv has no index column 'row'"),
    config_case("data-target-unknown", DATA + "targets = ['t9']\n", "data.csv has no target column 't9'"),
    config_case("data-bad-cell", DATA, "data.csv: column 'b', data row 1 holds 'x'", csv="a,b,y\n1,x,0\n"),
]

BACKEND_MODULES = {
    "nnparity_raises_on_import.py": "raise RuntimeError('no GPU here')\n",
    "nnparity_exits_on_import.py": "import sys\nsys.exit(3)\n",
    "nnparity_needs_jax.py": "import jax_not_installed_xyz\n",
}

COMMAND_LINE_CASES = [
    bad("no-command", [], "nnparity: error: the following arguments are required: COMMAND"),
    bad("unknown-command", ["train"], "invalid choice: 'train'"),
    bad("unknown-option", ["verify", "--stepz", "3"], "unrecognized arguments: --stepz"),
    bad(
        "steps-zero",
        ["verify", "--steps", "0"],
        "nnparity verify: error: argument --steps: expected a number",
    ),
    bad("steps-negative", ["verify", "--steps", "-5"], "expected a number from 1 to 1,000,000,000, got -5"),
    bad("steps-absurd", ["verify", "--steps", "10000000000"], "got 10000000000 (see nnparity verify --help)"),
    bad("steps-word", ["verify", "--steps", "ten"], "argument --steps: expected a whole number, got 'ten'"),
    bad("rtol-alone", ["verify", "--rtol", "1e-3"], "--rtol and --atol go together"),
    bad(
        "rtol-negative", ["verify", "--rtol", "-1", "--atol", "0"], "argument --rtol: expected a number >= 0"
    ),
    bad("atol-nan", ["verify", "--rtol", "0", "--atol", "nan"], "argument --atol: expected a number >= 0"),
    bad("mode-unknown", ["verify", "--mode", "sometimes"], "argument --mode: invalid choice: 'sometimes'"),
    bad(
        "candidate-no-module",
        ["verify", "--candidate", "nosuchmodule_xyz:Cls"],
        "Cannot find backend module 'nosuchmodule_xyz' (No module named 'nosuchmodule_xyz'); check that "
        "it is installed or on the Python path",
    ),
    bad(
        "candidate-package-no-module",
        ["verify", "--candidate", "nnparity.nosuchmodule_xyz:Cls"],
        "Cannot find backend module 'nnparity.nosuchmodule_xyz'",
    ),
    bad(
        "candidate-imports-what-is-missing",
        ["verify", "--candidate", "nnparity_needs_jax:Backend"],
        "Backend module 'nnparity_needs_jax' was found, but importing it failed (ModuleNotFoundError: "
        "No module named 'jax_not_installed_xyz'); fix the module, or install what it imports.",
        BACKEND_MODULES,
    ),
    bad(
        "candidate-raises-on-import",
        ["verify", "--candidate", "nnparity_raises_on_import:Backend"],
        "Backend module 'nnparity_raises_on_import' was found, but importing it failed "
        "(RuntimeError: no GPU here)",
        BACKEND_MODULES,
    ),
    bad(
        "candidate-exits-on-import",
        ["verify", "--candidate", "nnparity_exits_on_import:Backend"],
        "Backend module 'nnparity_exits_on_import' was found, but importing it failed (SystemExit: 3)",
        BACKEND_MODULES,
    ),
    bad("candidate-no-class", ["verify", "--candidate", "nnparity:NotThere"], "has no class 'NotThere'"),
    bad("candidate-not-a-class", ["verify", "--candidate", "os:sep"], "Backend 'os:sep' is not a class"),
    bad(
        "candidate-not-a-backend",
        ["verify", "--candidate", "nnparity.spec:NetworkSpec"],
        "'nnparity.spec:NetworkSpec' is not a Backend: it has no step, predict, set_params method",
    ),
    bad("candidate-unknown-name", ["verify", "--candidate", "jax"], "Unknown backend 'jax': use 'numpy'"),
    bad(
        "candidate-missing-recording",
        ["verify", "--candidate", "run.npz"],
        "Cannot read trajectory 'run.npz'",
    ),
    bad("reference-unknown-name", ["verify", "--reference", "jax"], "Unknown backend 'jax'"),
    bad(
        "reference-missing-recording",
        ["verify", "--reference", "run.npz"],
        "Cannot read trajectory 'run.npz'",
    ),
    # output files, refused before the run
    bad(
        "report-no-directory",
        ["verify", "--report", "nowhere/trace.csv"],
        "Cannot write nowhere/trace.csv: the directory nowhere does not exist",
    ),
    bad("report-a-directory", ["verify", "--report", "."], "Cannot write .: it is a directory"),
    bad(
        "plot-no-directory",
        ["verify", "--plot", "nowhere/run.png"],
        "Cannot write nowhere/run.png: the directory nowhere does not exist",
    ),
    bad(
        "record-out-no-directory",
        ["record", "--out", "nowhere/run.npz"],
        "Cannot write nowhere/run.npz: the directory nowhere does not exist",
    ),
    bad("record-out-not-npz", ["record", "--out", "run.txt"], "--out run.txt must end in .npz"),
    bad(
        "record-steps-negative",
        ["record", "--steps", "-1", "--out", "run.npz"],
        "argument --steps: expected a number from 1 to 1,000,000,000, got -1",
    ),
    bad(
        "record-steps-word",
        ["record", "--steps", "ten", "--out", "run.npz"],
        "argument --steps: expected a whole number, got 'ten'",
    ),
    bad(
        "record-every-zero",
        ["record", "--every", "0", "--out", "run.npz"],
        "argument --every: expected a number from 1",
    ),
    bad(
        "record-data-does-not-fit",
        ["record", "--data", "data.csv", "--out", "run.npz"],
        "data.csv has 3 input columns and 1 target column, but sizes [2, 3, 1] take 2 and 1",
        {"data.csv": "a,b,c,y\n1,2,3,4\n"},
    ),
    bad(
        "record-bad-config",
        ["record", "--config", "run.toml", "--out", "run.npz"],
        "run.toml: unknown section [netwrk]",
        {"run.toml": "[netwrk]\n"},
    ),
    bad(
        "check-out-a-file",
        ["check", "numpy", "--out", "taken"],
        "Cannot write in taken: ",
        {"taken": "a file\n"},
    ),
    bad(
        "check-examples-zero", ["check", "numpy", "--examples", "0"], "argument --examples: expected a number"
    ),
    bad(
        "check-seed-negative", ["check", "numpy", "--seed", "-1"], "argument --seed: expected a number from 0"
    ),
    bad("check-unknown-activation", ["check", "numpy", "--activations", "swish"], "unknown activations"),
    bad("check-absurd-width", ["check", "numpy", "--max-width", "1000000"], "max_width must be at most 32"),
    bad(
        "check-absurd-rows",
        ["check", "numpy", "--max-rows", "100000"],
        "max_rows must be a whole number from 1 to 64",
    ),
    bad("mutants-unknown", ["mutants", "--only", "NoSuchMutant"], "Unknown mutant 'NoSuchMutant'"),
]


@pytest.mark.parametrize(
    ("argv", "files", "status", "fragment"), CSV_CASES + CONFIG_CASES + COMMAND_LINE_CASES
)
def test_bad_input_is_one_line_and_exit_status_2(
    argv: list[str],
    files: dict[str, str | bytes],
    status: int,
    fragment: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, content in files.items():
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the command line puts the working directory on it
    assert main(argv) == status
    captured = capsys.readouterr()
    assert fragment in captured.err
    assert captured.err.count("\n") == 1, captured.err
    assert captured.err.startswith("nnparity"), captured.err
    assert captured.out == ""
    written = sorted(p.name for p in tmp_path.iterdir() if p.name != "__pycache__")
    assert written == sorted(files), "bad input must write no file"
