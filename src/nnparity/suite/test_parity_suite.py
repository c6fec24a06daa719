"""nnparity's equivalence suite, run against the backend named by ``--nnparity-backend``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from nnparity.records import LayerParams, copy_params
from nnparity.spec import NetworkSpec
from nnparity.suite.cases import CASES, FREE_RUNS, FREE_STEPS, STEPS, batch, start


def _supported(backend: type, spec: NetworkSpec, params: Sequence[LayerParams], case: str) -> None:
    """Skip the case when the backend's constructor says it does not support the network."""
    try:
        backend(spec, copy_params(list(params)))
    except NotImplementedError as exc:
        pytest.skip(f"{backend.__qualname__} does not support {case}: {exc}")


@pytest.mark.parametrize("case", list(CASES))
def test_one_option(case: str, nnparity_backend: type, assert_parity: Callable[..., Any]) -> None:
    spec = CASES[case]
    params = start(spec)
    _supported(nnparity_backend, spec, params, case)
    x, y = batch(spec)
    assert_parity(spec, x, y, steps=STEPS, params=params, mode="resync")


@pytest.mark.parametrize("case", list(FREE_RUNS))
def test_free_run(case: str, nnparity_backend: type, assert_parity: Callable[..., Any]) -> None:
    spec = FREE_RUNS[case]
    params = start(spec)
    _supported(nnparity_backend, spec, params, case)
    x, y = batch(spec)
    assert_parity(spec, x, y, steps=FREE_STEPS, params=params, mode="free")


def test_search(
    nnparity_backend: type,
    nnparity_reference: str | type,
    pytestconfig: pytest.Config,
    tmp_path: Path,
) -> None:
    """Networks a hypothesis search draws, narrowed by the backend's ``nnparity_supports``."""
    pytest.importorskip("hypothesis")
    from nnparity.search import cases, describe, search, write_reproduction

    examples = pytestconfig.getoption("nnparity_examples")
    if examples < 1:
        pytest.skip("--nnparity-examples 0: no search")
    options = dict(getattr(nnparity_backend, "nnparity_supports", {}))
    result = search(
        nnparity_backend,
        reference=nnparity_reference,
        examples=examples,
        seed=pytestconfig.getoption("nnparity_seed"),
        strategy=cases(**options),
    )
    if result.finding is not None:
        files = write_reproduction(result, tmp_path / "nnparity-repro")
        pytest.fail(describe(result, files), pytrace=False)
