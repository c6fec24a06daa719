"""``nnparity check``: it finds each planted bug, shrinks it to a small network whose files
``nnparity verify`` re-runs to the same divergence, and passes correct backends."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from nnparity import LayerParams, NetworkSpec, NnparityError, StepResult
from nnparity.cli import main
from nnparity.config import load_config
from nnparity.dataset import load_csv
from nnparity.numpy_backend import NumpyBackend
from nnparity.search import CONFIG_NAME, CSV_NAME, Case, describe, run_case, search, write_reproduction

TESTS = Path(__file__).parent
SEED = "0"  # a fixed search, so that the test is the same on every run


@pytest.fixture(autouse=True)
def _buggy_backends_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(TESTS))


def _check(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    status = main(["check", *argv])
    return status, capsys.readouterr().out


def _divergence_line(output: str) -> str:
    return next(line for line in output.splitlines() if line.startswith("Step "))


# What the smallest network showing each bug must have.
PLANTED: dict[str, Callable[[Case], bool]] = {
    "SignFlip": lambda c: True,
    "TanhFromInput": lambda c: "tanh" in c.spec.activations,
    "LeakyAsRelu": lambda c: "leaky_relu" in c.spec.activations,
    "MeanOverRows": lambda c: c.spec.reduction == "mean" and c.spec.sizes[-1] >= 2,
    "BiasMean": lambda c: c.spec.bias and c.x.shape[0] >= 2,
    "DampenedFirstStep": lambda c: c.spec.optimizer.momentum > 0 and c.spec.optimizer.dampening > 0,
    "NesterovIgnored": lambda c: c.spec.optimizer.nesterov,
    "NoWeightDecay": lambda c: c.spec.optimizer.weight_decay > 0,
    "Float32Inside": lambda c: c.spec.dtype == "float64",
}


@pytest.mark.parametrize("name", list(PLANTED))
def test_check_finds_and_shrinks_each_planted_bug(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    candidate = f"buggy_backends:{name}"
    status, out = _check([candidate, "--seed", SEED, "--out", str(tmp_path)], capsys)
    assert status == 1, out
    assert "DIVERGENCE" in out
    config = load_config(tmp_path / CONFIG_NAME)
    data = load_csv(tmp_path / CSV_NAME, targets=config.targets)
    case = Case(config.spec, data.x, data.y, config.scheme, config.seed, config.steps, config.mode)
    assert PLANTED[name](case), config
    # Small: one weight layer, at most two units a layer, two rows, one step.
    assert case.spec.n_layers == 1
    assert max(case.spec.sizes) <= 2
    assert case.x.shape[0] <= 2
    assert case.steps == 1
    # The printed reproduction is the written one.
    assert (tmp_path / CONFIG_NAME).read_text() in out
    # And `nnparity verify` re-runs it to the same divergence.
    status = main(["verify", "--config", str(tmp_path / CONFIG_NAME), "--candidate", candidate])
    verified = capsys.readouterr().out
    assert status == 1
    assert _divergence_line(verified) == _divergence_line(out)


def _project_planted_bugs() -> list[tuple[str, str, NetworkSpec]]:
    """The planted bugs of test_planted_bugs.py: (``module:Class``, the stage it shows at, its spec)."""
    try:
        import test_planted_bugs
    except ImportError:  # pragma: no cover - the other suite is not there
        return []
    table = getattr(test_planted_bugs, "LOCATED", {})
    return [(f"{cls.__module__}:{cls.__qualname__}", where[1], spec) for cls, spec, where in table.values()]


@pytest.mark.parametrize(
    ("candidate", "stage", "spec"),
    [pytest.param(*bug, id=bug[0].partition(":")[2]) for bug in _project_planted_bugs()],
)
def test_check_finds_the_project_planted_bugs(
    candidate: str, stage: str, spec: NetworkSpec, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Those backends are written for networks like their own spec (three layers with biases,
    # MSE, float64), so the search is narrowed to those, as a user narrows it to theirs.
    narrow = ["--min-layers", str(spec.n_layers), "--losses", spec.loss, "--dtypes", spec.dtype]
    narrow += ["--bias", "on" if spec.bias else "off"]
    status, out = _check([candidate, "--seed", SEED, "--out", str(tmp_path), *narrow], capsys)
    assert status == 1, out
    config = load_config(tmp_path / CONFIG_NAME)
    assert config.spec.n_layers == spec.n_layers
    assert max(config.spec.sizes) <= 2
    assert config.steps <= 2
    # The planted stage, or the backend's own crash on a network narrower than it assumes.
    place = {"forward": "activation of layer", "loss": "loss", "gradient": "gradient of", "update": "updated"}
    line = _divergence_line(out)
    assert place[stage] in line or "raised" in line, line
    status = main(["verify", "--config", str(tmp_path / CONFIG_NAME), "--candidate", candidate])
    assert status == 1
    assert _divergence_line(capsys.readouterr().out) == _divergence_line(out)


@pytest.mark.parametrize("candidate", ["buggy_backends:Correct", "numpy"])
def test_check_passes_a_correct_backend(
    candidate: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out = _check([candidate, "--seed", SEED, "--out", str(tmp_path)], capsys)
    assert status == 0, out
    assert "no divergence in 100 networks" in out
    assert "per second" in out
    assert not any(tmp_path.iterdir())


def test_options_narrow_the_search_to_what_a_backend_supports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    candidate = "buggy_backends:NoBiasSupport"
    status, out = _check([candidate, "--seed", SEED, "--out", str(tmp_path), "--examples", "30"], capsys)
    assert status == 1
    assert "NotImplementedError: biases are not supported" in out
    assert load_config(tmp_path / CONFIG_NAME).spec.bias is True
    status, out = _check([candidate, "--seed", SEED, "--bias", "off", "--examples", "30"], capsys)
    assert status == 0, out


def test_a_bug_outside_the_narrowed_search_is_not_found(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["buggy_backends:TanhFromInput", "--seed", SEED, "--activations", "identity,sigmoid,relu"]
    status, out = _check([*argv, "--examples", "50"], capsys)
    assert status == 0, out


def test_the_reproduction_is_exact(tmp_path: Path) -> None:
    result = search("buggy_backends:Float32Inside", seed=1, examples=50)
    assert result.finding is not None
    assert result.finding.report is not None
    case = result.finding.case
    config_path, csv_path = write_reproduction(result, tmp_path)
    config = load_config(config_path)
    data = load_csv(csv_path, targets=config.targets)
    assert config.spec == case.spec
    assert (config.scheme, config.seed, config.steps, config.mode) == (
        case.scheme,
        case.seed,
        case.steps,
        case.mode,
    )
    np.testing.assert_array_equal(data.x.astype(case.spec.np_dtype), case.x)
    np.testing.assert_array_equal(data.y.astype(case.spec.np_dtype), case.y)
    # Re-run from the files, the case diverges at the same element by the same amount.
    rerun = Case(config.spec, data.x, data.y, config.scheme, config.seed, config.steps, config.mode)
    report = run_case(rerun, "buggy_backends:Float32Inside")
    assert report.first_divergence == result.finding.report.first_divergence


def test_same_seed_same_search() -> None:
    first = search("buggy_backends:BiasMean", seed=5, examples=50)
    second = search("buggy_backends:BiasMean", seed=5, examples=50)
    assert first.finding is not None
    assert second.finding is not None
    assert first.runs == second.runs
    assert first.finding.case.spec == second.finding.case.spec
    assert first.finding.report is not None
    assert second.finding.report is not None
    assert first.finding.report.first_divergence == second.finding.report.first_divergence


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["nosuchmodule_xyz:Cls"], "Cannot find backend module 'nosuchmodule_xyz'"),
        (["numpy", "--reference", "jax"], "Unknown backend 'jax'"),
        (["numpy", "--activations", "swish"], "unknown activations ['swish']"),
        (["numpy", "--losses", "bce", "--activations", "relu"], "needs the output activation sigmoid"),
        (["numpy", "--dtypes", "float16"], "unknown dtypes ['float16']"),
        (["numpy", "--modes", "sometimes"], "modes must name some of free, resync"),
        (["numpy", "--examples", "0"], "expected a number from 1"),
        (["numpy", "--seed", "-1"], "expected a number from 0"),
        (["numpy", "--bias", "maybe"], "invalid choice"),
        (["numpy", "--activations", "relu,,tanh"], "expected comma-separated names"),
        ([], "the following arguments are required: CANDIDATE"),
    ],
)
def test_bad_usage_exits_2_with_one_line(
    argv: list[str], fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        status = main(["check", *argv])
    except SystemExit as exc:  # argparse's own usage errors
        status = exc.code
    err = capsys.readouterr().err
    assert status == 2
    assert fragment in err
    assert "Traceback" not in err


def test_verify_reruns_the_files_in_a_fresh_process(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    candidate = "buggy_backends:BiasMean"
    status, out = _check([candidate, "--seed", SEED, "--out", str(tmp_path)], capsys)
    assert status == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [CSV_NAME, CONFIG_NAME]  # no temporary files left
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    verify = subprocess.run(
        [sys.executable, "-m", "nnparity", "verify", "--config", CONFIG_NAME, "--candidate", candidate],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert verify.returncode == 1, verify.stderr
    assert _divergence_line(verify.stdout) == _divergence_line(out)


# --- a search that does not end in a plain finding ------------------------------------------------------


class Numbered(NumpyBackend):
    """Knows which of its class's instances it is (``nth``, from 1; reset ``made`` to start over)."""

    made = 0

    def __init__(self, spec: NetworkSpec, params: list[LayerParams]) -> None:
        super().__init__(spec, params)
        type(self).made += 1
        self.nth = type(self).made


