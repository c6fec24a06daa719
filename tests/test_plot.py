"""The trace as CSV and the picture of a run: written atomically, readable for any trace."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nnparity import SGD, LayerParams, NetworkSpec, NnparityError, Report, init_params, verify
from nnparity.cli import main
from nnparity.numpy_backend import NumpyBackend
from nnparity.plot import plot_report, write_trace_csv
from nnparity.verify import TRACE_COLUMNS

pytest.importorskip("matplotlib")  # the optional "plot" extra

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SPEC = NetworkSpec((3, 4, 2), ("tanh", "identity"), bias=True)


class LargerStep(NumpyBackend):
    """Steps with 1.5x the learning rate: diverges at step 0's update, and the losses drift apart."""

    def __init__(self, spec: NetworkSpec, params: Sequence[LayerParams]) -> None:
        super().__init__(dataclasses.replace(spec, optimizer=SGD(1.5 * spec.optimizer.lr)), params)


def _run(candidate: type = NumpyBackend, steps: int = 8, keep_going: bool = False) -> Report:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(6, 3)), rng.normal(scale=0.5, size=(6, 2))
    params = init_params(SPEC, seed=2, scheme="torch")
    return verify(SPEC, x, y, steps=steps, params=params, candidate=candidate, keep_going=keep_going)


def _synthetic(steps: int, **columns: np.ndarray) -> Report:
    """A report with a made-up trace: zeros, NaNs and infinities where a test wants them."""
    rng = np.random.default_rng(1)
    data = {name: 10.0 ** rng.uniform(-16, -12, steps) for name in TRACE_COLUMNS}
    data["candidate_loss"] = data["reference_loss"] = np.linspace(1.0, 0.1, steps)
    data.update(columns)
    trace = pd.DataFrame(data, columns=TRACE_COLUMNS)
    trace.index.name = "step"
    return Report(
        ok=True, steps_run=steps, first_divergence=None, trace=trace, steps=steps, rtol=1e-9, atol=1e-12
    )


def _assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert path.stat().st_size > 10_000
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []  # no temporary left


def test_the_trace_csv_reads_back_as_the_trace(tmp_path: Path) -> None:
    report = _run()
    path = write_trace_csv(report, tmp_path / "trace.csv")
    back = pd.read_csv(path, index_col="step")
    assert list(back.columns) == TRACE_COLUMNS
    pd.testing.assert_frame_equal(back, report.trace, check_exact=True)


@pytest.mark.parametrize(("candidate", "keep_going"), [(NumpyBackend, False), (LargerStep, True)])
def test_a_run_is_plotted(tmp_path: Path, candidate: type, keep_going: bool) -> None:
    report = _run(candidate, keep_going=keep_going)
    assert report.ok == (candidate is NumpyBackend)
    _assert_png(plot_report(report, tmp_path / "run.png"))


@pytest.mark.parametrize(
    "report",
    [
        pytest.param(_synthetic(0), id="no-steps"),
        pytest.param(_synthetic(1), id="one-step"),
        pytest.param(_synthetic(5000), id="long-run-thinned"),
        pytest.param(_synthetic(20, forward_rel_err=np.full(20, np.nan)), id="no-forward-stage"),
        pytest.param(_synthetic(20, loss_rel_err=np.zeros(20)), id="exact-agreement"),
        pytest.param(
            _synthetic(20, update_rel_err=np.r_[np.zeros(10), np.inf, np.ones(9)]),
            id="infinite-relative-error",
        ),
        pytest.param(
            _synthetic(20, candidate_loss=np.r_[np.linspace(1, 0.5, 10), np.full(10, np.nan)]), id="nan-loss"
        ),
        pytest.param(_synthetic(20, candidate_loss=np.linspace(-1, 1, 20)), id="negative-loss-linear-axis"),
    ],
)
def test_any_trace_plots(tmp_path: Path, report: Report) -> None:
    _assert_png(plot_report(report, tmp_path / "run.png"))


def test_other_formats_follow_the_suffix(tmp_path: Path) -> None:
    path = plot_report(_synthetic(10), tmp_path / "run.svg")
    assert path.read_text().lstrip().startswith("<?xml")


def test_a_missing_directory_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(NnparityError, match="does not exist"):
        plot_report(_synthetic(3), tmp_path / "nowhere" / "run.png")
    with pytest.raises(NnparityError, match="does not exist"):
        write_trace_csv(_synthetic(3), tmp_path / "nowhere" / "trace.csv")


def test_a_failed_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "trace.csv"
    path.write_text("old\n")
    report = _synthetic(3)

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_csv", broken)
    with pytest.raises(NnparityError, match="No space left"):
        write_trace_csv(report, path)
    assert path.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trace.csv"]


def test_the_divergence_is_marked(tmp_path: Path) -> None:
    """The marker sits on the stage that diverged, at the step it did."""
    report = _run(LargerStep, keep_going=True)
    d = report.first_divergence
    assert d is not None
    assert (d.step, d.stage) == (0, "update")
    assert math.isfinite(report.trace["update_rel_err"].iloc[0])
    _assert_png(plot_report(report, tmp_path / "diverged.png"))


@pytest.mark.parametrize("steps", [8, 2000])  # every step drawn; thinned to the max of each run of steps
def test_a_non_finite_divergence_is_ringed_at_the_top(steps: int) -> None:
    """A NaN difference has a NaN relative error, which max(nan, floor) and thinning's fmax would
    hide: the ring goes to the top of the axis, where infinities are drawn."""
    from matplotlib.figure import Figure

    from nnparity.plot import _plot_errors
    from nnparity.report import Divergence

    rel = np.full(steps, 1e-14)
    rel[5] = np.nan
    nan = float("nan")
    divergence = Divergence(5, "gradient", 0, "weight", (0, 0), nan, 1.0, nan, nan)
    report = dataclasses.replace(
        _synthetic(steps, gradient_rel_err=rel), ok=False, first_divergence=divergence
    )
    ax = Figure().subplots()
    _plot_errors(ax, report, np.arange(steps, dtype=float), None)
    (ring,) = [line for line in ax.get_lines() if line.get_label() == "first divergence"]
    y = float(ring.get_ydata()[0])  # type: ignore[index]
    assert math.isfinite(y)
    assert y > 1e-9  # above the tolerance line, not at the error floor


# --- the command line ----------------------------------------------------------------------------------


def test_verify_writes_the_trace_and_the_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv, png = tmp_path / "trace.csv", tmp_path / "run.png"
    assert main(["verify", "--steps", "25", "--report", str(csv), "--plot", str(png)]) == 0
    assert "agree at every step of 25" in capsys.readouterr().out
    assert len(pd.read_csv(csv, index_col="step")) == 25
    _assert_png(png)


@pytest.mark.parametrize("flag", ["--report", "--plot"])
def test_an_unwritable_output_fails_before_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str
) -> None:
    assert main(["verify", "--steps", "10000", flag, str(tmp_path / "missing" / "out")]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "does not exist" in captured.err


def test_a_format_matplotlib_cannot_write_fails_before_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["verify", "--steps", "10000", "--plot", str(tmp_path / "run.xyz")]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"Cannot plot to {tmp_path / 'run.xyz'}: matplotlib writes " in captured.err
    assert "png" in captured.err
