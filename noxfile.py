"""nox sessions for nnparity; every session installs the pinned versions in constraints.txt."""

from __future__ import annotations

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
    session.run("ruff", "check", "src", "tests", "benchmarks", "noxfile.py")
    session.run("ruff", "format", "--check", "src", "tests", "benchmarks", "noxfile.py")


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
