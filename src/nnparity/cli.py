"""The ``nnparity`` command line.

Exit status: 0 when the backends agree, 1 when they diverge, 2 for bad input or
usage (one line on stderr, no traceback).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from nnparity.errors import NnparityError

EXIT_OK, EXIT_DIVERGED, EXIT_USAGE = 0, 1, 2


def _positive_int(text: str) -> int:
    from nnparity.config import MAX_STEPS

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 1 <= value <= MAX_STEPS:
        raise argparse.ArgumentTypeError(f"expected a number from 1 to {MAX_STEPS:,}, got {value}")
    return value


def _tolerance(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nnparity",
        description="Check, step by step, that hand-written NumPy backprop does what PyTorch does.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    seed = sub.add_parser("seed", help="run the reference notebook's experiment on both backends")
    seed.add_argument("--steps", type=_positive_int, default=None, help="SGD steps (default 10000)")

    ver = sub.add_parser(
        "verify",
        help="train two backends in lockstep and report the first divergence",
        description="Train a candidate and a reference backend in lockstep from the same weights and "
        "compare every step. With no --config, the notebook's experiment.",
    )
    ver.add_argument("--config", type=Path, help="a TOML run configuration")
    ver.add_argument("--data", type=Path, help="a CSV file (overrides the config's [data] csv)")
    ver.add_argument("--index", help="the CSV's index column, dropped (e.g. observation)")
    ver.add_argument("--targets", help="comma-separated target columns (default: the last column)")
    ver.add_argument("--steps", type=_positive_int, help="SGD steps (default: the config's, or 10000)")
    ver.add_argument("--candidate", default="numpy", help="numpy, torch or MODULE:CLASS (default numpy)")
    ver.add_argument("--reference", default="torch", help="numpy, torch or MODULE:CLASS (default torch)")
    ver.add_argument("--mode", choices=("free", "resync"), help="free (default) or resync")
    ver.add_argument("--rtol", type=_tolerance, help="relative tolerance (with --atol)")
    ver.add_argument("--atol", type=_tolerance, help="absolute tolerance (with --rtol)")
    ver.add_argument("--keep-going", action="store_true", help="run every step and count the divergent ones")
    ver.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "seed":
            return _seed(args)
        return _verify(args)
    except NnparityError as exc:
        print(f"nnparity: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("nnparity: interrupted", file=sys.stderr)
        return 130


def _seed(args: argparse.Namespace) -> int:
    from nnparity.notebook import NUM_ITERATIONS, run_seed

    report = run_seed(sys.stdout, steps=args.steps or NUM_ITERATIONS, progress=sys.stderr.isatty())
    return EXIT_OK if report.ok else EXIT_DIVERGED


def _verify(args: argparse.Namespace) -> int:
    from nnparity.config import RunConfig, load_config
    from nnparity.dataset import load_csv, or_table
    from nnparity.initialization import init_params
    from nnparity.verify import verify

    if (args.rtol is None) != (args.atol is None):
        raise NnparityError("--rtol and --atol go together: give both or neither.")
    config = load_config(args.config) if args.config else RunConfig()
    csv = args.data or config.csv
    index = args.index if args.index is not None else (None if args.data else config.index)
    targets = args.targets.split(",") if args.targets else (None if args.data else config.targets)
    if csv is None:
        data = or_table()
        spec = config.spec
        if spec.sizes[0] != data.x.shape[1] or spec.sizes[-1] != data.y.shape[1]:
            raise NnparityError(
                f"No data given: the default OR table has 2 inputs and 1 target, which does not fit "
                f"sizes {list(spec.sizes)}; give a CSV with --data or [data] csv."
            )
    else:
        data = load_csv(csv, index=index, targets=targets)
    if data.x.shape[1] != config.spec.sizes[0] or data.y.shape[1] != config.spec.sizes[-1]:
        raise NnparityError(
            f"{csv}: {data.x.shape[1]} input and {data.y.shape[1]} target columns do not fit sizes "
            f"{list(config.spec.sizes)}; set the index column (--index) or the targets (--targets)."
        )
    config = replace(config, steps=args.steps or config.steps, mode=args.mode or config.mode)
    rtol = args.rtol if args.rtol is not None else config.rtol
    atol = args.atol if args.atol is not None else config.atol
    # Let MODULE:CLASS name a module in the current directory, as `python -m` would.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    report = verify(
        config.spec,
        data.x,
        data.y,
        steps=config.steps,
        params=init_params(config.spec, seed=config.seed, scheme=config.scheme),
        candidate=args.candidate,
        reference=args.reference,
        mode=config.mode,
        rtol=rtol,
        atol=atol,
        keep_going=args.keep_going,
        progress=sys.stderr.isatty() and not args.json,
    )
    print(report.to_json() if args.json else report.summary(), end="" if args.json else "\n")
    return EXIT_OK if report.ok else EXIT_DIVERGED


if __name__ == "__main__":
    sys.exit(main())