class InterruptedOnThirdNetwork(Numbered):
    """Ctrl-C, as a user presses it, during the third network's run."""

    def step(self, x: np.ndarray, y: np.ndarray) -> StepResult:
        if self.nth == 3:
            raise KeyboardInterrupt
        return super().step(x, y)


def test_ctrl_c_ends_the_search_and_is_no_divergence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(InterruptedOnThirdNetwork, "made", 0)
    result = search(InterruptedOnThirdNetwork, examples=20, seed=0)
    assert result.interrupted
    assert result.finding is None
    assert result.examples == 2
    monkeypatch.setattr(InterruptedOnThirdNetwork, "made", 0)
    status, out = _check(
        [f"{__name__}:InterruptedOnThirdNetwork", "--seed", SEED, "--out", str(tmp_path)], capsys
    )
    assert status == 1  # as for verify: a run cut short is not a pass
    assert "interrupted; no divergence in the 2 networks verified" in out
    assert not list(tmp_path.iterdir())  # nothing to reproduce


class WrongOnlyOnce(Numbered):
    """Wrong (the update's sign) in the first network it is built for, right ever after."""

    def step(self, x: np.ndarray, y: np.ndarray) -> StepResult:
        result = super().step(x, y)
        if self.nth != 1:
            return result
        flipped = [p._replace(weight=-p.weight) for p in result.params]
        return result._replace(params=flipped)


