"""The command line: exit statuses, messages, the notebook's printout, a user's backend."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from nnparity.cli import main

NOTEBOOK_ERROR_LINES = [
    "error at step     0: 1.960156e-01",
    "error at step  1000: 1.651662e-01",
    "error at step  2000: 1.593565e-01",
    "error at step  3000: 1.550351e-01",
    "error at step  4000: 1.511067e-01",
    "error at step  5000: 1.465351e-01",
    "error at step  6000: 1.392272e-01",
    "error at step  7000: 1.234844e-01",
    "error at step  8000: 9.350530e-02",
    "error at step  9000: 6.205274e-02",
]
NOTEBOOK_TABLE = "\n".join(
    [
        "             input1  input2  output  prediction     error",
        "observation" + " " * 46,  # pandas pads the index name row
        "1                 0       0       0    0.334522 -0.334522",
        "2                 0       1       1    0.846053  0.153947",
        "3                 1       0       1    0.849022  0.150978",
        "4                 1       1       1    0.925358  0.074642",
    ]
)


@pytest.fixture(scope="module")
def seed_output() -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "nnparity", "seed"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_seed_prints_the_notebooks_figures(seed_output: str) -> None:
    out = seed_output
    numpy_part, torch_part = out.split("## torch (reference)")
    assert "Inputs:\n[[0. 0.]\n [0. 1.]\n [1. 0.]\n [1. 1.]]" in out
    assert "Truth: \n[[0.]\n [1.]\n [1.]\n [1.]]" in out
    assert (
        "Starting hidden layer weights:\n"
        "[[4.17022005e-01 7.20324493e-01 1.14374817e-04]\n"
        " [3.02332573e-01 1.46755891e-01 9.23385948e-02]]\n"
    ) in out
    assert "Starting output layer weights:\n[[0.18626021]\n [0.34556073]\n [0.39676747]]" in out
    for part in (numpy_part, torch_part):
        assert [
            line for line in part.splitlines() if line.startswith("error at step")
        ] == NOTEBOOK_ERROR_LINES
        assert "       output: [ 0.70570663  2.04736287 -4.12867523]" in part
        assert "10000 iterations took " in part
        assert NOTEBOOK_TABLE in part
    assert (
        "       hidden: [ 1.66707072  2.43454525 -1.50667653  1.66659174  2.29166158 -1.50681196]"
        in numpy_part
    )
    assert "Final bias:    0.0" in numpy_part
    assert (
        "       hidden: [ 1.66707072  1.66659174  2.43454525  2.29166158 -1.50667653 -1.50681196]"
        in torch_part
    )
    assert "agree at every step of 10000" in torch_part


def test_verify_defaults_to_the_notebook(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", "--steps", "50"]) == 0
    assert "numpy vs torch, mode free, float64" in capsys.readouterr().out


def test_verify_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", "--steps", "20", "--mode", "resync", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True
    assert report["steps_run"] == 20
    assert report["mode"] == "resync"
    assert report["first_divergence"] is None


CONFIG = """
[network]
sizes = [3, 4, 2]
activations = ["tanh", "sigmoid"]
bias = true
[loss]
name = "bce"
[optimizer]
lr = 0.1
momentum = 0.9
[init]
scheme = "torch"
seed = 7
[train]
steps = 40
mode = "resync"
[data]
csv = "train.csv"
index = "row"
targets = ["t1", "t2"]
"""
CSV = "row,a,b,c,t1,t2\n1,0.5,-1,2,0,1\n2,1.5,0.25,-0.5,1,0\n3,-2,0.75,1,0.5,0.5\n"


def _write_config(tmp_path: Path, config: str = CONFIG, csv: str = CSV) -> Path:
    (tmp_path / "train.csv").write_text(csv)
    path = tmp_path / "run.toml"
    path.write_text(config)
    return path


def test_verify_with_config_and_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write_config(tmp_path)
    assert main(["verify", "--config", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["steps_run"] == 40
    assert report["spec"]["sizes"] == [3, 4, 2]
    assert report["spec"]["optimizer"]["momentum"] == 0.9


USER_BACKEND = """
from nnparity.numpy_backend import NumpyBackend


class Correct(NumpyBackend):
    pass


class SignFlip(NumpyBackend):
    '''Applies the update with the wrong sign: p + lr * g.'''

    def step(self, x, y):
        before = [w.copy() for w in self._weights]
        result = super().step(x, y)
        self._weights = [2 * b - w for b, w in zip(before, self._weights)]
        return result._replace(params=[p._replace(weight=w) for p, w in zip(result.params, self._weights)])
"""


def test_user_backend_from_module_class(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "my_backend_mod.py").write_text(textwrap.dedent(USER_BACKEND))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    assert main(["verify", "--steps", "30", "--candidate", "my_backend_mod:Correct"]) == 0
    assert "my_backend_mod:Correct vs torch" in capsys.readouterr().out
    assert main(["verify", "--steps", "30", "--candidate", "my_backend_mod:SignFlip", "--json"]) == 1
    divergence = json.loads(capsys.readouterr().out)["first_divergence"]
    assert (divergence["step"], divergence["stage"], divergence["layer"], divergence["tensor"]) == (
        0,
        "update",
        0,
        "weight",
    )


def test_console_script_diverges_with_status_1(tmp_path: Path) -> None:
    (tmp_path / "my_backend_mod.py").write_text(textwrap.dedent(USER_BACKEND))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "nnparity",
            "verify",
            "--steps",
            "5",
            "--candidate",
            "my_backend_mod:SignFlip",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 1
    assert "Step 0: the updated layer 0 weight differs." in proc.stdout


def test_a_reader_that_goes_away_gets_no_traceback() -> None:
    """`nnparity verify | head -1`: the pipe closes before nnparity writes; no BrokenPipeError shown."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "nnparity", "verify", "--steps", "5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    proc.stdout.close()  # before the run ends and prints
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=120) in (0, 1)
    assert "Traceback" not in err
    assert "BrokenPipe" not in err


def test_a_config_saved_with_a_byte_order_mark_is_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "run.toml"
    config.write_bytes("\ufeff[train]\nsteps = 3\n".encode())  # as some Windows editors save UTF-8
    assert main(["verify", "--config", str(config)]) == 0
    assert "agree at every step of 3" in capsys.readouterr().out


# Bad command lines, configs and CSV files: tests/test_bad_input.py.
