"""Targets 1 and 2: nnparity against the reference notebook's own loops, side by side in one process.

1. ``verify`` of the notebook's experiment (every step compared in full) against the notebook's
   NumPy loop plus its torch loop run on their own.
2. The NumPy backend's ``step`` against the notebook's hand-written NumPy loop (2-3-1 network).

Each figure is the median of ``--repeats`` interleaved runs; the ratios are what count, since the
machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import notebook_loops

from nnparity import init_params, verify
from nnparity.dataset import or_table
from nnparity.notebook import notebook_spec
from nnparity.numpy_backend import NumpyBackend
from nnparity.torch_backend import TorchBackend
from nnparity.verify import check_batch


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def backend_loop(cls: type, steps: int) -> Callable[[], None]:
    data, spec = or_table(), notebook_spec()
    # The batch as verify() hands it to a backend: checked once, in the network's dtype.
    x, y = check_batch(spec, data.x, data.y)

    def run() -> None:
        backend = cls(spec, init_params(spec))
        for _ in range(steps):
            backend.step(x, y)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=11)
    args = parser.parse_args()
    data, spec = or_table(), notebook_spec()
    runs: dict[str, Callable[[], object]] = {
        "notebook numpy loop": lambda: notebook_loops.numpy_loop(args.steps),
        "notebook torch loop": lambda: notebook_loops.torch_loop(args.steps),
        "NumpyBackend.step loop": backend_loop(NumpyBackend, args.steps),
        "TorchBackend.step loop": backend_loop(TorchBackend, args.steps),
        "verify (numpy vs torch)": lambda: verify(spec, data.x, data.y, steps=args.steps),
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, fn in runs.items():
            times[name].append(timed(fn))
    med = {name: statistics.median(t) for name, t in times.items()}
    per_step = {name: 1e6 * t / args.steps for name, t in med.items()}
    for name in runs:
        print(f"{name:26s} {med[name]:7.3f} s  {per_step[name]:7.1f} us/step")
    anchor = med["notebook numpy loop"] + med["notebook torch loop"]
    print()
    print(
        f"target 1: verify / (notebook numpy + torch loops) = {med['verify (numpy vs torch)'] / anchor:.2f}"
        " (goal <= 1.0, aim 0.6)"
    )
    print(
        f"target 2: NumpyBackend.step / notebook numpy loop = "
        f"{med['NumpyBackend.step loop'] / med['notebook numpy loop']:.2f} (goal <= 1.0)"
    )
    print(
        f"(TorchBackend.step / notebook torch loop = "
        f"{med['TorchBackend.step loop'] / med['notebook torch loop']:.2f})"
    )


if __name__ == "__main__":
    main()
