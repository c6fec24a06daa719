"""The verifier's teeth: every mutant of the NumPy backend is caught, at the right place."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

import nnparity.mutants as mutants
from nnparity import NnparityError, load_backend, verify
from nnparity.activations import ACTIVATIONS, d_sigmoid
from nnparity.mutants import (
    CATALOG,
    NETWORKS,
    Edit,
    all_placed,
    check_mutants,
    describe_edits,
    mutant_backend,
    problem,
)
from nnparity.numpy_backend import NumpyBackend


@pytest.fixture(scope="module")
def resync_table() -> object:
    return check_mutants(mode="resync")


def test_the_catalog_is_broad() -> None:
    assert len(CATALOG) >= 12
    kinds = {m.kind for m in CATALOG.values()}
    assert len(kinds) >= 8
    assert {m.expected.stage for m in CATALOG.values()} == {"forward", "loss", "gradient", "update"}
    assert {m.expected.step for m in CATALOG.values()} == {0, 1}
    assert set().union(*({e.file for e in m.edits} for m in CATALOG.values())) == set(mutants.FILES)


def test_every_mutant_is_caught_and_placed(resync_table: object) -> None:
    frame = resync_table
    failed = frame[~(frame["caught"] & frame["placed"])]  # type: ignore[index]
    assert failed.empty, "\n" + failed.to_string(index=False)
    assert all_placed(frame)


def test_the_readme_table_shows_the_catalog_as_it_stands() -> None:
    """The README's table names each mutant's edit by file and line: an edit of the shipped
    source that moves a line must move it there too."""
    text = (Path(__file__).parents[1] / "README.md").read_text()
    table = text.split("`nnparity mutants` today", 1)[1].split("\n\n", 2)[1]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    shown = {row.split("`")[1]: row.rstrip(" |").rsplit("| `", 1)[1].rstrip("`") for row in rows}
    assert shown == {name: describe_edits(mutant) for name, mutant in CATALOG.items()}


def test_free_running_places_them_the_same() -> None:
    frame = check_mutants(mode="free")
    assert list(frame["found"]) == [str(m.expected) for m in CATALOG.values()]


@pytest.mark.parametrize("network", list(NETWORKS))
def test_the_unedited_copy_agrees_with_torch(network: str) -> None:
    """The machinery alone (a fresh copy of the source, no edit) is exact: every finding is the edit's."""
    cls = mutants.patched_modules([], tag=f"control_{network}")["numpy_backend"].NumpyBackend
    spec, x, y, params = problem(CATALOG["MissingFactorTwo"]._replace(network=network))
    for mode in ("free", "resync"):
        report = verify(spec, x, y, steps=mutants.STEPS, params=params, candidate=cls, mode=mode)
        assert report.ok, report.summary()
        ref = verify(spec, x, y, steps=mutants.STEPS, params=params, candidate=NumpyBackend, mode=mode)
        np.testing.assert_array_equal(report.trace["candidate_loss"], ref.trace["candidate_loss"])


def test_mutants_do_not_touch_the_real_backend(resync_table: object) -> None:
    assert ACTIVATIONS["sigmoid"].derivative is d_sigmoid
    spec, x, y, params = problem(CATALOG["GradientAscent"])
    assert verify(spec, x, y, steps=3, params=params, candidate="numpy").ok
    assert not issubclass(mutant_backend("GradientAscent"), NumpyBackend)


def test_mutants_are_importable_backends() -> None:
    cls = load_backend("nnparity.mutants:MissingFactorTwo")
    assert cls is mutants.MissingFactorTwo
    assert cls.__module__ == "nnparity.mutants"
    assert "MissingFactorTwo" in dir(mutants)
    spec, x, y, params = problem(CATALOG["MissingFactorTwo"])
    report = verify(spec, x, y, steps=2, params=params, candidate="nnparity.mutants:MissingFactorTwo")
    assert report.candidate == "nnparity.mutants:MissingFactorTwo"
    d = report.first_divergence
    assert d is not None
    assert d.candidate_value == pytest.approx(d.reference_value / 2, rel=1e-12)
    with pytest.raises(AttributeError):
        _ = mutants.NoSuchMutant


def test_a_stale_edit_fails_loudly() -> None:
    with pytest.raises(NnparityError, match=r"occurs 0 times in nnparity/optim.py"):
        mutants.patched_modules([Edit("optim", "p -= lr * g", "p += lr * g")], tag="stale")
    with pytest.raises(NnparityError, match=r"can only edit"):
        mutants.patched_modules([Edit("verify", "a", "b")], tag="elsewhere")
    with pytest.raises(NnparityError, match=r"Unknown mutant 'Nope'"):
        mutant_backend("Nope")


def _args(**given: object) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    mutants.add_mutants_parser(parser.add_subparsers(dest="command"))
    argv = ["mutants"]
    for key, value in given.items():
        flag = f"--{key}"
        argv += [flag] if value is True else [flag, str(value)]
    return parser.parse_args(argv)


def test_command_prints_the_table_and_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert mutants.run_mutants(_args(only="GradientAscent,DampeningIgnored")) == 0
    out = capsys.readouterr().out
    assert "GradientAscent" in out
    assert "step 1 update 0 weight" in out
    assert out.rstrip().endswith("2 of 2 mutants caught and placed correctly (mode resync).")


def test_command_json_and_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert mutants.run_mutants(_args(only="BiasGradientMean", json=True)) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["found"] == "step 0 gradient 2 bias"
    assert rows[0]["edit"].startswith("numpy_backend.py:")
    assert mutants.run_mutants(_args(list=True)) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in CATALOG)


def test_command_exits_1_when_a_mutant_is_misplaced(monkeypatch: pytest.MonkeyPatch) -> None:
    wrong = CATALOG["GradientAscent"]._replace(expected=mutants.Place(0, "update", 1, "weight"))
    monkeypatch.setitem(CATALOG, "GradientAscent", wrong)
    assert mutants.run_mutants(_args(only="GradientAscent")) == 1


def test_command_rejects_unknown_names() -> None:
    with pytest.raises(NnparityError, match="Unknown mutant 'Nope'"):
        mutants.run_mutants(_args(only="GradientAscent,Nope"))
