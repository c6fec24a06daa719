"""Ctrl-C: a long run that is interrupted reports what it checked, exits 1, and leaves no
half-written file (issue 7)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nnparity import StepResult, verify
from nnparity.cli import main
from nnparity.dataset import or_table
from nnparity.notebook import notebook_spec
from nnparity.numpy_backend import NumpyBackend

STOP_AT = 300  # beyond the first block of steps


class CtrlCAtStep300(NumpyBackend):
    """Raises KeyboardInterrupt, as Ctrl-C would, when asked for its 301st step."""

    steps = 0

    def step(self, x: np.ndarray, y: np.ndarray) -> StepResult:
        if self.steps == STOP_AT:
            raise KeyboardInterrupt
        self.steps += 1
        return super().step(x, y)


def test_an_interrupted_run_reports_the_steps_it_checked() -> None:
    data, spec = or_table(), notebook_spec()
    report = verify(spec, data.x, data.y, steps=1000, candidate=CtrlCAtStep300)
    assert report.interrupted
    assert not report.ok  # not verified to the end
    assert report.first_divergence is None
    assert report.steps_run == STOP_AT
    assert len(report.trace) == STOP_AT
    assert report.summary().endswith(f"interrupted after {STOP_AT} of 1000 steps, which agree.")
    # The final parameters are those after the last step checked, as an uninterrupted run shows.
    short = verify(spec, data.x, data.y, steps=STOP_AT)
    for side in ("candidate", "reference"):
        for got, want in zip(report.final_params[side], short.final_params[side]):
            np.testing.assert_array_equal(got.weight, want.weight)


BACKEND_MODULE = f"""
from nnparity.numpy_backend import NumpyBackend

class CtrlC(NumpyBackend):
    steps = 0

    def step(self, x, y):
        if self.steps == {STOP_AT}:
            raise KeyboardInterrupt
        self.steps += 1
        return super().step(x, y)
"""


class WrongThenCtrlC(CtrlCAtStep300):
    """Its loss is off from step 100 on, and Ctrl-C comes at step 300."""

    def step(self, x: np.ndarray, y: np.ndarray) -> StepResult:
        result = super().step(x, y)
        return result._replace(loss=result.loss + 1.0) if self.steps > 100 else result


def test_an_interrupted_run_says_so_beside_its_divergences() -> None:
    data, spec = or_table(), notebook_spec()
    report = verify(spec, data.x, data.y, steps=1000, candidate=WrongThenCtrlC, keep_going=True)
    assert report.interrupted
    assert report.divergent_steps == STOP_AT - 100
    head = report.summary().splitlines()[0]
    assert head.endswith(
        f"DIVERGE ({STOP_AT - 100} of {STOP_AT} steps diverge); interrupted after {STOP_AT} of 1000 steps."
    )


class CtrlCAtOnce(NumpyBackend):
    def step(self, x: np.ndarray, y: np.ndarray) -> StepResult:
        raise KeyboardInterrupt


def test_a_run_interrupted_at_its_first_step_says_so() -> None:
    data, spec = or_table(), notebook_spec()
    report = verify(spec, data.x, data.y, steps=10, candidate=CtrlCAtOnce)
    assert report.summary().endswith("interrupted before its first step (of 10).")


def test_the_cli_prints_the_report_so_far_and_writes_whole_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "ctrlc_backend.py").write_text(BACKEND_MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    trace = tmp_path / "trace.csv"
    status = main(
        ["verify", "--candidate", "ctrlc_backend:CtrlC", "--steps", "1000", "--json", "--report", str(trace)]
    )
    assert status == 1
    report = json.loads(capsys.readouterr().out)
    assert report["interrupted"] is True
    assert report["steps_run"] == STOP_AT
    assert len(pd.read_csv(trace)) == STOP_AT
    # Only the finished file: no temporary left beside it.
    assert [p.name for p in tmp_path.iterdir() if p.suffix != ".py" and p.name != "__pycache__"] == [
        "trace.csv"
    ]


def test_ctrl_c_before_the_run_exits_1_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(*args: object, **kwargs: object) -> object:
        raise KeyboardInterrupt

    monkeypatch.setattr("nnparity.dataset.or_table", interrupted)
    assert main(["verify", "--steps", "3"]) == 1
    err = capsys.readouterr().err
    assert err == "nnparity: interrupted before anything was verified.\n"


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child process is POSIX")
def test_a_real_sigint_ends_a_long_run_with_its_report(tmp_path: Path) -> None:
    out = tmp_path / "trace.csv"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        # 10**6 steps (about a minute and a half): long past the Ctrl-C, and within any machine's memory
        [sys.executable, "-m", "nnparity", "verify", "--steps", "1000000", "--json", "--report", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        time.sleep(6.0)  # imports, then a few thousand steps
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 1, stderr
    report = json.loads(stdout)
    assert report["interrupted"] is True
    assert report["ok"] is False
    assert report["steps_run"] > 0
    assert "Traceback" not in stderr
    assert len(pd.read_csv(out)) == report["steps_run"]
