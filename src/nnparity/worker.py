"""The reference backend in a process of its own, a block of steps ahead of the candidate.

For a small network a step is mostly Python and dispatch overhead, and torch's is five times
numpy's: run one after the other, the verifier costs more than the two notebook loops it checks.
With two cores the reference runs here, in a forked child, while the parent runs the candidate
and compares, so a step costs about as much as the reference's step alone.

The child is forked after the reference backend was built and took its first step in the parent,
so nothing is pickled: it inherits the backend and writes each result into rows of shared memory
(the layout of :class:`nnparity.compare.RowLayout`), then reports each block on a pipe. It may run
ahead of the parent as far as the ring of rows allows: the parent needs its current block and the
two steps before it. Where the parent is, the child reads from a word of the shared memory, which
the parent writes: a message on the pipe would wake the child, and on two cores the woken child
took the parent's core for a moment, ~0.2 ms a step (a large network's blocks are single steps).
The child keeps torch to one thread (a forked OpenMP pool is not safe to use) and never touches
the parent's files.
"""

from __future__ import annotations

import mmap
import multiprocessing
import os
import sys
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from nnparity.compare import RowLayout

POLL_SECONDS = 50e-6  # how often a worker that is ahead looks where the parent is


def can_fork() -> bool:
    """Whether this platform forks (Linux, and other POSIX systems but macOS, where it is unsafe)."""
    return hasattr(os, "fork") and sys.platform != "darwin" and (os.cpu_count() or 1) >= 2


class RemoteError(Exception):
    """An exception the reference raised in the worker, retold in the parent."""

    def __init__(self, kind: str, text: str) -> None:
        super().__init__(text)
        self.kind = kind


class Block:
    """What the worker reports for a block: steps with a result, its seconds, and any error."""

    def __init__(
        self, start: int, n: int, seconds: float, error: tuple[int, str, RemoteError] | None
    ) -> None:
        self.start, self.n, self.seconds, self.error = start, n, seconds, error


class Worker:
    """A forked child that steps ``backend`` from ``start`` to ``steps`` into shared rows: a ring of
    ``rows.shape`` whose rows before ``start`` are ``rows``' (``rows`` may have only those)."""

    def __init__(
        self,
        backend: Any,
        layout: RowLayout,
        rows: np.ndarray,
        x: np.ndarray,
        y: np.ndarray,
        block: int,
        start: int,
        steps: int,
        ring: int,
    ) -> None:
        # Anonymous shared memory: where the parent is (an int64), then the rows, in which the
        # rows the parent holds so far are copied.
        shape = (ring, rows.shape[1])
        self._buffer = mmap.mmap(-1, 8 + rows.dtype.itemsize * max(ring * shape[1], 1))
        self._at = np.frombuffer(self._buffer, dtype=np.int64, count=1)
        self._at[0] = start
        self.rows: np.ndarray = np.frombuffer(
            self._buffer, dtype=rows.dtype, count=ring * shape[1], offset=8
        ).reshape(shape)
        self.rows[: len(rows)] = rows
        ctx = multiprocessing.get_context("fork")
        self._conn, child_conn = ctx.Pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        self._process = ctx.Process(
            target=_serve,
            args=(backend, layout, self.rows, self._at, x, y, block, start, steps, child_conn),
            name="nnparity-reference",
            daemon=True,
        )
        self._process.start()
        child_conn.close()

    def at(self, t: int) -> None:
        """Tell the worker the parent now works on the block starting at ``t``."""
        self._at[0] = t

    def receive(self) -> Block:
        """The next block's report (blocks arrive in order)."""
        try:
            start, n, seconds, error = self._conn.recv()
        except EOFError:  # the child died without a word (killed, out of memory)
            code = self._process.exitcode
            why = RemoteError("WorkerDied", f"the reference's worker process ended (exit code {code})")
            return Block(-1, 0, 0.0, (-1, "step", why))
        return Block(
            start, n, seconds, None if error is None else (error[0], "step", RemoteError(*error[1:]))
        )

    def close(self) -> None:
        """Stop the worker (it may be a block ahead) and close the pipe. A child still exiting is not
        waited for (its teardown took ~7 ms): multiprocessing reaps it at the next start or exit."""
        if self._process.is_alive():
            self._process.kill()
        self._process.join(timeout=0)
        self._conn.close()


def _serve(
    backend: Any,
    layout: RowLayout,
    rows: np.ndarray,
    parent: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    block: int,
    t: int,
    steps: int,
    conn: Connection,
) -> None:
    """The child: step, fill rows, report each block; wait when as far ahead as the ring allows."""
    import torch

    torch.set_num_threads(1)
    ring = len(rows)
    # The parent works on steps parent[0] .. + block - 1 and may read the two before: the blocks
    # that fit in the rest of the ring may be written.
    lead = (ring - block - 2) // block * block
    # The torch backend writes a step straight into its row (TorchBackend.step_into): copying each
    # result into its row from NumPy after the step cost ~11 us a step here, numpy's code evicting
    # torch's from the caches every step; torch.cat into the row costs ~3.
    step_into = getattr(backend, "step_into", None) if layout.forward else None
    row_tensors = list(torch.from_numpy(rows))  # one view per row, made once
    clock: Callable[[], float] = time.perf_counter
    seconds = 0.0
    try:
        while t < steps:
            while t > int(parent[0]) + lead:  # this block's rows may still be in use: wait
                if conn.poll():  # the parent never sends: it is gone (EOFError)
                    conn.recv()
                time.sleep(POLL_SECONDS)
            k = min(block - t % block, steps - t)
            n, error = 0, None
            for step in range(t, t + k):
                t0 = clock()
                try:
                    if step_into is not None:
                        step_into(x, y, row_tensors[step % ring], layout.torch_order)
                    else:
                        result = backend.step(x, y)
                except Exception as exc:
                    seconds += clock() - t0
                    error = (step, type(exc).__name__, str(exc))
                    break
                seconds += clock() - t0
                if step_into is None and layout.fill(result, rows[step % ring]) is None:
                    error = (step, "TypeError", "the reference returned a result of another shape or dtype")
                    break
                n += 1
            conn.send((t, n, seconds, error))
            if error is not None:
                break
            t += k
    except (KeyboardInterrupt, EOFError, BrokenPipeError, OSError):
        pass  # the parent was interrupted or is gone: it reports what it has
