"""The reference in a worker process (nnparity.worker) gives the very report the serial run gives."""

from __future__ import annotations

import dataclasses
import multiprocessing.connection
import os
import pickle
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
import torch

from nnparity import SGD, NetworkSpec, NnparityError, StepResult, init_params, verify
from nnparity.compare import RowLayout
from nnparity.dataset import or_table
from nnparity.notebook import notebook_spec
from nnparity.numpy_backend import NumpyBackend
from nnparity.torch_backend import TorchBackend
from nnparity.worker import Worker, can_fork, shutdown

worker_module = __import__("nnparity.worker", fromlist=["_server"])

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


class RaisesAtStep1500(NumpyBackend):
    steps = 0

    def step(self, x: np.ndarray, y: np.ndarray) -> StepResult:
        self.steps += 1
        if self.steps > 1500:
            raise ValueError("candidate gave up")
        return super().step(x, y)


@pytest.mark.parametrize(
    "kwargs",
    [{"candidate": WrongFromStep1000, "keep_going": True}, {"candidate": RaisesAtStep1500}],
    ids=["keep-going", "candidate-raises"],
)
def test_the_worker_reports_the_rest_alike(kwargs: dict[str, object], workers: list[int]) -> None:
    parallel, serial = _both(steps=STEPS, **kwargs)
    assert workers == [1]
    assert parallel.to_json() == serial.to_json()
    assert parallel.trace.equals(serial.trace)
    assert not parallel.ok


def test_a_reference_raising_in_the_worker_is_reported_as_in_the_parent(
    monkeypatch: pytest.MonkeyPatch, workers: list[int]
) -> None:
    calls = {"n": 0}
    backward = TorchBackend._backward  # what step() and the worker's step_into() both call

    def failing(self: TorchBackend, x: np.ndarray, y: np.ndarray) -> object:
        calls["n"] += 1
        if calls["n"] > 1500:
            raise RuntimeError("out of luck")
        return backward(self, x, y)

    monkeypatch.setattr(TorchBackend, "_backward", failing)
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


@pytest.mark.parametrize(
    "spec",
    [
        notebook_spec(),
        NetworkSpec(
            (3, 4, 2), ("tanh", "identity"), bias=True, loss="cross_entropy", optimizer=SGD(0.1, momentum=0.9)
        ),
        NetworkSpec((3, 4, 4, 1), ("relu", "elu", "sigmoid"), bias=True, loss="bce", dtype="float32"),
        NetworkSpec((64, 64, 10), ("tanh", "identity"), bias=True),  # a large row: (fan_in, fan_out) order
    ],
    ids=["notebook", "bias-momentum", "float32-bce", "large-row"],
)
def test_step_into_writes_the_row_fill_would(spec: NetworkSpec) -> None:
    """The worker's fast path: TorchBackend.step_into gives, bit for bit, the row of step()."""
    rng = np.random.default_rng(5)
    x = rng.uniform(-1, 1, (6, spec.sizes[0])).astype(spec.dtype)
    y = rng.dirichlet(np.ones(spec.sizes[-1]), 6).astype(spec.dtype)
    params = init_params(spec, scheme="torch")
    layout = RowLayout(spec, len(x), forward=True)
    by_step, by_row = TorchBackend(spec, params), TorchBackend(spec, params)
    for i in range(4):  # momentum buffers and all
        if i == 2:  # sent to a worker halfway: what it kept of its parameters must follow them
            by_row = pickle.loads(pickle.dumps(by_row))
        want = np.empty(layout.width, dtype=spec.dtype)
        assert layout.fill(by_step.step(x, y), want) is not None
        got = np.empty(layout.width, dtype=spec.dtype)
        by_row.step_into(x, y, torch.from_numpy(got), layout.torch_order)
        np.testing.assert_array_equal(got, want, strict=True)


