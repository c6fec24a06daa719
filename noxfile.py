"""nox sessions for nnparity; every session installs the pinned versions in constraints.txt."""

from __future__ import annotations

import os
import shutil

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.default_venv_backend = "venv"

PYTHON = "3.11"
PINNED = ("-c", "constraints.txt")


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Run the test suite (pass pytest options after --)."""
    session.install(*PINNED, "-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """Check style and formatting with ruff."""
    session.install(*PINNED, "ruff")
    session.run("ruff", "check", "src", "tests", "benchmarks", "examples", "noxfile.py")
    session.run("ruff", "format", "--check", "src", "tests", "benchmarks", "examples", "noxfile.py")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """Type-check the package with mypy."""
    session.install(*PINNED, "-e", ".", "mypy")
    session.run("mypy")


@nox.session(python=PYTHON, default=False)
def seed(session: nox.Session) -> None:
    """Run the reference notebook's experiment on both backends."""
    session.install(*PINNED, "-e", ".")
    session.run("nnparity", "seed")


BENCHMARKS = {
    "notebook": "benchmarks/bench_notebook.py",  # targets 1 and 2
    "large": "benchmarks/bench_large.py",  # target 3
    "memory": "benchmarks/bench_memory.py",  # target 4 (about 7 minutes at 10,000 steps)
    "properties": "benchmarks/bench_properties.py",  # target 5
}


@nox.session(python=PYTHON, default=False)
def bench(session: nox.Session) -> None:
    """Run the performance benchmarks, each printing its ratios (`-- notebook large`: some)."""
    session.install(*PINNED, "-e", ".")
    chosen = session.posargs or list(BENCHMARKS)
    unknown = [name for name in chosen if name not in BENCHMARKS]
    if unknown:
        session.error(f"Unknown benchmark {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}.")
    for name in chosen:
        session.run("python", BENCHMARKS[name])


@nox.session(python=PYTHON, default=False)
def mutants(session: nox.Session) -> None:
    """Plant the catalog's backprop bugs in the NumPy backend; each must be caught where it belongs."""
    session.install(*PINNED, "-e", ".")
    session.run("nnparity", "mutants", *session.posargs)


@nox.session(python=PYTHON, default=False)
def mutation(session: nox.Session) -> None:
    """Mutation-test the backprop math with mutmut ([tool.mutmut] in pyproject.toml); list the survivors."""
    session.install(*PINNED, ".[test]", "mutmut")
    # torch's thread pool does not survive mutmut's fork: one thread, or mutants hang until they time out.
    env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    jobs = str(os.cpu_count() or 1)
    # mutmut keeps its results in mutants/ and re-runs only mutants of changed source: a test
    # added since would not count. Start afresh (the whole run takes about a minute).
    shutil.rmtree("mutants", ignore_errors=True)
    session.run("mutmut", "run", "--max-children", jobs, *session.posargs, env=env)
    session.run("mutmut", "results", env=env)
