"""``nnparity check``: hypothesis searches for a network on which a backend diverges.

Each example is a :class:`Case`: a network (:func:`nnparity.strategies.network_specs`),
a batch (:func:`~nnparity.strategies.batches`), starting weights as an ``init_params``
scheme and seed, a number of steps and a mode. :func:`search` verifies the candidate
against the reference on each; at the first divergence (or exception) hypothesis
shrinks the case to the smallest one that still fails, and :func:`write_reproduction`
writes it as a config and a CSV file that ``nnparity verify`` re-runs exactly.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from nnparity.backend import backend_label, load_backend
from nnparity.errors import NnparityError
from nnparity.files import atomic_write_text
from nnparity.initialization import init_params
from nnparity.records import LayerParams
from nnparity.report import Report
from nnparity.spec import NetworkSpec
from nnparity.strategies import CEILINGS, DEFAULT_MAX_ROWS, MAX_SEED, batches, init_choices, network_specs
from nnparity.verify import MODES, verify

DEFAULT_EXAMPLES = 100
DEFAULT_MAX_STEPS = 4
MAX_CASE_STEPS = 1000  # steps of one case, at most
CONFIG_NAME, CSV_NAME = "repro.toml", "repro.csv"


@dataclass(frozen=True, eq=False)
class Case:
    """One verification run: everything ``nnparity verify`` needs to repeat it."""

    spec: NetworkSpec
    x: np.ndarray
    y: np.ndarray
    scheme: str
    seed: int
    steps: int
    mode: str

    def params(self) -> list[LayerParams]:
        return init_params(self.spec, seed=self.seed, scheme=self.scheme)


def cases(
    *,
    modes: Collection[str] | None = None,
    max_steps: int = DEFAULT_MAX_STEPS,
    max_rows: int = DEFAULT_MAX_ROWS,
    **spec_options: Any,
) -> st.SearchStrategy[Case]:
    """A strategy for :class:`Case` values: 1 to ``max_steps`` steps in one of ``modes``
    (default: both), batches of 1 to ``max_rows`` rows, and any network
    ``network_specs(**spec_options)`` draws."""
    valid = isinstance(modes, Collection) and not isinstance(modes, str) and modes
    if modes is not None and not (valid and all(m in MODES for m in modes)):
        raise NnparityError(f"modes must name some of {', '.join(MODES)}; got {modes!r}.")
    chosen = tuple(m for m in MODES if modes is None or m in modes)
    for name, value, ceiling in (
        ("max_steps", max_steps, MAX_CASE_STEPS),
        ("max_rows", max_rows, CEILINGS["rows"]),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= ceiling:
            raise NnparityError(
                f"{name} must be a whole number from 1 to {ceiling} (a search tries many small cases); "
                f"got {value!r}."
            )
    specs = network_specs(**spec_options)
    return _cases(specs, chosen, max_steps, max_rows)


@st.composite
def _cases(
    draw: Any, specs: st.SearchStrategy[NetworkSpec], modes: tuple[str, ...], max_steps: int, max_rows: int
) -> Case:
    spec = draw(specs)
    x, y = draw(batches(spec, max_rows=max_rows))
    scheme, seed = draw(init_choices())
    steps = draw(st.integers(1, max_steps))
    return Case(spec, x, y, scheme, seed, steps, draw(st.sampled_from(modes)))


def run_case(
    case: Case, candidate: str | type, reference: str | type = "torch", *, diagnosis: bool = True
) -> Report:
    """Verify ``candidate`` against ``reference`` on ``case``."""
    return verify(
        case.spec,
        case.x,
        case.y,
        steps=case.steps,
        params=case.params(),
        candidate=candidate,
        reference=reference,
        mode=case.mode,
        diagnosis=diagnosis,
    )


@dataclass(frozen=True)
class Finding:
    """The shrunk failing case, and its report or the exception it raised."""

    case: Case
    report: Report | None
    error: str | None = None
    reproduced: bool = True  # whether it failed again when run once more (with the diagnosis)

    def summary(self) -> str:
        if self.report is not None:
            return self.report.summary()
        return f"Running this case raised {self.error}"


@dataclass(frozen=True)
class SearchResult:
    """What :func:`search` did: ``runs`` verifications in ``seconds``, of which the first
    ``examples`` were new networks (the rest shrank the failure), and the finding."""

    candidate: str
    reference: str
    seed: int
    examples: int
    runs: int
    seconds: float
    finding: Finding | None
    interrupted: bool = False  # by Ctrl-C: the search stopped early

    @property
    def rate(self) -> float:
        """Networks verified per second."""
        return self.runs / self.seconds if self.seconds > 0 else float("inf")


class _CaseFailedError(Exception):
    """Raised inside the hypothesis test so that it shrinks the case."""


def search(
    candidate: str | type,
    *,
    reference: str | type = "torch",
    examples: int = DEFAULT_EXAMPLES,
    seed: int | None = None,
    strategy: st.SearchStrategy[Case] | None = None,
) -> SearchResult:
    """Verify ``candidate`` on up to ``examples`` networks drawn by ``strategy``
    (default :func:`cases`); shrink the first failure to the smallest case that fails.

    The search is random, seeded with ``seed`` (default: a fresh one, reported in the
    result), and keeps no database, so the same seed repeats the same search.
    """
    if isinstance(examples, bool) or not isinstance(examples, int) or examples < 1:
        raise NnparityError(f"examples must be a whole number >= 1; got {examples!r}.")
    if seed is None:
        seed = int.from_bytes(os.urandom(4), "little")
    elif isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise NnparityError(f"The seed must be a whole number from 0 to 2**32 - 1; got {seed!r}.")
    for side, name in (("candidate", candidate), ("reference", reference)):
        if isinstance(name, str) and name.endswith(".npz"):
            raise NnparityError(
                f"The {side} {name} is a recording of one run; check verifies many networks, so both "
                "sides must be backends (numpy, torch or MODULE:CLASS)."
            )
    load_backend(candidate)  # a backend that cannot even be loaded is a usage error
    load_backend(reference)
    strategy = cases() if strategy is None else strategy
    findings: list[Finding] = []
    counts = {"runs": 0, "examples": 0}

    def probe(case: Case) -> None:
        counts["runs"] += 1
        try:
            report = run_case(case, candidate, reference, diagnosis=False)  # diagnosed once, at the end
        except Exception as exc:  # a crash on some network is a finding too
            findings.append(Finding(case, None, f"{type(exc).__name__}: {exc}"))
            raise _CaseFailedError from exc
        if report.interrupted:  # Ctrl-C inside the run: not a failure of the case, the end of the search
            raise KeyboardInterrupt
        if not report.ok:
            findings.append(Finding(case, report))
            raise _CaseFailedError
        if not findings:
            counts["examples"] += 1

    test = settings(
        max_examples=examples,
        derandomize=False,
        database=None,
        deadline=None,
        phases=(Phase.generate, Phase.shrink),
        report_multiple_bugs=False,
        suppress_health_check=list(HealthCheck),
        verbosity=Verbosity.quiet,
        print_blob=False,
    )(given(strategy)(probe))
    test = hypothesis_seed(seed)(test)
    start = time.perf_counter()
    interrupted = False
    try:
        test()
    except _CaseFailedError:
        pass
    except KeyboardInterrupt:
        interrupted = True
    except Exception as exc:
        if findings:
            pass
        elif type(exc).__module__.startswith("hypothesis"):  # e.g. a strategy it cannot draw from
            raise NnparityError(f"hypothesis cannot search these cases: {str(exc).splitlines()[0]}") from exc
        else:  # not a failure of the case: a bug of ours
            raise
    seconds = time.perf_counter() - start
    if findings and findings[-1].report is not None and not interrupted:
        # The shrunk case once more, now with its diagnosis: a backend that is not deterministic
        # may pass it this time, and the report must not then call it a divergence unremarked.
        last = findings[-1]
        again = run_case(last.case, candidate, reference)
        if again.interrupted:
            interrupted = True
        elif again.ok:
            findings[-1] = dataclasses.replace(last, reproduced=False)
        else:
            findings[-1] = dataclasses.replace(last, report=again)
    return SearchResult(
        candidate=backend_label(candidate),
        reference=backend_label(reference),
        seed=seed,
        examples=counts["examples"] + (1 if findings else 0),
        runs=counts["runs"],
        seconds=seconds,
        # Hypothesis replays the smallest failing case last.
        finding=findings[-1] if findings else None,
        interrupted=interrupted,
    )


def config_toml(case: Case, *, csv_name: str = CSV_NAME, comment: str = "") -> str:
    """The case as a run configuration, in the sections ``nnparity verify --config`` reads."""
    spec, opt = case.spec, case.spec.optimizer
    sections: dict[str, dict[str, object]] = {
        "network": {
            "sizes": list(spec.sizes),
            "activations": list(spec.activations),
            "bias": spec.bias,
            "dtype": spec.dtype,
        },
        "loss": {"name": spec.loss, "reduction": spec.reduction},
        "optimizer": {
            "lr": opt.lr,
            "momentum": opt.momentum,
            "dampening": opt.dampening,
            "weight_decay": opt.weight_decay,
            "nesterov": opt.nesterov,
        },
        "init": {"scheme": case.scheme, "seed": case.seed},
        "train": {"steps": case.steps, "mode": case.mode},
        "data": {"csv": csv_name, "targets": _columns("y", case.y.shape[1])},
    }
    lines = [f"# {line}".rstrip() for line in comment.splitlines()]
    for name, body in sections.items():
        if lines:
            lines.append("")
        lines.append(f"[{name}]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in body.items()]
    return "\n".join(lines) + "\n"


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, np.integer, np.floating)):
        return repr(value.item() if isinstance(value, np.generic) else value)  # repr round-trips floats
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def case_csv(case: Case) -> str:
    """The batch as CSV: columns ``x0..`` then ``y0..``, every value written to round-trip exactly."""
    header = _columns("x", case.x.shape[1]) + _columns("y", case.y.shape[1])
    rows = np.hstack([case.x.astype(np.float64), case.y.astype(np.float64)])
    lines = [",".join(header)] + [",".join(repr(float(v)) for v in row) for row in rows]
    return "\n".join(lines) + "\n"


def _columns(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


def rerun_command(config: Path, candidate: str, reference: str) -> str:
    command = f"nnparity verify --config {shlex.quote(str(config))} --candidate {shlex.quote(candidate)}"
    return command if reference == "torch" else f"{command} --reference {shlex.quote(reference)}"


def write_reproduction(result: SearchResult, out: str | Path) -> tuple[Path, Path]:
    """Write the finding's config and CSV into ``out`` (created if need be); their paths."""
    if result.finding is None:
        raise NnparityError("There is no divergence to write a reproduction of.")
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NnparityError(f"Cannot create the directory {str(out)!r}: {exc.strerror or exc}.") from exc
    config, csv = out / CONFIG_NAME, out / CSV_NAME
    comment = (
        f"Minimal reproduction found by `nnparity check` (seed {result.seed}): "
        f"{result.candidate} diverges from {result.reference}.\n"
        "Re-run it from the directory nnparity check ran in (where the candidate imports) with:\n"
        + rerun_command(config, result.candidate, result.reference)
    )
    if not result.finding.reproduced:
        comment += "\nIt failed once and passed when run again: a backend is not deterministic."
    case = result.finding.case
    atomic_write_text(csv, case_csv(case))  # the data first: the config refers to it
    atomic_write_text(config, config_toml(case, comment=comment))
    return config, csv


