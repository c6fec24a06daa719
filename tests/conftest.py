"""Hypothesis profiles for the suite.

- ``ci``: derandomized (the same examples on every run, so CI is never flaky), no
  example database, no deadline; loaded when the ``CI`` environment variable is set.
- ``dev``: ten times the examples, for a deeper search on your own machine.
- otherwise hypothesis' ``default`` profile: random examples, remembered failures.

Choose one with ``HYPOTHESIS_PROFILE=dev pytest`` or ``pytest --hypothesis-profile=dev``.

The suite runs under pytest-xdist too (``pytest -n auto``). Each worker then keeps torch to
one thread: the networks are far too small to gain from more, and a worker per core, each
with a thread per core, would make the run slower than running without xdist.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

from nnparity.worker import Worker

settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=True,
    max_examples=100,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", deadline=None, max_examples=1000)

if os.environ.get("PYTEST_XDIST_WORKER"):
    import torch

    torch.set_num_threads(1)

_profile = os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else None)
if _profile:
    settings.load_profile(_profile)


@pytest.fixture
def workers(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many runs the test handed to a worker process (so a test cannot pass by running serially)."""
    started: list[int] = []
    init = Worker.__init__

    def counted(self: Worker, *args: object, **kwargs: object) -> None:
        started.append(1)
        init(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Worker, "__init__", counted)
    return started