def test_a_failure_that_does_not_repeat_is_called_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(WrongOnlyOnce, "made", 0)
    result = search(WrongOnlyOnce, examples=5, seed=0)
    assert result.finding is not None
    assert not result.finding.reproduced
    text = describe(result, write_reproduction(result, tmp_path))
    assert "did not happen again when this case was run once more" in text
    assert "not deterministic" in (tmp_path / CONFIG_NAME).read_text(encoding="utf-8")


class ExitsInStep(NumpyBackend):
    def step(self, x: np.ndarray, y: np.ndarray) -> StepResult:
        raise SystemExit(0)


def test_a_backend_calling_sys_exit_is_a_finding_not_a_silent_pass() -> None:
    result = search(ExitsInStep, examples=3, seed=0)
    assert result.finding is not None
    assert "raised SystemExit" in result.finding.summary()


def test_a_recording_cannot_be_searched_against() -> None:
    with pytest.raises(NnparityError, match="recording of one run; check verifies many networks"):
        search("numpy", reference="notebook_trajectory.npz", examples=1, seed=0)


def test_the_reproduction_says_how_to_rerun_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "my repro"
    status, printed = _check(["buggy_backends:SignFlip", "--seed", SEED, "--out", str(out)], capsys)
    assert status == 1
    command = f"nnparity verify --config '{out / CONFIG_NAME}' --candidate buggy_backends:SignFlip"
    assert command in printed
    assert command in (out / CONFIG_NAME).read_text(encoding="utf-8")


def test_an_out_directory_whose_files_cannot_be_written_is_refused_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / CONFIG_NAME).mkdir()
    status = main(["check", "buggy_backends:SignFlip", "--seed", SEED, "--out", str(tmp_path)])
    assert status == 2
    assert f"Cannot write {tmp_path / CONFIG_NAME}: it is a directory" in capsys.readouterr().err
    assert not (tmp_path / CSV_NAME).exists()  # refused before the search, not after it
