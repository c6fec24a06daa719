"""Networks too large to copy a step into a row are compared in place (verify.DIRECT_ROW_BYTES),
with the very report the row-by-row comparison gives, with or without the reference in a worker."""

from __future__ import annotations

import time

import numpy as np
import pytest

from nnparity import SGD, LayerParams, NetworkSpec, StepResult, init_params, lockstep, verify
from nnparity.compare import RowLayout
from nnparity.numpy_backend import NumpyBackend
from nnparity.worker import can_fork
from test_misbehaving import KeepsReturnedArrays

SPEC = NetworkSpec((30, 40, 5), ("tanh", "identity"), bias=True, optimizer=SGD(0.01, momentum=0.9))
# Plain SGD: a run keeps one step before the current one, not two.
PLAIN = NetworkSpec((30, 40, 5), ("tanh", "identity"), bias=True, optimizer=SGD(0.01))
# Over compare.BIG_ROW numbers a step: its rows hold weights as the candidate does (RowLayout.oriented).
WIDE = NetworkSpec((30, 90, 5), ("tanh", "identity"), bias=True, optimizer=SGD(0.01, momentum=0.9))
RNG = np.random.default_rng(0)
X, Y = RNG.uniform(-1, 1, (8, 30)), RNG.uniform(-1, 1, (8, 5))


class NotebookOrder(NumpyBackend):
    """The built-in backend's numbers with every weight in C order, (fan_in, fan_out) row by row in
    memory, as a backend written like the notebook keeps them (NumpyBackend keeps torch's order)."""

    def step(self, x: np.ndarray, y: np.ndarray) -> StepResult:
        result = super().step(x, y)

        def c_order(layers: list[LayerParams]) -> list[LayerParams]:
            return [LayerParams(np.ascontiguousarray(p.weight), p.bias) for p in layers]

        return result._replace(grads=c_order(result.grads), params=c_order(result.params))


class NudgedFromStep10(NumpyBackend):
    steps = 0

    def step(self, x: np.ndarray, y: np.ndarray) -> StepResult:
        result = super().step(x, y)
        self.steps += 1
        if self.steps > 10:
            result.grads[0].weight[3, 7] *= 1.001
        return result


class SlowUpdateNudgedFromStep10(NumpyBackend):
    """Slow (so that a worker runs as far ahead as it may), with an update out of tolerance from
    step 10: with momentum, its diagnosis reads the two steps before."""

    steps = 0

    def step(self, x: np.ndarray, y: np.ndarray) -> StepResult:
        time.sleep(0.002)
        result = super().step(x, y)
        self.steps += 1
        if self.steps > 10:
            result.params[0].weight[3, 7] *= 1.001
        return result


def _run(
    direct: bool,
    monkeypatch: pytest.MonkeyPatch,
    parallel: bool = False,
    spec: NetworkSpec = SPEC,
    **kwargs: object,
) -> object:
    monkeypatch.setattr(lockstep, "DIRECT_ROW_BYTES", 0 if direct else 1 << 40)
    params = init_params(spec, scheme="torch")
    return verify(spec, X, Y, steps=30, params=params, parallel=parallel, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"mode": "resync"},
        {"candidate": NudgedFromStep10},
        {"candidate": NudgedFromStep10, "keep_going": True},
    ],
    ids=["free", "resync", "divergence", "keep-going"],
)
@pytest.mark.parametrize("spec", [SPEC, PLAIN], ids=["momentum", "plain-sgd"])
def test_in_place_comparison_reports_what_rows_do(
    kwargs: dict[str, object], spec: NetworkSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    in_place = _run(True, monkeypatch, spec=spec, **kwargs)
    rows = _run(False, monkeypatch, spec=spec, **kwargs)
    assert in_place.to_json() == rows.to_json()  # type: ignore[attr-defined]
    assert in_place.trace.equals(rows.trace)  # type: ignore[attr-defined]
    assert in_place.trace.notna().all().all()  # type: ignore[attr-defined]


def test_in_place_comparison_still_catches_returned_arrays_changed_later(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    report = _run(True, monkeypatch, candidate=KeepsReturnedArrays)
    d = report.first_divergence  # type: ignore[attr-defined]
    assert d is not None
    assert (d.step, d.stage, d.verdict) == (1, "step", "candidate")
    assert "changed, in place" in d.message


@pytest.mark.skipif(not can_fork(), reason="the worker needs fork and two cores")
@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"mode": "resync"},
        {"candidate": NudgedFromStep10},
        {"candidate": NudgedFromStep10, "keep_going": True},
        {"candidate": SlowUpdateNudgedFromStep10},
    ],
    ids=["free", "resync", "divergence", "keep-going", "update-divergence"],
)
@pytest.mark.parametrize("spec", [SPEC, WIDE, PLAIN], ids=["small-rows", "wide-rows", "plain-sgd"])
def test_in_place_comparison_against_a_worker_reports_what_rows_do(
    kwargs: dict[str, object], spec: NetworkSpec, monkeypatch: pytest.MonkeyPatch, workers: list[int]
) -> None:
    """The reference in a worker, writing shared rows, the candidate compared in place against
    them: the serial row-by-row report, the diagnosis (which reads the two steps before a
    divergence from the worker's ring) included."""
    monkeypatch.setattr(lockstep, "PARALLEL_MIN_SECONDS", 0.0)
    monkeypatch.setattr(lockstep, "WARM_MIN_SECONDS", 0.0)
    in_worker = _run(True, monkeypatch, parallel=True, spec=spec, **kwargs)
    assert workers == [1]
    rows = _run(False, monkeypatch, spec=spec, **kwargs)
    assert in_worker.to_json() == rows.to_json()  # type: ignore[attr-defined]
    assert in_worker.trace.equals(rows.trace)  # type: ignore[attr-defined]
    if kwargs.get("candidate") is SlowUpdateNudgedFromStep10:
        d = in_worker.first_divergence  # type: ignore[attr-defined]
        assert (d.step, d.stage, d.verdict) == (10, "update", "candidate")
    for side in ("candidate", "reference"):
        for a, b in zip(in_worker.final_params[side], rows.final_params[side]):  # type: ignore[attr-defined]
            np.testing.assert_array_equal(a.weight, b.weight)