def test_a_worker_that_finished_first_is_not_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker may run to its last step well before the parent: it waits to be told the run is
    over, and the parent reads the reports it left (seen under load as BrokenPipeError, when the
    parent told the worker where it was on the pipe)."""
    receive = Worker.receive

    def late(self: Worker) -> object:
        time.sleep(0.05)  # the parent falls behind: the worker finishes first
        return receive(self)

    monkeypatch.setattr(Worker, "receive", late)
    data, spec = or_table(), notebook_spec()
    report = verify(spec, data.x, data.y, steps=STEPS)
    assert report.ok, report.summary()
    assert report.steps_run == STEPS


def _server_pid() -> int | None:
    server = worker_module._server
    return None if server is None or not server.process.is_alive() else server.process.pid


def test_one_worker_serves_the_runs_of_a_process_one_after_the_other() -> None:
    data, spec = or_table(), notebook_spec()
    first = verify(spec, data.x, data.y, steps=STEPS)
    pid = _server_pid()
    assert pid is not None
    second = verify(spec, data.x, data.y, steps=STEPS)
    assert _server_pid() == pid  # no new fork
    assert first.to_json() == second.to_json()
    assert first.trace.equals(second.trace)


def test_a_run_after_the_code_changed_gets_a_new_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker is a fork of the process as it was: a patch made (or undone) since must reach
    the reference, so the run starts a new worker."""
    data, spec = or_table(), notebook_spec()
    assert verify(spec, data.x, data.y, steps=STEPS).ok
    pid = _server_pid()
    backward = TorchBackend._backward

    def doubled(self: TorchBackend, x: np.ndarray, y: np.ndarray) -> object:
        activations, error = backward(self, x, y)
        for layer in self.linears:
            layer.weight.grad.mul_(2.0)  # type: ignore[union-attr]
        return activations, error

    monkeypatch.setattr(TorchBackend, "_backward", doubled)
    patched = verify(spec, data.x, data.y, steps=STEPS, keep_going=True)
    assert _server_pid() != pid
    d = patched.first_divergence
    assert d is not None
    assert (d.step, d.stage, d.verdict) == (0, "gradient", "reference")
    assert patched.divergent_steps == STEPS  # the worker's steps too: it runs the patched code
    monkeypatch.undo()
    pid = _server_pid()
    assert verify(spec, data.x, data.y, steps=STEPS).ok
    assert _server_pid() != pid


def test_a_worker_that_died_between_runs_is_replaced() -> None:
    data, spec = or_table(), notebook_spec()
    assert verify(spec, data.x, data.y, steps=STEPS).ok
    pid = _server_pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    worker_module._server.process.join(5)  # type: ignore[union-attr]
    report = verify(spec, data.x, data.y, steps=STEPS)
    assert report.ok, report.summary()
    assert _server_pid() not in (None, pid)


def test_an_interrupted_run_ends_its_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    data, spec = or_table(), notebook_spec()
    receive = Worker.receive
    calls = {"n": 0}

    def interrupted(self: Worker) -> object:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return receive(self)

    monkeypatch.setattr(Worker, "receive", interrupted)
    report = verify(spec, data.x, data.y, steps=STEPS)
    assert report.interrupted
    assert not report.ok
    assert worker_module._server is None  # killed, not left mid-run
    monkeypatch.undo()
    assert verify(spec, data.x, data.y, steps=STEPS).ok


