"""The reference in a worker process (nnparity.worker) gives the very report the serial run gives."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from nnparity import SGD, StepResult, verify
from nnparity.dataset import or_table
from nnparity.notebook import notebook_spec
from nnparity.numpy_backend import NumpyBackend
from nnparity.torch_backend import TorchBackend
from nnparity.worker import Worker, can_fork

pytestmark = pytest.mark.skipif(not can_fork(), reason="the worker needs fork and two cores")

STEPS = 2600  # over PARALLEL_MIN_STEPS: long enough for the worker


class WrongFromStep1000(NumpyBackend):
    """Doubles the output layer's weight gradient from step 1000 on."""

    steps = 0

    def step(self, x: np.ndarray, y: np.ndarray) -> StepResult:
        result = super().step(x, y)
        if self.steps >= 1000:
            result.grads[-1].weight[...] *= 2.0
        self.steps += 1
        return result


@pytest.fixture
def workers(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many workers the test started (so a test cannot pass by running serially)."""
    started: list[int] = []
    init = Worker.__init__

    def counted(self: Worker, *args: object, **kwargs: object) -> None:
        started.append(1)
        init(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Worker, "__init__", counted)
    return started


def _both(**kwargs: object) -> tuple[object, object]:
    data, spec = or_table(), kwargs.pop("spec", notebook_spec())
    runs = [verify(spec, data.x, data.y, parallel=p, **kwargs) for p in (True, False)]  # type: ignore[arg-type]
    return runs[0], runs[1]


@pytest.mark.parametrize("mode", ["free", "resync"])
def test_a_run_in_the_worker_reports_what_a_serial_run_does(mode: str, workers: list[int]) -> None:
    momentum = dataclasses.replace(notebook_spec(), optimizer=SGD(lr=0.05, momentum=0.9))
    parallel, serial = _both(spec=momentum, steps=STEPS, mode=mode)
    assert workers == [1]
    assert parallel.to_json() == serial.to_json()
    assert parallel.trace.equals(serial.trace)
    for side in ("candidate", "reference"):
        for a, b in zip(parallel.final_params[side], serial.final_params[side]):
            np.testing.assert_array_equal(a.weight, b.weight)


def test_a_divergence_found_with_the_worker_is_placed_and_diagnosed_alike(workers: list[int]) -> None:
    parallel, serial = _both(steps=STEPS, candidate=WrongFromStep1000)
    assert workers == [1]
    assert parallel.to_json() == serial.to_json()
    d = parallel.first_divergence
    assert d is not None
    assert (d.step, d.stage, d.layer) == (1000, "gradient", 1)
    assert d.verdict == "candidate"


def test_a_reference_raising_in_the_worker_is_reported_as_in_the_parent(
    monkeypatch: pytest.MonkeyPatch, workers: list[int]
) -> None:
    calls = {"n": 0}
    step = TorchBackend.step

    def failing(self: TorchBackend, x: np.ndarray, y: np.ndarray) -> StepResult:
        calls["n"] += 1
        if calls["n"] > 1500:
            raise RuntimeError("out of luck")
        return step(self, x, y)

    monkeypatch.setattr(TorchBackend, "step", failing)
    report = verify(notebook_spec(), or_table().x, or_table().y, steps=STEPS)
    d = report.first_divergence
    assert d is not None
    assert (d.step, d.stage, d.verdict) == (1500, "step", "reference")
    assert d.message == "the reference's step() raised RuntimeError: out of luck"
    assert report.steps_run == 1500
    assert workers == [1]


def test_short_runs_and_other_references_stay_in_one_process(workers: list[int]) -> None:
    data, spec = or_table(), notebook_spec()
    assert verify(spec, data.x, data.y, steps=100).ok
    assert verify(spec, data.x, data.y, steps=STEPS, reference="numpy").ok
    assert verify(spec, data.x, data.y, steps=STEPS, parallel=False).ok
    assert workers == []