def test_a_long_run_of_a_network_too_large_to_share_stays_in_one_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """parallel=True (the default) with rows too large to share: compared in place, no worker."""
    monkeypatch.setattr(lockstep, "DIRECT_ROW_BYTES", 0)
    monkeypatch.setattr(lockstep, "PARALLEL_MAX_ROW_BYTES", 0)
    monkeypatch.setattr(lockstep, "PARALLEL_MIN_SECONDS", 0.0)
    monkeypatch.setattr(lockstep, "WARM_MIN_SECONDS", 0.0)
    started: list[object] = []
    monkeypatch.setattr(lockstep, "Worker", lambda *args: started.append(args))
    report = verify(SPEC, X, Y, steps=40, params=init_params(SPEC, scheme="torch"))
    assert report.ok
    assert started == []


def test_wide_rows_follow_the_order_of_the_candidate_s_weights() -> None:
    params = init_params(WIDE, scheme="torch")
    torch_kept, c_kept = NumpyBackend(WIDE, params).step(X, Y), NotebookOrder(WIDE, params).step(X, Y)
    layout = RowLayout(WIDE, len(X), forward=True)
    assert not layout.torch_order
    assert layout.oriented(torch_kept).torch_order
    assert layout.oriented(c_kept) is layout
    assert layout.oriented(object()) is layout  # a malformed result: as it was
    small = RowLayout(SPEC, len(X), forward=True)
    assert small.torch_order
    assert small.oriented(NotebookOrder(SPEC, init_params(SPEC, scheme="torch")).step(X, Y)) is small
    for result in (torch_kept, c_kept):  # either way, a row gives back the numbers it was filled with
        for oriented in (layout, layout.oriented(torch_kept)):
            row = np.empty(oriented.width)
            assert oriented.fill(result, row) is not None
            back = oriented.unflatten(row)
            for a, b in zip(back.grads + back.params, result.grads + result.params):
                np.testing.assert_array_equal(a.weight, b.weight, strict=True)


class NudgedInNotebookOrder(NudgedFromStep10, NotebookOrder):
    """NudgedFromStep10's nudge, made to NotebookOrder's C-ordered copies."""


@pytest.mark.parametrize("where", ["rows", "in-place", "worker"])
@pytest.mark.parametrize(
    "pair",
    [(NumpyBackend, NotebookOrder), (NudgedFromStep10, NudgedInNotebookOrder)],
    ids=["agreeing", "nudged"],
)
def test_the_candidate_s_weight_order_changes_no_number_of_the_report(
    where: str, pair: tuple[type, type], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows in torch's order for NumpyBackend's weights, (fan_in, fan_out) for a notebook-ordered
    candidate with the same numbers: the same report, whichever way the run compares."""
    if where == "worker":
        if not can_fork():
            pytest.skip("the worker needs fork and two cores")
        monkeypatch.setattr(lockstep, "PARALLEL_MIN_SECONDS", 0.0)
        monkeypatch.setattr(lockstep, "WARM_MIN_SECONDS", 0.0)
    direct, parallel = where != "rows", where == "worker"
    torch_kept, c_kept = (
        _run(direct, monkeypatch, parallel=parallel, spec=WIDE, candidate=candidate, keep_going=True)
        for candidate in pair
    )
    assert torch_kept.trace.equals(c_kept.trace)  # type: ignore[attr-defined]
    assert len(torch_kept.trace) == 30  # type: ignore[attr-defined]
    assert torch_kept.first_divergence == c_kept.first_divergence  # type: ignore[attr-defined]
    assert (torch_kept.first_divergence is None) == (pair[0] is NumpyBackend)  # type: ignore[attr-defined]


def test_a_large_run_holds_few_copies_of_the_parameters(monkeypatch: pytest.MonkeyPatch) -> None:
    """Memory (target 4 of #6): compared in place, a run keeps only the last steps' results, lets
    the starting weights go after step 1 and the older results go before copying the final
    parameters. numpy against numpy, so that tracemalloc sees every array: 12.5 copies of the
    parameters at its peak before, 10.6 since."""
    import tracemalloc

    monkeypatch.setattr(lockstep, "DIRECT_ROW_BYTES", 0)
    spec = NetworkSpec((300, 300, 10), ("tanh", "identity"), optimizer=SGD(0.01))
    x, y = RNG.uniform(-1, 1, (4, 300)), RNG.uniform(-1, 1, (4, 10))
    params = init_params(spec, scheme="torch")
    copy = sum(p.weight.nbytes for p in params)
    verify(
        spec, x, y, steps=3, params=params, candidate="numpy", reference="numpy", parallel=False
    )  # imports
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        report = verify(
            spec, x, y, steps=30, params=params, candidate="numpy", reference="numpy", parallel=False
        )
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert report.ok
    assert (peak - before) / copy < 11.5
