"""The reference backend in a process of its own, ahead of the candidate.

For a small network a step is mostly Python and dispatch overhead, and torch's is five times
numpy's: run one after the other, the verifier costs more than the two notebook loops it checks.
With two cores the reference runs here, in a child process, while the parent runs the candidate
and compares, so a step costs about as much as the reference's step alone.

The child (the *server*) is forked once, the first time a run needs it, and serves the runs of
that process one after the other: a fork for every run cost 30-40 ms more a run (784-256-256-10,
100 steps: 336 against 309 ms in float32, 595 against 556 in float64; the fork, and the
copy-on-write faults after it). Since it is a fork of the process as it was then, each run checks
that the code it would run there is still the parent's (:func:`_code`), and starts a new server
if not (a test patched torch or nnparity, say).

For each run the parent sends the reference backend, pickled after its first step, and the
batch; the server steps it and writes each result into rows of shared memory (the layout of
:class:`nnparity.compare.RowLayout`), reporting each block on a pipe. It may run ahead of the
parent as far as the ring of rows allows: the parent needs its current block and the two steps
before it. Where the parent is, the server reads from a word of the shared memory, which the
parent writes: a message on the pipe would wake the server, and on two cores the woken server
took the parent's core for a moment, ~0.2 ms a step. A second word asks it to stop a run early.
The server keeps torch to one thread and never touches the parent's files; it ends with the
parent (its pipe closes) or when a run is interrupted.
"""

from __future__ import annotations

import atexit
import contextlib
import mmap
import multiprocessing
import os
import pickle
import signal
import stat
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from nnparity.compare import RowLayout

POLL_SECONDS = 50e-6  # how often a server that is ahead looks where the parent is
# The shared memory: two int64 words (where the parent is; stop), then the rows. It is reserved
# once; only the pages a run touches are allocated, and they stay warm for the next run.
HEADER = 16
BUFFER_BYTES = 64 * 2**20  # more than the largest ring: 3 blocks of 4 MiB, or 5 rows of 8 MiB
STOP_SECONDS = 10.0  # how long the parent waits for a run it stopped to wind down, then kills


def can_fork() -> bool:
    """Whether this platform forks (Linux, and other POSIX systems but macOS, where it is unsafe)
    and this process may use two CPUs."""
    if not hasattr(os, "fork") or sys.platform == "darwin":
        return False
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return cpus >= 2


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


class _Server:
    """The child process, its pipe and the shared memory, kept for the runs of one process."""

    def __init__(self) -> None:
        self.pid = os.getpid()  # the parent's: a forked copy of it must start its own
        self.code = _code()  # what the server runs: a run with other code needs a new server
        self.buffer = mmap.mmap(-1, BUFFER_BYTES)
        self.words = np.frombuffer(self.buffer, dtype=np.int64, count=2)
        ctx = multiprocessing.get_context("fork")
        self.conn, child_conn = ctx.Pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        # The pipes and sockets open now (this end of the new pipe among them, not the child's)
        # are for the child to let go of; multiprocessing's own, made by start(), it keeps. (start()
        # first reaps ended children, an earlier worker that was killed, closing their pipes, whose
        # numbers its new ones may take: the child lets go of a number only if it is still the
        # same pipe, or it would close its own sentinel and seem to multiprocessing to have ended.)
        inherited = _pipes_and_sockets()
        inherited.pop(child_conn.fileno(), None)
        self.process = ctx.Process(
            target=_serve_runs,
            args=(child_conn, self.buffer, inherited),
            name="nnparity-reference",
            daemon=True,
        )
        self.process.start()
        child_conn.close()

    def usable(self) -> bool:
        """Alive, this process's, and running the code the parent now has."""
        if self.pid != os.getpid() or not self.process.is_alive():
            return False
        now = _code()
        return len(now) == len(self.code) and all(a is b for a, b in zip(now, self.code))

    def kill(self) -> None:
        """End the server; a child still exiting is reaped by multiprocessing later (waiting for
        its teardown took ~7 ms)."""
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=0)
        self.conn.close()


