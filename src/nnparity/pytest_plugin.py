"""The nnparity pytest plugin: check your own backend from your own test suite.

Installed with nnparity (the ``pytest11`` entry point ``nnparity``), it adds:

``--nnparity-backend MODULE:CLASS`` (or ``nnparity_backend = "MODULE:CLASS"`` in the ini file)
    the backend under test. Without it the fixtures below skip the tests that use them.
``--nnparity-reference NAME``
    what it is checked against (default ``torch``).
``--nnparity-examples N``, ``--nnparity-seed N``
    how many networks the packaged suite's hypothesis search tries (default 25), and its seed.

Fixtures, all thin:

``nnparity_backend``
    the backend class (loaded with :func:`nnparity.load_backend`).
``nnparity_reference``
    the reference, a name or a class.
``assert_parity``
    :func:`nnparity.testing.assert_parity` with ``candidate`` and ``reference`` bound to
    the two above.

The packaged equivalence suite runs with ``pytest --pyargs nnparity.suite --nnparity-backend
MODULE:CLASS``. Importing this module imports no torch and no pandas beyond what
``import nnparity`` does: every nnparity module is imported inside a fixture.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import pytest

from nnparity import arguments

DEFAULT_EXAMPLES = 25


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("nnparity", "nnparity: NumPy-vs-PyTorch backprop parity")
    group.addoption(
        "--nnparity-backend",
        metavar="MODULE:CLASS",
        default=None,
        help="the backend the nnparity fixtures and suite check (default: the nnparity_backend ini value)",
    )
    group.addoption(
        "--nnparity-reference",
        metavar="NAME",
        default=None,
        help="the reference backend: torch (default), numpy or MODULE:CLASS",
    )
    group.addoption(
        "--nnparity-examples",
        metavar="N",
        type=arguments.whole_number(0, 10**9),
        default=DEFAULT_EXAMPLES,
        help=f"networks the packaged suite's hypothesis search tries (default {DEFAULT_EXAMPLES})",
    )
    group.addoption(
        "--nnparity-seed",
        metavar="N",
        type=arguments.seed,
        default=0,
        help="seed of the packaged suite's hypothesis search (default 0)",
    )
    parser.addini("nnparity_backend", "the backend nnparity checks, as MODULE:CLASS", default="")
    parser.addini("nnparity_reference", "the reference backend (default torch)", default="torch")


def _backend_name(config: pytest.Config) -> str | None:
    name = config.getoption("nnparity_backend") or config.getini("nnparity_backend")
    return str(name) if name else None


def pytest_report_header(config: pytest.Config) -> str | None:
    name = _backend_name(config)
    return None if name is None else f"nnparity: backend {name}, reference {_reference_name(config)}"


def _reference_name(config: pytest.Config) -> str:
    return str(config.getoption("nnparity_reference") or config.getini("nnparity_reference") or "torch")


def _load(name: str, config: pytest.Config, what: str) -> type:
    from nnparity.backend import load_backend
    from nnparity.errors import NnparityError

    # Let MODULE:CLASS name a module where pytest was started, as the command line does.
    here = str(config.invocation_params.dir)
    if here not in sys.path:
        sys.path.append(here)
    try:
        return load_backend(name)
    except NnparityError as exc:
        pytest.fail(f"{what}: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def nnparity_backend(pytestconfig: pytest.Config) -> type:
    """The backend class named by ``--nnparity-backend``; skips the test when none is named."""
    name = _backend_name(pytestconfig)
    if name is None:
        pytest.skip("no backend to check: pass --nnparity-backend MODULE:CLASS")
    return _load(name, pytestconfig, "--nnparity-backend")


@pytest.fixture(scope="session")
def nnparity_reference(pytestconfig: pytest.Config) -> str | type:
    """The reference backend: ``"torch"``, ``"numpy"`` or the class named by ``--nnparity-reference``."""
    name = _reference_name(pytestconfig)
    return name if name in ("torch", "numpy") else _load(name, pytestconfig, "--nnparity-reference")


@pytest.fixture
def assert_parity(nnparity_backend: type, nnparity_reference: str | type) -> Callable[..., Any]:
    """``nnparity.testing.assert_parity`` with the configured candidate and reference."""
    from nnparity.testing import assert_parity as check

    def bound(*args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = True
        kwargs.setdefault("candidate", nnparity_backend)
        kwargs.setdefault("reference", nnparity_reference)
        return check(*args, **kwargs)

    return bound