def test_runs_in_two_threads_at_once_share_nothing() -> None:
    """One worker per process: a run that finds it taken runs serially, with the same report."""
    data, spec = or_table(), notebook_spec()
    reports: list[object] = []
    threads = [
        threading.Thread(target=lambda: reports.append(verify(spec, data.x, data.y, steps=STEPS)))
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    serial = verify(spec, data.x, data.y, steps=STEPS, parallel=False)
    assert len(reports) == 2
    for report in reports:
        assert report.to_json() == serial.to_json()  # type: ignore[attr-defined]


def test_shutdown_ends_the_worker_and_the_next_run_starts_one() -> None:
    data, spec = or_table(), notebook_spec()
    assert verify(spec, data.x, data.y, steps=STEPS).ok
    pid = _server_pid()
    shutdown()
    assert worker_module._server is None
    assert verify(spec, data.x, data.y, steps=STEPS).ok
    assert _server_pid() not in (None, pid)


def test_a_shorter_run_uses_a_worker_already_running(workers: list[int]) -> None:
    """Starting a worker pays for itself only in a long run; once one runs, shorter runs use it,
    and report what they would serially."""
    data, spec = or_table(), notebook_spec()
    shutdown()
    assert verify(spec, data.x, data.y, steps=300).ok
    assert workers == []  # none running: 300 steps stay in one process
    assert verify(spec, data.x, data.y, steps=STEPS).ok
    assert workers == [1]
    warm = verify(spec, data.x, data.y, steps=300)
    assert workers == [1, 1]
    assert warm.to_json() == verify(spec, data.x, data.y, steps=300, parallel=False).to_json()


def test_the_worker_holds_no_pipe_of_the_parent() -> None:
    """A pipe the process had when the worker started sees its end close when the process closes
    it (the worker, a fork, got a copy): a subprocess's output, say, is not held open."""
    data, spec = or_table(), notebook_spec()
    shutdown()
    read_end, write_end = os.pipe()
    try:
        assert verify(spec, data.x, data.y, steps=STEPS).ok  # starts a worker, a fork with both ends
        assert _server_pid() is not None
        os.close(write_end)
        ready, _, _ = select.select([read_end], [], [], 5.0)
        assert ready, "the worker still holds the pipe's write end"
        assert os.read(read_end, 1) == b""  # end of file
    finally:
        os.close(read_end)


def test_the_worker_ends_with_a_process_that_skips_its_exit_handlers(tmp_path: object) -> None:
    """os._exit (as a forked multiprocessing child ends) runs no atexit: the worker must still go."""
    script = textwrap.dedent(
        """
        import os
        from nnparity import verify
        from nnparity.dataset import or_table
        from nnparity.notebook import notebook_spec
        import nnparity.worker as worker
        data = or_table()
        assert verify(notebook_spec(), data.x, data.y, steps=3000).ok
        print(worker._server.process.pid, flush=True)
        os._exit(0)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    pid = int(done.stdout)
    deadline = time.monotonic() + 5.0
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid), "the worker outlived its process"


def _alive(pid: int) -> bool:
    """Running (a zombie no parent reaps has ended too)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_process_whose_sigterm_handler_ignores_it_still_exits() -> None:
    """At exit multiprocessing would send the worker SIGTERM and wait; a handler of the parent's,
    inherited by the fork, must not keep it (and so the process) alive."""
    script = textwrap.dedent(
        """
        import signal
        signal.signal(signal.SIGTERM, lambda *args: None)
        from nnparity import verify
        from nnparity.dataset import or_table
        from nnparity.notebook import notebook_spec
        data = or_table()
        assert verify(notebook_spec(), data.x, data.y, steps=3000).ok
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_the_worker_keeps_multiprocessing_s_own_pipes() -> None:
    """The pipes the worker lets go of are the parent's, not the one multiprocessing watches to
    tell that it is alive (its sentinel reads end-of-file only when the worker ends)."""
    data, spec = or_table(), notebook_spec()
    assert verify(spec, data.x, data.y, steps=STEPS).ok
    process = worker_module._server.process  # type: ignore[union-attr]
    assert multiprocessing.connection.wait([process.sentinel], timeout=0.2) == []
    shutdown()
    assert multiprocessing.connection.wait([process.sentinel], timeout=5.0) == [process.sentinel]


class WrongThenCtrlC(NumpyBackend):
    """A wrong loss at step ``wrong``, and Ctrl-C during step ``stop``."""

    wrong, stop = 280, 300

    def __init__(self, spec: NetworkSpec, params: list) -> None:  # type: ignore[type-arg]
        super().__init__(spec, params)
        self.k = -1

    def step(self, x: np.ndarray, y: np.ndarray) -> StepResult:
        self.k += 1
        if self.k == self.stop:
            raise KeyboardInterrupt
        result = super().step(x, y)
        return result._replace(loss=result.loss + 1.0) if self.k == self.wrong else result


@pytest.mark.parametrize(("wrong", "stop"), [(280, 300), (-1, 5), (-1, 2300)])
def test_ctrl_c_beside_the_worker_keeps_the_steps_already_run(
    wrong: int, stop: int, workers: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while the candidate runs its part of a block: the reference's part is read from the
    worker, and the report is the serial run's (the block used to be dropped, a divergence in it too)."""
    monkeypatch.setattr(WrongThenCtrlC, "wrong", wrong)
    monkeypatch.setattr(WrongThenCtrlC, "stop", stop)
    parallel, serial = _both(steps=3000, candidate=WrongThenCtrlC, keep_going=True)
    assert workers == [1]
    assert parallel.interrupted  # type: ignore[attr-defined]
    assert serial.interrupted  # type: ignore[attr-defined]
    assert parallel.to_json() == serial.to_json()  # type: ignore[attr-defined]
    assert parallel.steps_run == stop  # type: ignore[attr-defined]


def test_a_worker_that_dies_is_an_error_not_a_finding_about_the_reference() -> None:
    class KillsTheWorker(NumpyBackend):
        k = -1

        def step(self, x: np.ndarray, y: np.ndarray) -> StepResult:
            self.k += 1
            if self.k == 600:  # as the out-of-memory killer might
                os.kill(worker_module._server.process.pid, signal.SIGKILL)
            return super().step(x, y)

    data = or_table()
    with pytest.raises(NnparityError, match=r"worker process ended \(killed by SIGKILL\) after \d+ steps"):
        verify(notebook_spec(), data.x, data.y, steps=3000, candidate=KillsTheWorker)
    data = or_table()  # and the next run starts a new worker
    assert verify(notebook_spec(), data.x, data.y, steps=3000).ok
