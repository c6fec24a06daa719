"""Runs are deterministic: the same inputs give byte-identical JSON reports.

Each run twice in this process (the second after the first has warmed every cache), once in a fresh
interpreter with another hash seed for the divergent run, and the same through the Python API.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nnparity import SGD, NetworkSpec, init_params, verify
from nnparity.cli import main

TESTS = Path(__file__).parent
CONFIG = """
[network]
sizes = [3, 4, 2]
activations = ["tanh", "sigmoid"]
bias = true
dtype = "float32"
[loss]
name = "bce"
reduction = "sum"
[optimizer]
lr = 0.1
momentum = 0.9
nesterov = true
[init]
scheme = "torch"
seed = 7
[train]
mode = "resync"
[data]
csv = "train.csv"
index = "row"
targets = ["t1", "t2"]
"""
CSV = "row,a,b,c,t1,t2\n1,0.5,-1,2,0,1\n2,1.5,0.25,-0.5,1,0\n3,-2,0.75,1,0.5,0.5\n"

RUNS = {
    "notebook": (["--steps", "300"], 0),
    "diverges": (["--steps", "20", "--candidate", "buggy_backends:Float32Inside"], 1),
    "keep-going": (["--steps", "25", "--keep-going", "--candidate", "buggy_backends:SignFlip"], 1),
    "config": (["--config", "{config}", "--steps", "40"], 0),
    "config-keep-going": (
        ["--config", "{config}", "--steps", "15", "--keep-going", "--candidate", "buggy_backends:BiasMean"],
        1,
    ),
}


@pytest.fixture(autouse=True)
def _buggy_backends_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(TESTS))


@pytest.fixture
def config(tmp_path: Path) -> Path:
    (tmp_path / "train.csv").write_text(CSV)
    path = tmp_path / "run.toml"
    path.write_text(CONFIG)
    return path


def run_json(argv: list[str], status: int, capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["verify", "--json", *argv]) == status
    captured = capsys.readouterr()
    assert captured.err == ""
    return captured.out


@pytest.mark.parametrize("name", list(RUNS))
def test_cli_json_is_byte_identical_run_to_run(
    name: str, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args, status = RUNS[name]
    argv = [arg.format(config=config) for arg in args]
    first = run_json(argv, status, capsys)
    second = run_json(argv, status, capsys)
    assert first == second
    report = json.loads(first)
    assert report["ok"] is (status == 0)
    if "--keep-going" in argv:
        assert report["divergent_steps"] > 1  # the run went on past its first divergence
        assert report["steps_run"] == report["steps"]


def test_cli_json_is_the_same_in_a_fresh_interpreter(capsys: pytest.CaptureFixture[str]) -> None:
    args, status = RUNS["keep-going"]
    here = run_json(args, status, capsys)
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": os.pathsep.join([str(TESTS), *sys.path])}
    proc = subprocess.run(
        [sys.executable, "-m", "nnparity", "verify", "--json", *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert proc.returncode == status, proc.stderr
    assert proc.stdout == here


def test_api_to_json_is_byte_identical() -> None:
    spec = NetworkSpec(
        (3, 5, 2),
        ("elu", "identity"),
        bias=True,
        loss="mse",
        optimizer=SGD(0.05, momentum=0.5, weight_decay=1e-3),
    )
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(7, 3)), rng.normal(size=(7, 2))
    params = init_params(spec, seed=3)
    for candidate, keep_going in (("numpy", False), ("buggy_backends:NoWeightDecay", True)):
        reports = [
            verify(spec, x, y, steps=30, params=params, candidate=candidate, keep_going=keep_going).to_json()
            for _ in range(2)
        ]
        assert reports[0] == reports[1]
        assert json.loads(reports[0])["ok"] is (candidate == "numpy")
