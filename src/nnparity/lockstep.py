"""The lockstep run behind :func:`nnparity.verify`: both backends step by step, block by block,
compared and recorded, and the first divergence diagnosed."""

from __future__ import annotations

import contextlib
import copy
import functools
import time
from contextlib import ExitStack
from dataclasses import replace
from typing import Any

import numpy as np

from nnparity.backend import Backend
from nnparity.compare import STAGES, Comparator, RowLayout, _has_activations
from nnparity.diagnosis import StepRecord, diagnose
from nnparity.errors import NnparityError
from nnparity.records import LayerParams, StepResult, copy_params
from nnparity.report import Divergence
from nnparity.spec import NetworkSpec
from nnparity.worker import Worker, server_free, server_ready

TRACE_COLUMNS = [
    "candidate_loss",
    "reference_loss",
    *(f"{stage}_{kind}" for stage in STAGES for kind in ("abs_err", "rel_err")),
]


@functools.cache
def _blas_threads() -> Any:
    """threadpoolctl's view of the BLAS libraries loaded (numpy's), found once: a search of the
    loaded libraries costs 2-5 ms."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


class _Trace:
    """A few numbers per step, in a block grown by doubling (a huge ``steps`` costs nothing upfront)."""

    def __init__(self, steps: int) -> None:
        self._rows = np.full((min(steps, 1024), len(TRACE_COLUMNS)), np.nan)
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def extend(self, rows: np.ndarray) -> None:
        """Append rows of ``TRACE_COLUMNS``."""
        while self._n + len(rows) > len(self._rows):
            self._rows = np.concatenate([self._rows, np.full_like(self._rows, np.nan)])
        self._rows[self._n : self._n + len(rows)] = rows
        self._n += len(rows)

    def rows(self) -> np.ndarray:
        return self._rows[: self._n]


# Steps are run and compared in blocks: each backend runs a block of steps on its own (switching
# between numpy and torch at every step costs ~20% in cache misses), then the block is compared at
# once. Small networks take 256 steps a block; one whose rows would not fit in BLOCK_BYTES, fewer.
BLOCK_STEPS = 256
BLOCK_BYTES = 4 * 2**20  # per side and block
# The reference goes to a worker process when the run is worth starting one (the fork and its
# faults, ~20-40 ms): at least PARALLEL_MIN_STEPS steps for a small network (full blocks), or, for a
# larger one, when the reference's first step times the steps comes to PARALLEL_MIN_SECONDS. Once
# started it is kept for the process's later runs, and shorter ones use it too (WARM_*: the
# notebook's network, 300 steps: 38 ms serially, 34 with it; 1,000 steps: 121 and 95 ms).
PARALLEL_MIN_STEPS = 2048
PARALLEL_MIN_SECONDS = 0.1
WARM_MIN_STEPS = BLOCK_STEPS + 1
WARM_MIN_SECONDS = 0.02
PARALLEL_MAX_ROW_BYTES = 8 * 2**20  # beyond, a second model and shared rows cost too much memory
# A step's results beyond this size (a block of one step) are compared where they are, never
# copied: the run keeps only the last steps' results (two, three with momentum, for the diagnosis)
# beside the models. With a worker, the reference's results come in shared rows (DIRECT_RING of
# them), against which the candidate's arrays are compared in place, never copied; beyond
# PARALLEL_MAX_ROW_BYTES there is no worker. The rows hold weights in the candidate's memory order
# (RowLayout.oriented): reading a side's weights across costs more than comparing them, whichever
# side pays (784-256-256-10, 100 steps, float64: the worker's transposing copies 0.35 ms a step;
# NumpyBackend keeps torch's order, so neither side transposes: 5.0 -> 4.8 ms a step, float32
# 2.8 -> 2.5).
DIRECT_ROW_BYTES = BLOCK_BYTES // 2
DIRECT_RING = 5  # the step compared, the two before it, and the one the worker runs ahead


class _Side:
    """One backend: its rows of results, the results that did not fit a row, and how a block ended."""

    def __init__(self, role: str, backend: Backend, x: np.ndarray, y: np.ndarray) -> None:
        self.role = role
        self.backend = backend
        self.x, self.y = x, y
        self.rows = np.empty((0, 0))
        self.odd: dict[int, object] = {}  # step -> a result that did not fit the layout
        self.kept: dict[int, object] = {}  # step -> a result compared in place (large networks)
        self.n = 0  # steps with a result this block
        self.error: tuple[int, str, BaseException] | None = None  # (step, method, exception)
        self.seconds = 0.0
        self.returned: list[object] = []  # the arrays the last step returned
        self.misbehaved: list[tuple[int, int, Divergence, bool]] = []  # findings this block


class Lockstep:
    """The lockstep run: both backends, block by block, and what the comparison found."""

    def __init__(
        self,
        spec: NetworkSpec,
        x: np.ndarray,
        y: np.ndarray,
        start: list[LayerParams],
        cand: Backend,
        ref: Backend,
        comparator: Comparator,
        mode: str,
        keep_going: bool,
        diagnosis: bool,
    ) -> None:
        self.spec, self.x, self.y, self.start = spec, x, y, start
        self.comparator = comparator
        self.mode, self.keep_going, self.diagnosis = mode, keep_going, diagnosis
        # A backend must not change its inputs: the candidate gets read-only views (writing to them
        # raises where it happens); the reference gets copies, checked after every block.
        x_view, y_view = x.view(), y.view()
        x_view.flags.writeable = False
        y_view.flags.writeable = False
        self.cand = _Side("candidate", cand, x_view, y_view)
        self.ref = _Side("reference", ref, x.copy(), y.copy())
        self.layout: RowLayout | None = None
        self.trace = _Trace(0)
        self.first: Divergence | None = None
        self.stopped_by: Divergence | None = None  # a failure that ended a keep-going run after `first`
        self.divergent = 0
        self.interrupted = False
        self.seconds = {"candidate": 0.0, "reference": 0.0}
        self.last_step = -1  # the last step recorded
        self._block = 1
        self._ring = 3
        self._rows = np.empty((0, len(TRACE_COLUMNS)))
        self.parallel = False
        self._direct = False  # compare results in place instead of copying them into rows
        self._row_bytes = 0
        self._history = 2  # steps kept before the current one (compared in place)
        self._worker: Worker | None = None
        self._worker_base = 0.0  # the reference's seconds before the worker took over
        self.final: dict[str, list[LayerParams]] = {}  # each side's parameters at the end (copies)

    # --- running -------------------------------------------------------------------------------------

    def run(self, steps: int, bar: Any) -> None:
        self.trace = _Trace(steps)
        t = 0
        limits = ExitStack()
        if self.parallel and self._worker_reference() and steps > 1:
            # Should the reference go to the worker after the first step, the candidate's BLAS
            # must already be on one thread: OpenBLAS's idle threads spin ~0.1 s after a call
            # (2^28 cycles), and on two cores one spinning beside the worker halved its speed for
            # the first 10-25 steps (784-256-256-10, float64: ~40 ms of a 100-step run).
            limits.enter_context(_blas_threads().limit(limits=1, user_api="blas"))
        try:
            while t < steps:
                # The first block is one step (the layout comes from its result); the others start
                # at multiples of the block size.
                over = self._run_block(t, min(self._block - t % self._block, steps - t))
                if self.last_step >= 1:  # the diagnosis reads the starting weights at steps 0 and 1 only
                    self.start = []
                if bar is not None:
                    bar.update(len(self.trace) - bar.n)
                if over:
                    break
                t = self.last_step + 1
                if t == 1 and not (self.parallel and self._start_worker(steps)):
                    limits.close()  # serial: the candidate's BLAS gets its threads back
        except KeyboardInterrupt:
            self.interrupted = True
        finally:
            limits.close()
            # The diagnosis is done: only the last step's results are still needed, for the final
            # parameters, and the copies of those are made after the rest is let go (a large
            # network's peak memory is here otherwise).
            for side in (self.cand, self.ref):
                side.kept = {s: r for s, r in side.kept.items() if s == self.last_step}
                side.odd = {s: r for s, r in side.odd.items() if s == self.last_step}
                side.returned = []
            # Read before the worker's rows are handed to the next run.
            self.final = self.final_params()
            if self._worker is not None:
                self._worker.close(interrupted=self.interrupted)
            self.seconds = {"candidate": self.cand.seconds, "reference": self.ref.seconds}

    def _start_worker(self, steps: int) -> bool:
        """After the first step: hand the reference to a worker process if it should go there."""
        if self.layout is None or not self._can_run_apart(steps):
            return False
        # The reference's first step stays in side.kept when there are no rows yet.
        so_far = self.ref.rows
        if self._direct:
            so_far = np.empty((0, self.layout.width), dtype=self.spec.np_dtype)
        try:
            ref, layout, block = self.ref, self.layout, self._block
            self._worker = Worker(ref.backend, layout, so_far, ref.x, ref.y, block, 1, steps, self._ring)
        except RuntimeError:  # another thread's run has it, or it cannot take this one
            return False
        self.ref.rows = self._worker.rows
        self._worker_base = self.ref.seconds
        # Two processes on two cores: the candidate's BLAS stays on one thread, as torch is in the
        # worker (with more, each stalls the other: 1.5x slower, measured).
        return True

    def _worker_reference(self) -> bool:
        """Whether the reference could go to a worker process: the built-in torch backend on the CPU
        (a user's could depend on its process, or change its inputs where the parent would not
        see it; a GPU does not survive a fork)."""
        kind = type(self.ref.backend)
        builtin = (kind.__module__, kind.__qualname__) == ("nnparity.torch_backend", "TorchBackend")
        return builtin and getattr(kind, "device", None) == "cpu"

    def _can_run_apart(self, steps: int) -> bool:
        """Whether the reference goes to a worker process: one that can (:meth:`_worker_reference`),
        a run long enough (see PARALLEL_MIN_STEPS, and WARM_* once a worker runs)."""
        if not self._worker_reference():
            return False
        if not server_free():  # another thread's run has the worker
            return False
        if self._row_bytes > PARALLEL_MAX_ROW_BYTES:  # rows too large to share
            return False
        # Whether a worker already runs (~0.1 ms to check its code) matters only in between.
        if self._block == BLOCK_STEPS:
            if steps < WARM_MIN_STEPS:
                return False
            return steps >= PARALLEL_MIN_STEPS or server_ready()
        seconds = steps * self.ref.seconds
        if steps < 3 * self._block or seconds < WARM_MIN_SECONDS:
            return False
        return seconds >= PARALLEL_MIN_SECONDS or server_ready()

    def _run_block(self, t: int, k: int) -> bool:
        """Steps ``t`` to ``t + k - 1``: run, compare, record; ``True`` when the run is over."""
        for side in (self.cand, self.ref):
            side.odd = {s: r for s, r in side.odd.items() if s >= t - 2}  # kept for the diagnosis
            side.kept = {s: r for s, r in side.kept.items() if s >= t - self._history}
            side.n, side.error, side.misbehaved = 0, None, []
        pending = False  # the worker's report of this block is still to be read
        try:
            if self._worker is not None and self.mode == "free":
                # The candidate's steps first, while the worker may still be on its own (at its start
                # it is slower): they overlap. Should the reference have raised within the block,
                # the candidate's later steps are not compared, and the report is the same.
                self._worker.at(t)
                pending = True
                self._run_side(self.cand, t, k)
                pending = False
                self._receive()
            else:
                if self._worker is None:
                    self._run_side(self.ref, t, k)
                else:  # resync: the candidate takes up the reference's parameters after each step
                    self._worker.at(t)
                    self._receive()
                # The candidate also takes the step where the reference raised: its own error comes
                # first.
                self._run_side(self.cand, t, self.ref.n + (self.ref.error is not None))
        except KeyboardInterrupt:
            if pending:  # Ctrl-C during the candidate's steps: the reference's are being written
                with contextlib.suppress(KeyboardInterrupt):  # (a second Ctrl-C gives them up)
                    self._receive()  # compared up to the candidate's last step, as when serial
            self._settle(t)
            raise
        return self._settle(t)

    def _receive(self) -> None:
        """The worker's report of the reference's block."""
        assert self._worker is not None
        done = self._worker.receive()
        if done.start < 0:  # it died (killed, out of memory): not a finding about the reference
            assert done.error is not None
            raise NnparityError(
                f"{done.error[2]} after {self.last_step + 1} steps were verified; run again, or keep "
                "to one process with verify(..., parallel=False) or NNPARITY_PARALLEL=0."
            )
        self.ref.n, self.ref.error = done.n, done.error
        self.ref.seconds = self._worker_base + done.seconds

    def _run_side(self, side: _Side, t: int, k: int) -> None:
        backend, x, y = side.backend, side.x, side.y
        resync = side is self.cand and self.mode == "resync"
        clock = time.perf_counter
        for step in range(t, t + k):
            t0 = clock()
            try:
                result = backend.step(x, y)
            except NnparityError:  # bad input the backend found (a replay given other data): usage
                raise
            except (Exception, SystemExit) as exc:  # a backend's failure is a finding, not a crash
                side.seconds += clock() - t0
                side.error = (step, "step", exc)
                return
            side.seconds += clock() - t0
            if self.layout is None:
                self._start_layout(result)
            assert self.layout is not None
            if step == 0 and side is self.cand:
                self._orient(result)
            if self._direct:
                returned = self.layout.fits(result)
                side.kept[step] = result
            else:
                returned = self.layout.fill(result, side.rows[step % self._ring])
            if returned is None:
                # Compared after the block: by then a backend may have changed, in place, arrays it
                # returned, so keep them as they were returned.
                side.odd[step] = result if self._direct else _snapshot(result)
                if not self._direct:
                    side.rows[step % self._ring] = np.nan  # compared on its own
                returned = self._arrays(result)
            if returned is not None and step > 0 and (step <= 2 or step == t + 1 or self._direct):
                # Once a block (every step when a block is one step): arrays returned earlier intact?
                self._check_returned(side, step, returned)
            side.returned = returned or []
            side.n += 1
            if resync and step < t + self.ref.n:
                try:
                    backend.set_params(copy_params(self._result(self.ref, step).params))
                except (Exception, SystemExit) as exc:
                    side.error = (step, "set_params", exc)
                    return

    def _start_layout(self, result: object) -> None:
        """The rows' layout, from the first result: with activations if it reports them."""
        layout = RowLayout(self.spec, len(self.x), _has_activations(result))
        self._row_bytes = row_bytes = self.spec.np_dtype.itemsize * max(layout.width, 1)
        self._block = max(1, min(BLOCK_STEPS, BLOCK_BYTES // row_bytes))
        if row_bytes > DIRECT_ROW_BYTES:
            self._direct, self._block = True, 1
            self._history = 2 if self.spec.optimizer.momentum else 1
            self.layout = layout
            self._ring = DIRECT_RING
            return
        # Blocks start at multiples of the block size and never wrap round the ring, so the two
        # steps before a block (which the diagnosis needs) are still in it.
        self._ring = 3 * self._block
        for side in (self.cand, self.ref):
            side.rows = np.empty((self._ring, layout.width), dtype=self.spec.np_dtype)
        self.layout = layout

    def _orient(self, candidate: object) -> None:
        """At the candidate's first step: the rows in the order of its weights (see
        :meth:`RowLayout.oriented`), the reference's first row, if it has one, reordered."""
        assert self.layout is not None
        old, self.layout = self.layout, self.layout.oriented(candidate)
        if self.layout is not old and self.ref.n and not self._direct:
            row = self.ref.rows[0]
            self.layout.fill(old.unflatten(row.copy()), row)

    def _result(self, side: _Side, step: int) -> StepResult:
        """One side's result of a recent step: what it returned, or a view of its row."""
        if step in side.odd:
            return side.odd[step]  # type: ignore[return-value]
        if step in side.kept:  # compared in place (large networks; the reference before its worker)
            return side.kept[step]  # type: ignore[return-value]
        assert self.layout is not None
        return self.layout.unflatten(side.rows[step % self._ring])

    # --- comparing ------------------------------------------------------------------------------------

    def _settle(self, t: int) -> bool:
        """Compare and record what both sides produced from step ``t``; ``True`` when the run is over."""
        cand, ref = self.cand, self.ref
        m = min(cand.n, ref.n)
        # (step, order within the step, divergence, whether it ends the run)
        events: list[tuple[int, int, Divergence, bool]] = []
        for order, side in enumerate((cand, ref)):
            if side.error is not None:
                step, method, exc = side.error
                # A step that raised had no comparison; a set_params() that raised came after one.
                events.append(
                    (step, 2 if method == "set_params" else order - 2, _raised(step, side, method, exc), True)
                )
        if m:
            events += self._compare(t, m)
            # A worker's reference steps on its own copies, out of reach (and it is the built-in one).
            changed = None if self._worker is not None else self._inputs_changed(t, t + m - 1)
            if changed is not None:
                events.append((t + m - 1, 3, changed, True))
        events.sort(key=lambda e: (e[0], e[1]))
        last, over = t + m - 1, False
        counted = -1  # a step with two findings (a value, an array changed in place) counts once
        for step, order, found, fatal in events:
            if self.first is None:
                self.first = found if fatal else self._diagnosed(found)
            if not fatal and step != counted:
                self.divergent += 1
                counted = step
            if fatal or not self.keep_going:
                if fatal and found is not self.first:
                    self.stopped_by = found
                # A step that raised is not kept; one compared before set_params() raised is.
                last, over = (step - 1 if order < 0 else step), True
                break
        self._record(t, last)
        return over

    def _compare(self, t: int, m: int) -> list[tuple[int, int, Divergence, bool]]:
        """Compare steps ``t`` to ``t + m - 1``: their trace rows, and one event per divergent step."""
        assert self.layout is not None
        layout, comparator = self.layout, self.comparator
        odd = {s for s in self.cand.odd.keys() | self.ref.odd.keys() if t <= s < t + m}
        rows = np.full((m, len(TRACE_COLUMNS)), np.nan)
        events = []
        if self._direct:  # one step, compared where it is
            if t not in odd:
                rc, rr = self._result(self.cand, t), self._result(self.ref, t)
                losses = (float(rc.loss), float(rr.loss))
                found = comparator.compare_results(layout, layout.arrays(rc), layout.arrays(rr), losses)
                _trace_rows(rows[:1], *losses, found.abs_err, found.rel_err)
                divergence = None if found.ok[0] else comparator.compare(rc, rr, t).divergence
                if divergence is not None:
                    events.append((t, 0, divergence, False))
        else:
            at = t % self._ring
            cands, refs = self.cand.rows[at : at + m], self.ref.rows[at : at + m]
            found = comparator.compare_rows(layout, cands, refs)
            _trace_rows(rows, cands[:, layout.loss_at], refs[:, layout.loss_at], found.abs_err, found.rel_err)
            events += [
                (t + i, 0, comparator.row_divergence(layout, cands[i], refs[i], t + i), False)
                for i in map(int, np.flatnonzero(~found.ok))
                if t + i not in odd
            ]
        for step in sorted(odd):  # a result that did not fit a row: compared on its own
            rc, rr = self._result(self.cand, step), self._result(self.ref, step)
            one = comparator.compare(rc, rr, step)
            losses = _as_float(getattr(rc, "loss", None)), _as_float(getattr(rr, "loss", None))
            _trace_rows(rows[step - t : step - t + 1], *losses, one.abs_err, one.rel_err)
            if one.divergence is not None:
                events.append((step, 0, one.divergence, False))
        for side in (self.cand, self.ref):
            events += [e for e in side.misbehaved if t <= e[0] < t + m]
        self._rows = rows
        return events

    def _record(self, t: int, last: int) -> None:
        """Keep the trace of steps ``t`` to ``last``."""
        if last >= t:
            self.trace.extend(self._rows[: last - t + 1])
            self.last_step = last

    # --- the diagnosis --------------------------------------------------------------------------------

    def _diagnosed(self, found: Divergence) -> Divergence:
        """``found`` with the diagnosis's verdict and hint, when asked for."""
        if not self.diagnosis or found.stage == "step":
            return found
        if found.nonfinite_identical:  # both sides overflowed alike: nothing for an oracle to settle
            return replace(found, verdict="undetermined")
        step = found.step
        results = self._both(step)
        before = self._both(step - 1) if step >= 1 else None
        previous = None
        # Only a momentum buffer needs the step before's start and result (a large network's run
        # keeps the two steps before only with momentum: see _start_layout).
        if before is not None and self.spec.optimizer.momentum:
            earlier = self._starts(self._both(step - 2) if step >= 2 else None)
            previous = {side: StepRecord(earlier[side], before[side]) for side in ("candidate", "reference")}
        why = diagnose(self.spec, self.x, self.y, self._starts(before), results, found, previous=previous)
        return why.apply(found)

    def _both(self, step: int) -> dict[str, StepResult]:
        return {"candidate": self._result(self.cand, step), "reference": self._result(self.ref, step)}

    def _starts(self, before: dict[str, StepResult] | None) -> dict[str, list[LayerParams]]:
        """The parameters each side started a step with: those the step before ended with."""
        if before is None:
            return {"candidate": self.start, "reference": self.start}
        ref = _params_or_empty(before["reference"])
        cand = ref if self.mode == "resync" else _params_or_empty(before["candidate"])
        return {"candidate": cand, "reference": ref}

    # --- backends that misbehave ------------------------------------------------------------------------

    def _check_returned(self, side: _Side, step: int, returned: list[object]) -> None:
        """Find a backend that changed, in place, an array it returned at the step before."""
        assert self.layout is not None
        if len(side.returned) != len(returned):
            return
        keys = [k for k in self.layout.keys if k.stage != "loss"]
        kept = self._arrays(side.odd[step - 1]) if step - 1 in side.odd else None
        for i, (before, now) in enumerate(zip(side.returned, returned)):
            if not np.may_share_memory(before, now):
                continue
            if not self._direct:  # a row (or a copy) keeps what it returned: did it change?
                q = i if i < self.layout.n_activations else i + 1  # the loss has no array
                row = side.rows[(step - 1) % self._ring]
                was = self.layout.quantity(row, q) if kept is None else kept[i]
                if np.array_equal(was, before, equal_nan=True):  # type: ignore[arg-type]
                    continue
            key = keys[i]
            what = Divergence(step, key.stage, key.layer, key.tensor, None, 0.0, 0.0, 0.0, 0.0).place
            message = (
                f"the {side.role}'s step() changed, in place, the {what} it returned at step {step - 1} "
                "(the same array came back at this step); return copies, since the caller keeps "
                "what a step returns"
            )
            side.misbehaved.append((step, 1, _misbehaved(step, side.role, message), False))
            return

    def _arrays(self, result: object) -> list[object] | None:
        """``result``'s arrays in the layout's order, or ``None`` if it is too malformed to have them."""
        assert self.layout is not None
        try:
            return self.layout.arrays(result)
        except (AttributeError, TypeError, ValueError, IndexError):
            return None

    def _inputs_changed(self, t: int, last: int) -> Divergence | None:
        """A reference that changed the inputs it was given (the candidate's are read-only)."""
        changed = [
            n
            for n, a, b in (("x", self.ref.x, self.x), ("y", self.ref.y, self.y))
            if not np.array_equal(a, b)
        ]
        if not changed:
            return None
        return _misbehaved(
            last,
            "reference",
            f"the reference changed the input array {' and '.join(changed)} it was given, in place, "
            f"during steps {t} to {last}; a backend must not change its inputs",
        )

    def final_params(self) -> dict[str, list[LayerParams]]:
        """Each side's parameters after the last step recorded (copies)."""
        if self.last_step < 0:
            return {"candidate": copy_params(self.start), "reference": copy_params(self.start)}
        return {s: copy_params(_params_or_empty(r)) for s, r in self._both(self.last_step).items()}


def _trace_rows(
    rows: np.ndarray, candidate_loss: object, reference_loss: object, abs_err: object, rel_err: object
) -> None:
    """Fill ``rows`` of ``TRACE_COLUMNS``: each side's loss, then per stage the largest errors."""
    rows[:, 0] = candidate_loss
    rows[:, 1] = reference_loss
    rows[:, 2::2] = abs_err
    rows[:, 3::2] = rel_err


def _raised(step: int, side: _Side, method: str, exc: BaseException) -> Divergence:
    kind = getattr(exc, "kind", type(exc).__name__)  # a worker's RemoteError tells the original type
    message = f"the {side.role}'s {method}() raised {kind}: {exc}"
    if isinstance(exc, ValueError) and "read-only" in str(exc):
        message += " (x and y are passed read-only: a backend must not change the arrays it is given)"
    return _misbehaved(step, side.role, message)


def _misbehaved(step: int, role: str, message: str) -> Divergence:
    nan = float("nan")
    return Divergence(
        step=step,
        stage="step",
        layer=None,
        tensor="step",
        index=None,
        candidate_value=nan,
        reference_value=nan,
        abs_err=nan,
        rel_err=nan,
        verdict=role,
        message=message,
    )


def _snapshot(result: object) -> object:
    """A copy of a step result, arrays and all (the result itself if it cannot be copied)."""
    try:
        return copy.deepcopy(result)
    except Exception:  # an object that will not be copied is compared as it is
        return result


def _params_or_empty(result: object) -> list[LayerParams]:
    """A step result's parameters, or ``[]`` when a malformed result holds no list of them."""
    params = getattr(result, "params", None)
    return list(params) if isinstance(params, (list, tuple)) else []


def _as_float(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return float("nan")
