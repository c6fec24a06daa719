"""Target 5: the property suite verifies at least 100 drawn networks a second on two cores.

Two workloads, each driven by hypothesis in-process with a counter (no pytest overhead):

* ``suite``: what ``tests/test_properties.py::test_numpy_and_torch_agree`` does per example: draw a
  spec (``network_specs()``), a batch, starting weights and 2-5 steps, then ``verify`` in free
  or resync mode;
* ``check``: ``nnparity.search.search("numpy")``, what ``nnparity check`` runs (1-4 steps).

Each runs in one process, and in ``--workers`` processes at once (different seeds) for "two
cores": the rate is all the networks verified over the slowest worker's time. Each worker
imports and warms up before its clock starts. Medians of ``--repeats``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import time

SUITE_MODES = ("free", "resync")


def suite(examples: int, seed: int) -> tuple[int, float]:
    """Networks verified and seconds taken by ``examples`` examples of the equivalence property."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hypothesis_seed
    from hypothesis import strategies as st

    from nnparity import verify
    from nnparity.strategies import batches, initial_params, network_specs

    count = [0]

    @hypothesis_seed(seed)
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=(Phase.generate,),
        suppress_health_check=list(HealthCheck),
    )
    @given(data=st.data(), mode=st.sampled_from(SUITE_MODES))
    def property_(data: st.DataObject, mode: str) -> None:
        spec = data.draw(network_specs(), label="spec")
        x, y = data.draw(batches(spec), label="batch")
        params = data.draw(initial_params(spec), label="params")
        steps = data.draw(st.integers(2, 5), label="steps")
        report = verify(spec, x, y, steps=steps, params=params, mode=mode)
        assert report.ok, report.summary()
        count[0] += 1

    t0 = time.perf_counter()
    property_()
    return count[0], time.perf_counter() - t0


def check(examples: int, seed: int) -> tuple[int, float]:
    from nnparity.search import search

    t0 = time.perf_counter()
    result = search("numpy", examples=examples, seed=seed)
    assert result.finding is None, result.finding.summary()
    return result.runs, time.perf_counter() - t0


WORKLOADS = {"suite": suite, "check": check}


def worker(job: tuple[str, int, int, int | None]) -> tuple[int, float]:
    name, examples, seed, torch_threads = job
    if torch_threads is not None:
        import torch

        torch.set_num_threads(torch_threads)
    WORKLOADS[name](5, seed + 1_000_000)  # imports, strategy caches, torch's first calls
    return WORKLOADS[name](examples, seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--examples", type=int, default=300, help="networks per process and run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--torch-threads", type=int, default=None, help="torch.set_num_threads(N) first")
    args = parser.parse_args()
    ctx = multiprocessing.get_context("spawn")
    rates: dict[str, list[float]] = {}
    with ctx.Pool(1) as single, ctx.Pool(args.workers) as pool:
        for r in range(args.repeats):
            for name in WORKLOADS:
                n, secs = single.apply(worker, ((name, args.examples, r, args.torch_threads),))
                rates.setdefault(f"{name}, 1 process", []).append(n / secs)
                jobs = [
                    (name, args.examples, 100 * (r + 1) + w, args.torch_threads) for w in range(args.workers)
                ]
                done = pool.map(worker, jobs)
                total = sum(n for n, _ in done)
                rates.setdefault(f"{name}, {args.workers} processes", []).append(
                    total / max(s for _, s in done)
                )
    print(f"{args.examples} networks per process and run, median of {args.repeats}")
    for name, values in rates.items():
        print(f"  {name:22s} {statistics.median(values):7.1f} networks/s")
    best = statistics.median(rates[f"suite, {args.workers} processes"])
    print(f"\ntarget 5: property suite on {args.workers} cores = {best:.0f} networks/s")
    print(f"  ratio to the goal of 100 networks/s = {best / 100:.2f} (goal >= 1.0)")


if __name__ == "__main__":
    main()