def describe(result: SearchResult, files: tuple[Path, Path] | None = None) -> str:
    """What ``nnparity check`` prints: the verdict and, for a divergence, its reproduction."""
    head = f"{result.candidate} vs {result.reference}, seed {result.seed}: "
    speed = f"{result.runs} networks verified in {result.seconds:.1f} s, {result.rate:.0f} per second."
    if result.finding is None:
        if result.interrupted:
            return head + f"interrupted; no divergence in the {result.examples} networks verified.\n{speed}"
        return head + f"no divergence in {result.examples} networks.\n{speed}"
    shrank = (
        "hypothesis was shrinking it when interrupted; the smallest so far"
        if result.interrupted
        else "hypothesis shrank it to this one"
    )
    lines = [head + f"DIVERGENCE in network {result.examples}; {shrank}.", speed, ""]
    if not result.finding.reproduced:
        lines += [
            "It did not happen again when this case was run once more: a backend gives different "
            "results from the same start (random numbers, state kept between runs, threads).",
            "",
        ]
    lines.append(result.finding.summary())
    if files is not None:
        config, csv = files
        lines += [
            "",
            f"Minimal reproduction, written to {config} and {csv}:",
            "",
            config.read_text(encoding="utf-8").rstrip("\n"),
            "",
            f"{csv.name}:",
            csv.read_text(encoding="utf-8").rstrip("\n"),
            "",
            "Re-run it with:",
            f"  {rerun_command(config, result.candidate, result.reference)}",
        ]
    return "\n".join(lines)