def _code() -> tuple[object, ...]:
    """The objects behind the code a reference runs in the server: nnparity's torch backend and the
    torch modules, optimizer and functions it uses. The server is a fork of the parent as it was
    when it started, so a function patched (or a patch undone) since, as tests do, would not reach
    it; a run whose objects differ gets a new server (~0.1 ms to look)."""
    import torch

    from nnparity import torch_backend

    spaces = [
        torch_backend,
        torch_backend.TorchBackend,
        torch,
        torch.nn.functional,
        torch.nn.Module,
        torch.nn.Linear,
        torch.nn.Sequential,
        torch.optim.Optimizer,
        torch.optim.SGD,
        torch.autograd,
        *torch_backend.ACTIVATION_MODULES.values(),
        *torch_backend.LOSS_MODULES.values(),
    ]
    return tuple(value for space in spaces for value in list(vars(space).values()))


_server: _Server | None = None
_server_lock = threading.Lock()  # one run at a time uses the server; a concurrent one runs serially


@atexit.register
def _end_server() -> None:
    """At exit, before multiprocessing's own handler (which would send SIGTERM and wait): kill."""
    if _server is not None and _server.pid == os.getpid():
        _server.kill()


def shutdown() -> None:
    """End this process's worker now, if it has one and no run is using it (it ends with the
    process anyway); the next run that needs one starts a new one."""
    global _server
    with _server_lock:
        if _server is not None:
            _server.kill()
            _server = None


def server_ready() -> bool:
    """Whether this process has a worker running the parent's code, so that a run need not start one."""
    return _server is not None and _server.usable()


def server_free() -> bool:
    """Whether a run may use the worker now (no other thread's run holds it)."""
    return not _server_lock.locked()


class Worker:
    """One run on the server: ``backend`` stepped from ``start`` to ``steps`` into shared rows, a
    ring of ``ring`` rows whose rows before ``start`` are ``rows``' (``rows`` may have only those).
    Raises ``RuntimeError`` if another thread's run holds the server."""

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
        global _server
        if not _server_lock.acquire(blocking=False):
            raise RuntimeError("the reference's worker is in use by another run")
        try:
            if _server is None or not _server.usable():
                if _server is not None:
                    _server.kill()
                _server = _Server()
            self._server = _server
            server = self._server
            shape = (ring, rows.shape[1])
            if HEADER + rows.dtype.itemsize * ring * shape[1] > BUFFER_BYTES:
                raise RuntimeError("the rows do not fit the worker's shared memory")
            self._words = server.words
            self._words[:] = (start, 0)
            self.rows: np.ndarray = np.frombuffer(
                server.buffer, dtype=rows.dtype, count=ring * shape[1], offset=HEADER
            ).reshape(shape)
            self.rows[: len(rows)] = rows
            job = (backend, layout, x, y, block, start, steps, shape, rows.dtype.str)
            try:
                blob = pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as exc:
                raise RuntimeError(f"the reference cannot be sent to the worker ({exc})") from exc
            try:
                server.conn.send_bytes(blob)
            except OSError as exc:  # it died since usable() looked
                server.kill()
                _server = None
                raise RuntimeError("the reference's worker ended") from exc
        except BaseException:
            _server_lock.release()
            raise
        self._open = True

    def at(self, t: int) -> None:
        """Tell the worker the parent now works on the block starting at ``t``."""
        self._words[0] = t

    def receive(self) -> Block:
        """The next block's report (blocks arrive in order)."""
        try:
            message = self._server.conn.recv()
        except EOFError:  # the server died without a word (killed, out of memory)
            self._server.process.join(timeout=1.0)  # its exit status, once reaped
            code = self._server.process.exitcode
            how = f"exit code {code}"
            if code is not None and code < 0:
                how = f"killed by {signal.Signals(-code).name}"
            why = RemoteError("WorkerDied", f"The reference's worker process ended ({how})")
            return Block(-1, 0, 0.0, (-1, "step", why))
        start, n, seconds, error = message
        return Block(
            start, n, seconds, None if error is None else (error[0], "step", RemoteError(*error[1:]))
        )

    def close(self, interrupted: bool = False) -> None:
        """End the run: ask the server to stop (it may be ahead) and wait until it has; kill it
        if the run was interrupted, if it does not stop in time, or if it died."""
        global _server
        if not self._open:
            return
        self._open = False
        server = self._server
        try:
            if interrupted or not server.usable() or not _stopped(server, self._words):
                server.kill()
                if _server is server:
                    _server = None
        finally:
            _server_lock.release()


