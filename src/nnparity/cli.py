"""The ``nnparity`` command line.

Exit status: 0 when the backends agree, 1 when they diverge (or the run was
interrupted before it finished), 2 for bad input or usage (one line on stderr, no
traceback).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from nnparity import arguments
from nnparity.errors import NnparityError

if TYPE_CHECKING:
    from nnparity.config import RunConfig
    from nnparity.dataset import Dataset

EXIT_OK, EXIT_DIVERGED, EXIT_USAGE = 0, 1, 2


class _UsageError(Exception):
    """argparse's complaint, for :func:`main` to print as one line."""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line that points to ``--help``, not the usage."""

    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{self.prog}: error: {message} (see {self.prog} --help).")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="nnparity",
        description="Check, step by step, that hand-written NumPy backprop does what PyTorch does.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    seed = sub.add_parser("seed", help="run the reference notebook's experiment on both backends")
    seed.add_argument("--steps", type=arguments.count, default=None, help="SGD steps (default 10000)")

    ver = sub.add_parser(
        "verify",
        help="train two backends in lockstep and report the first divergence",
        description="Train a candidate and a reference backend in lockstep from the same weights and "
        "compare every step. With no --config, the notebook's experiment.",
    )
    add_run_options(ver)
    ver.add_argument("--candidate", default="numpy", help="numpy, torch or MODULE:CLASS (default numpy)")
    ver.add_argument(
        "--reference",
        default="torch",
        help="numpy, torch, MODULE:CLASS or a trajectory FILE.npz from nnparity record (default torch)",
    )
    ver.add_argument("--mode", choices=("free", "resync"), help="free (default) or resync")
    ver.add_argument(
        "--device", default="cpu", help="where the torch backend runs: cpu (default), cuda, cuda:1, ..."
    )
    ver.add_argument("--rtol", type=arguments.tolerance, help="relative tolerance (with --atol)")
    ver.add_argument("--atol", type=arguments.tolerance, help="absolute tolerance (with --rtol)")
    ver.add_argument("--keep-going", action="store_true", help="run every step and count the divergent ones")
    ver.add_argument("--json", action="store_true", help="print the report as JSON")
    ver.add_argument("--report", type=Path, metavar="FILE.csv", help="write the per-step trace as CSV")
    ver.add_argument(
        "--plot", type=Path, metavar="FILE.png", help="draw the run (needs matplotlib: nnparity[plot])"
    )
    _add_check_parser(sub)
    from nnparity.mutants import add_mutants_parser
    from nnparity.trajectory import add_record_parser

    add_record_parser(sub)
    add_mutants_parser(sub)
    return parser


