"""Target 4: recording scales. A long ``verify`` run of a network with about a million parameters
peaks within 1.5x of the two models' own memory, and grows with the steps by a few numbers a step.

Each measurement runs in a fresh Python process, which reports its peak resident set size
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``) at the end:

* baseline: import numpy, torch and nnparity, build the spec, batch and starting weights;
* models: the baseline, plus a ``NumpyBackend`` and a ``TorchBackend`` trained side by side for
  the same steps without verification (the anchor: the two models' own memory);
* verify: the baseline, plus ``verify`` of the two for the same steps, in this one process
  (``parallel=False``; rows this large never go to the worker process anyway).

A figure is a peak minus the baseline's; the ratio is verify's over the models'. Running verify for
``--steps`` and for a tenth of them shows the growth per step.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import subprocess
import sys
import textwrap

SIZES = (1000, 1000, 10)  # 1,010,000 weights
ACTIVATIONS = ("tanh", "identity")
BATCH = 16

CHILD = textwrap.dedent(
    """
    import json, resource, sys, time
    import numpy as np
    import torch
    from nnparity import SGD, NetworkSpec, init_params, verify
    from nnparity.numpy_backend import NumpyBackend
    from nnparity.torch_backend import TorchBackend

    what, steps, dtype = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    sizes, acts, batch = {sizes!r}, {acts!r}, {batch!r}
    spec = NetworkSpec(sizes, acts, loss="mse", optimizer=SGD(0.01), dtype=dtype)
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (batch, sizes[0])).astype(dtype)
    y = rng.uniform(-1, 1, (batch, sizes[-1])).astype(dtype)
    params = init_params(spec, scheme="torch")
    extra = {{}}
    t0 = time.perf_counter()
    if what == "models":
        backends = [NumpyBackend(spec, params), TorchBackend(spec, params)]
        for _ in range(steps):
            for b in backends:
                b.step(x, y)
    elif what == "verify":
        report = verify(spec, x, y, steps=steps, params=params, parallel=False)
        extra = {{
            "ok": report.ok,
            "steps_run": report.steps_run,
            "trace_bytes": int(report.trace.memory_usage(deep=True).sum()),
        }}
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux
    print(json.dumps({{"peak": peak, "seconds": seconds, **extra}}))
    """
).format(sizes=SIZES, acts=ACTIVATIONS, batch=BATCH)


def measure(what: str, steps: int, dtype: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, what, str(steps), dtype], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def mib(n: float) -> str:
    return f"{n / 2**20:8.1f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--steps", type=int, default=1_000, help="10,000 is the target's run; it takes minutes a repeat"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    args = parser.parse_args()
    short = max(1, args.steps // 10)
    n_params = sum(a * b for a, b in itertools.pairwise(SIZES))
    model_bytes = n_params * (4 if args.dtype == "float32" else 8)
    print(
        f"network {'-'.join(map(str, SIZES))} {ACTIVATIONS}, {n_params:,} parameters "
        f"({mib(model_bytes).strip()} a copy), mse, batch {BATCH}, {args.dtype}; "
        f"peak RSS of a fresh process, median of {args.repeats}"
    )
    runs = {
        "baseline (imports, data)": ("baseline", 0),
        f"models, {args.steps} steps": ("models", args.steps),
        f"verify, {short} steps": ("verify", short),
        f"verify, {args.steps} steps": ("verify", args.steps),
    }
    results: dict[str, list[dict]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, (what, steps) in runs.items():
            results[name].append(measure(what, steps, args.dtype))
    peak = {name: statistics.median(r["peak"] for r in rs) for name, rs in results.items()}
    secs = {name: statistics.median(r["seconds"] for r in rs) for name, rs in results.items()}
    base = peak["baseline (imports, data)"]
    for name in runs:
        net = "" if name.startswith("baseline") else f"  (+{mib(peak[name] - base).strip()})"
        print(f"  {name:26s} peak {mib(peak[name])}{net}  {secs[name]:7.2f} s")
    long_run = results[f"verify, {args.steps} steps"][-1]
    per_step = long_run["trace_bytes"] / max(1, long_run["steps_run"])
    print(
        f"  verify: ok={long_run['ok']}, {long_run['steps_run']} steps run, "
        f"trace {long_run['trace_bytes']:,} bytes ({per_step:.0f} bytes a step)"
    )
    models = peak[f"models, {args.steps} steps"] - base
    ours = peak[f"verify, {args.steps} steps"] - base
    growth = (peak[f"verify, {args.steps} steps"] - peak[f"verify, {short} steps"]) / (args.steps - short)
    print()
    gross = peak[f"verify, {args.steps} steps"] / peak[f"models, {args.steps} steps"]
    print(
        f"target 4: verify peak / the two models' own, above the baseline = {ours / models:.2f} (goal <= 1.5)"
    )
    print(f"  (gross, the baseline included: {gross:.2f})")
    print(
        f"  growth from {short} to {args.steps} steps: {growth:.0f} bytes a step "
        f"(a full copy of the parameters would be {model_bytes:,} bytes a step)"
    )
    if args.steps < 10_000:
        extra = max(0.0, growth) * (10_000 - args.steps)
        print(
            f"  extrapolated to 10,000 steps (measured {args.steps}): "
            f"verify peak +{mib(ours + extra).strip()}, ratio {(ours + extra) / models:.2f}"
        )


if __name__ == "__main__":
    main()