def _stopped(server: _Server, words: np.ndarray) -> bool:
    """Raise the stop word and read the run's last reports up to the server's ``None``."""
    words[1] = 1
    deadline = time.monotonic() + STOP_SECONDS
    try:
        while server.conn.poll(max(deadline - time.monotonic(), 0.0)):
            if server.conn.recv() is None:
                return True
    except (EOFError, OSError):
        pass
    return False


def _pipes_and_sockets() -> dict[int, tuple[int, int]]:
    """This process's descriptors above 2 that are pipes or sockets, each with the identity
    (device, inode) of what it is open on (Linux: /proc; else none)."""
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        return {}
    found = {}
    for fd in fds:
        try:
            info = os.fstat(fd)
        except OSError:  # the listing's own descriptor, closed since
            continue
        if fd > 2 and (stat.S_ISFIFO(info.st_mode) or stat.S_ISSOCK(info.st_mode)):
            found[fd] = (info.st_dev, info.st_ino)
    return found


def _release(fds: dict[int, tuple[int, int]]) -> None:
    """In the server: let go of the pipes and sockets the fork copied from the parent (the parent's
    end of the server's own pipe, a subprocess's pipes, a network connection), so that their other
    ends see them close when the parent closes them, or dies; else the server would outlive a parent
    killed or ended by os._exit, and hold a subprocess's output open. Each is pointed at /dev/null
    rather than closed, so that no object that owned one closes a number since reused. Where /proc
    cannot tell them (not Linux), the parent's atexit ends the server."""
    null = os.open(os.devnull, os.O_RDWR)
    try:
        for fd, identity in fds.items():
            with contextlib.suppress(OSError):
                info = os.fstat(fd)
                if (info.st_dev, info.st_ino) == identity:  # not a number reused since
                    os.dup2(null, fd)
    finally:
        os.close(null)


def _serve_runs(conn: Connection, buffer: mmap.mmap, inherited: dict[int, tuple[int, int]]) -> None:
    """The server: one run after another until the parent goes (its pipe closes)."""
    import torch

    _release(inherited)

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent's Ctrl-C is the parent's to handle
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not a handler of the parent's: it ends the server
    torch.set_num_threads(1)
    words = np.frombuffer(buffer, dtype=np.int64, count=2)
    try:
        while True:
            job = pickle.loads(conn.recv_bytes())
            backend, layout, x, y, block, start, steps, shape, dtype = job
            count = shape[0] * shape[1]
            rows = np.frombuffer(buffer, dtype=np.dtype(dtype), count=count, offset=HEADER).reshape(shape)
            _serve(backend, layout, rows, words, x, y, block, start, steps, conn)
            del backend, job
            while words[1] == 0:  # the run is over on this side: wait for the parent to end it
                time.sleep(POLL_SECONDS)
            conn.send(None)
    except (KeyboardInterrupt, EOFError, BrokenPipeError, OSError):
        pass  # the parent was interrupted or is gone


def _serve(
    backend: Any,
    layout: RowLayout,
    rows: np.ndarray,
    words: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    block: int,
    t: int,
    steps: int,
    conn: Connection,
) -> None:
    """One run: step, fill rows, report each block; wait when as far ahead as the ring allows;
    return at the end, at an error, or when the parent raises the stop word."""
    import torch

    ring = len(rows)
    # The parent works on steps words[0] .. + block - 1 and may read the two before: the blocks
    # that fit in the rest of the ring may be written.
    lead = (ring - block - 2) // block * block
    # The torch backend writes a step straight into its row (TorchBackend.step_into): copying each
    # result into its row from NumPy after the step cost ~11 us a step here, numpy's code evicting
    # torch's from the caches every step; torch.cat into the row costs ~3.
    step_into = getattr(backend, "step_into", None) if layout.forward else None
    row_tensors = list(torch.from_numpy(rows))  # one view per row, made once
    clock: Callable[[], float] = time.perf_counter
    seconds = 0.0
    while t < steps:
        while t > int(words[0]) + lead:  # this block's rows may still be in use: wait
            if words[1]:
                return
            time.sleep(POLL_SECONDS)
        if words[1]:
            return
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
            return
        t += k