def _add_check_parser(sub: argparse._SubParsersAction) -> None:
    check = sub.add_parser(
        "check",
        help="search for a network on which a backend diverges from torch",
        description="Let hypothesis search networks (depth, widths, activations, losses, SGD options, "
        "dtypes) for one on which CANDIDATE diverges from the reference, shrink it to the smallest "
        "that still diverges, and write it as a config and CSV that `nnparity verify` re-runs. "
        "Exit 0 when no network diverges, 1 on a divergence.",
    )
    check.add_argument("candidate", metavar="CANDIDATE", help="MODULE:CLASS (or numpy, torch)")
    check.add_argument("--reference", default="torch", help="numpy, torch or MODULE:CLASS (default torch)")
    check.add_argument(
        "--examples", type=arguments.count, default=None, metavar="N", help="networks to try (default 100)"
    )
    check.add_argument(
        "--seed", type=arguments.seed, metavar="N", help="seed the search to repeat it (default: a new one)"
    )
    check.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        default=Path("nnparity-repro"),
        help="where to write the reproduction (default ./nnparity-repro)",
    )
    narrow = check.add_argument_group("narrow the search to what the backend supports")
    narrow.add_argument(
        "--activations", type=arguments.names, metavar="NAMES", help="e.g. sigmoid,tanh (default: all)"
    )
    narrow.add_argument("--losses", type=arguments.names, metavar="NAMES", help="e.g. mse,bce (default: all)")
    narrow.add_argument(
        "--reductions", type=arguments.names, metavar="NAMES", help="mean and/or sum (default: both)"
    )
    narrow.add_argument(
        "--dtypes", type=arguments.names, metavar="NAMES", help="float64 and/or float32 (default: both)"
    )
    narrow.add_argument(
        "--modes", type=arguments.names, metavar="NAMES", help="free and/or resync (default: both)"
    )
    narrow.add_argument(
        "--bias", choices=("on", "off"), help="only networks with (on) or without (off) biases"
    )
    for option in ("momentum", "dampening", "nesterov", "weight-decay"):
        narrow.add_argument(f"--no-{option}", action="store_true", help=f"plain SGD without {option}")
    narrow.add_argument("--min-layers", type=arguments.count, metavar="N", help="weight layers (default 1)")
    narrow.add_argument("--max-layers", type=arguments.count, metavar="N", help="weight layers (default 3)")
    narrow.add_argument("--max-width", type=arguments.count, metavar="N", help="layer width (default 4)")
    narrow.add_argument("--max-rows", type=arguments.count, metavar="N", help="batch rows (default 8)")
    narrow.add_argument("--max-steps", type=arguments.count, metavar="N", help="SGD steps (default 4)")


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except _UsageError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    try:
        if args.command == "seed":
            return _seed(args)
        if args.command == "check":
            return _check(args)
        if args.command == "record":
            from nnparity.plot import check_writable
            from nnparity.trajectory import run_record

            check_writable(args.out)  # before the run, not after it
            return run_record(args)
        if args.command == "mutants":
            from nnparity.mutants import run_mutants

            return run_mutants(args)
        return _verify(args)
    except NnparityError as exc:
        print(f"nnparity: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except MemoryError:  # the estimate in nnparity.resources refuses most runs that would get here
        print(
            "nnparity: error: out of memory; use smaller widths, fewer data rows or float32.",
            file=sys.stderr,
        )
        return EXIT_USAGE
    except KeyboardInterrupt:  # outside a run (a run that is interrupted reports what it checked)
        print("nnparity: interrupted before anything was verified.", file=sys.stderr)
        return EXIT_DIVERGED
    except BrokenPipeError:  # `nnparity ... | head`: the reader has gone, and wants no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing more to flush there
        return EXIT_DIVERGED


def _seed(args: argparse.Namespace) -> int:
    from nnparity.notebook import NUM_ITERATIONS, run_seed

    report = run_seed(sys.stdout, steps=args.steps or NUM_ITERATIONS, progress=sys.stderr.isatty())
    return EXIT_OK if report.ok else EXIT_DIVERGED


def _verify(args: argparse.Namespace) -> int:
    from nnparity.initialization import init_params
    from nnparity.plot import check_writable, plot_report, require_matplotlib, write_trace_csv
    from nnparity.verify import verify

    if (args.rtol is None) != (args.atol is None):
        raise NnparityError("--rtol and --atol go together: give both or neither.")
    # Fail before a long run, not after it.
    for path in (args.report, args.plot):
        if path is not None:
            check_writable(path)
    if args.plot is not None:
        require_matplotlib(args.plot)
    config, data = load_run(args)
    config = replace(config, mode=args.mode or config.mode)
    rtol = args.rtol if args.rtol is not None else config.rtol
    atol = args.atol if args.atol is not None else config.atol
    # A recording on either side is checked against the run first (network, init, data, steps),
    # and gives its own starting weights (a torch-initialised one replays without torch).
    params = None
    for name in (args.candidate, args.reference):
        if name.endswith(".npz"):
            from nnparity.trajectory import start_for_replay

            params = start_for_replay(name, config, data.x, data.y)
    if params is None:
        params = init_params(config.spec, seed=config.seed, scheme=config.scheme)
    # Let MODULE:CLASS name a module in the current directory, as `python -m` would.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    candidate, reference = args.candidate, args.reference
    if args.device != "cpu":
        if "torch" not in (args.candidate, args.reference):
            raise NnparityError("--device places the torch backend, but neither side is torch.")
        from nnparity.torch_backend import on_device

        torch_class = on_device(args.device)
        candidate, reference = (torch_class if name == "torch" else name for name in (candidate, reference))
    report = verify(
        config.spec,
        data.x,
        data.y,
        steps=config.steps,
        params=params,
        candidate=candidate,
        reference=reference,
        mode=config.mode,
        rtol=rtol,
        atol=atol,
        keep_going=args.keep_going,
        progress=sys.stderr.isatty() and not args.json,
    )
    print(report.to_json() if args.json else report.summary(), end="" if args.json else "\n")
    if args.report is not None:
        write_trace_csv(report, args.report)
    if args.plot is not None:
        plot_report(report, args.plot)
    return EXIT_OK if report.ok else EXIT_DIVERGED


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """The options that describe a run (``verify``, ``record``): a config, data, and steps."""
    parser.add_argument("--config", type=Path, help="a TOML run configuration")
    parser.add_argument(
        "--data",
        type=Path,
        help="a CSV file, instead of the config's [data] (whose index and targets then do not apply)",
    )
    parser.add_argument("--index", help="the CSV's index column, dropped (e.g. observation)")
    parser.add_argument("--targets", help="comma-separated target columns (default: the last column)")
    parser.add_argument("--steps", type=arguments.count, help="SGD steps (default: the config's, or 10000)")


def load_run(args: argparse.Namespace) -> tuple[RunConfig, Dataset]:
    """The run :func:`add_run_options`' options describe: the config (the notebook's experiment without
    one) with ``--steps`` over it, and its data, checked to fit the network, the dtype and the memory."""
    from nnparity.config import RunConfig, load_config
    from nnparity.dataset import check_range, load_csv, or_table
    from nnparity.resources import check_memory

    config = load_config(args.config) if args.config else RunConfig()
    csv = args.data or config.csv
    index = args.index if args.index is not None else (None if args.data else config.index)
    targets = args.targets.split(",") if args.targets else (None if args.data else config.targets)
    spec = config.spec
    if csv is None and (index is not None or targets is not None):
        given = "--index/--targets" if args.index is not None or args.targets else "[data] index/targets"
        raise NnparityError(
            f"{given} name columns of a CSV file, but no CSV is given; add --data FILE.csv or [data] csv."
        )
    if csv is None:
        data = or_table()
        if spec.sizes[0] != data.x.shape[1] or spec.sizes[-1] != data.y.shape[1]:
            raise NnparityError(
                f"No data given: the default OR table has 2 inputs and 1 target, which does not fit "
                f"sizes {list(spec.sizes)}; give a CSV with --data or [data] csv."
            )
    else:
        data = load_csv(csv, index=index, targets=targets)
        sizes = spec.sizes
        if data.x.shape[1] != sizes[0] or data.y.shape[1] != sizes[-1]:
            raise NnparityError(
                f"{csv} has {_count(data.x.shape[1], 'input column')} and "
                f"{_count(data.y.shape[1], 'target column')}, but sizes {list(sizes)} take {sizes[0]} "
                f"and {sizes[-1]}; set the index column (--index) or the targets (--targets), or the sizes."
            )
        check_range(data, spec.dtype, str(csv))
    steps = args.steps or config.steps
    check_memory(spec, data.x.shape[0], steps)
    return replace(config, steps=steps), data


def _count(n: int, what: str) -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")


def _check_out_dir(out: Path) -> None:
    """Raise unless ``out`` is, or can be made, a writable directory (check before a long search)."""
    existing = next((p for p in (out, *out.absolute().parents) if p.exists()), None)
    if existing is None:
        return
    if not existing.is_dir():
        raise NnparityError(
            f"Cannot write in {out}: {existing} is a file, not a directory; choose another --out."
        )
    if not os.access(existing, os.W_OK):
        raise NnparityError(
            f"Cannot write in {out}: the directory {existing} is not writable; choose another --out."
        )
    from nnparity.search import CONFIG_NAME, CSV_NAME

    for name in (CONFIG_NAME, CSV_NAME):
        if (out / name).is_dir():
            raise NnparityError(f"Cannot write {out / name}: it is a directory; choose another --out.")


def _check(args: argparse.Namespace) -> int:
    try:
        from nnparity.search import DEFAULT_EXAMPLES, cases, describe, search, write_reproduction
    except ModuleNotFoundError as exc:
        if exc.name != "hypothesis":
            raise
        raise NnparityError("nnparity check needs hypothesis: pip install hypothesis.") from exc

    narrowing = ("modes", "activations", "losses", "reductions", "dtypes")
    limits = ("max_steps", "max_rows", "min_layers", "max_layers", "max_width")
    given = {name: getattr(args, name) for name in narrowing + limits if getattr(args, name) is not None}
    if args.bias is not None:
        given["bias"] = args.bias == "on"
    for option in ("momentum", "dampening", "nesterov", "weight_decay"):
        if getattr(args, f"no_{option}"):
            given[f"allow_{option}"] = False
    strategy = cases(**given)
    _check_out_dir(args.out)
    # Let MODULE:CLASS name a module in the current directory, as `python -m` would.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    result = search(
        args.candidate,
        reference=args.reference,
        examples=args.examples or DEFAULT_EXAMPLES,
        seed=args.seed,
        strategy=strategy,
    )
    files = None if result.finding is None else write_reproduction(result, args.out)
    print(describe(result, files))
    return EXIT_OK if result.finding is None and not result.interrupted else EXIT_DIVERGED


if __name__ == "__main__":
    sys.exit(main())
