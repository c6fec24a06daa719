"""The comparison's rule and the numbers it records, against a plain element-by-element statement.

A value ``c`` agrees with a reference value ``r`` when both are finite and
``|c - r| <= atol + rtol * |r|``. Per stage a step records the largest ``|c - r|`` (NaN if any is
NaN) and the largest ``|c - r| / |r|``, where an exact match counts 0, an infinite difference
counts inf and a NaN difference makes it NaN. The three ways a run compares (one step,
:meth:`Comparator.compare`; rows of many steps, :meth:`Comparator.compare_rows`; a large step in
place, :meth:`Comparator.compare_results`) must all say the same.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nnparity import SGD, LayerParams, NetworkSpec, StepResult, verify
from nnparity.compare import STAGES, Comparator, RowLayout, Tolerance, tolerance_for, within
from nnparity.numpy_backend import NumpyBackend
from planted import make_data, make_params

INF, NAN = math.inf, math.nan
TOL = Tolerance(rtol=1e-6, atol=1e-9)

# (candidate, reference, agrees)
PAIRS = [
    (1.0, 1.0, True),
    (1.0 + 1e-7, 1.0, True),
    (1.0 + 1e-5, 1.0, False),
    (0.0, 5e-10, True),
    (0.0, -0.0, True),
    (5.0, INF, False),  # the bound atol + rtol * inf is inf, but inf is no tolerance
    (-INF, INF, False),
    (1e300, -INF, False),
    (INF, 5.0, False),
    (INF, INF, False),  # non-finite values never agree, even alike (the report says "both")
    (-INF, -INF, False),
    (NAN, 1.0, False),
    (1.0, NAN, False),
    (NAN, NAN, False),
]


@pytest.mark.parametrize(("c", "r", "agrees"), PAIRS)
def test_the_rule(c: float, r: float, agrees: bool) -> None:
    assert bool(within(np.array([c]), np.array([r]), TOL)[0]) is agrees


# A one-layer network whose step is 2 activations, the loss, a (1, 2) weight gradient and the
# updated (1, 2) weight: one element of each stage's array is the one under test.
SPEC = NetworkSpec((1, 2), ("identity",), loss="mse", optimizer=SGD(0.1))


def _result(act: float, grad: float, update: float, loss: float = 0.5) -> StepResult:
    return StepResult(
        loss=loss,
        grads=[LayerParams(np.array([[grad, 0.25]]))],
        params=[LayerParams(np.array([[update, 0.75]]))],
        activations=[np.array([[act, 1.0], [2.0, 3.0]])],
    )


def _three_ways(cand: StepResult, ref: StepResult, tol: Tolerance) -> list[tuple[np.ndarray, ...]]:
    """(ok, abs_err, rel_err) of one step by each of the comparator's three paths."""
    comparator = Comparator(SPEC, tol)
    layout = RowLayout(SPEC, 2, forward=True)
    one = comparator.compare(cand, ref, 0)
    rows = [np.empty((1, layout.width)), np.empty((1, layout.width))]
    for result, row in zip((cand, ref), rows):
        assert layout.fill(result, row[0]) is not None
    by_rows = comparator.compare_rows(layout, *rows)
    arrays = [layout.arrays(cand), layout.arrays(ref)]
    in_place = comparator.compare_results(layout, *arrays, (cand.loss, ref.loss))
    return [
        (np.array([one.divergence is None]), one.abs_err[None], one.rel_err[None]),
        (by_rows.ok, by_rows.abs_err, by_rows.rel_err),
        (in_place.ok, in_place.abs_err, in_place.rel_err),
    ]


@pytest.mark.parametrize(("c", "r", "agrees"), PAIRS)
@pytest.mark.parametrize("stage", ["forward", "gradient", "update"])
def test_every_path_applies_the_rule(c: float, r: float, agrees: bool, stage: str) -> None:
    at = {"forward": "act", "gradient": "grad", "update": "update"}[stage]
    base = {"act": 0.5, "grad": -0.5, "update": 0.125}
    cand, ref = _result(**{**base, at: c}), _result(**{**base, at: r})
    with np.errstate(invalid="ignore", over="ignore"):
        d = abs(c - r)
    col = STAGES.index(stage)
    found = Comparator(SPEC, TOL).compare(cand, ref, 0).divergence
    if not agrees:
        assert found is not None
        np.testing.assert_equal((found.candidate_value, found.reference_value), (c, r))
        np.testing.assert_equal(found.abs_err, d if d == d else NAN)
        np.testing.assert_equal(found.rel_err, NAN if d != d else INF if d == INF else d / abs(r))
    for ok, abs_err, rel_err in _three_ways(cand, ref, TOL):
        assert bool(ok[0]) is agrees
        np.testing.assert_equal(abs_err[0, col], d if d == d else NAN)
        expected_rel = NAN if d != d else INF if d == INF else 0.0 if d == 0 else d / abs(r)
        np.testing.assert_equal(rel_err[0, col], expected_rel)


def _expected(c: np.ndarray, r: np.ndarray, tol: Tolerance) -> tuple[bool, float, float]:
    """The rule and the recorded errors for one stage's values, element by element."""
    ok, worst_abs, worst_rel = True, -INF, -INF
    for cv, rv in zip(c.tolist(), r.tolist()):
        d = abs(cv - rv) if math.isfinite(cv) or math.isfinite(rv) or cv != rv else NAN
        ok = ok and math.isfinite(cv) and math.isfinite(rv) and d <= tol.atol + tol.rtol * abs(rv)
        if d != d or worst_abs != worst_abs:
            worst_abs = worst_rel = NAN
            continue
        rel = 0.0 if d == 0 else INF if d == INF or rv == 0 else d / abs(rv)
        worst_abs, worst_rel = max(worst_abs, d), max(worst_rel, rel)
    return ok, worst_abs, worst_rel


VALUES = st.one_of(
    st.floats(-10, 10),
    st.sampled_from([0.0, -0.0, 1.0, INF, -INF, NAN, 1e-300, 5e-324]),
)


@settings(max_examples=300, deadline=None)
@given(data=st.lists(st.tuples(VALUES, VALUES, st.booleans()), min_size=7, max_size=7))
def test_recorded_errors_match_the_plain_statement(data: list[tuple[float, float, bool]]) -> None:
    # Seven values a side: two activations (forward), the loss, two gradients, two updated weights;
    # a flag makes the candidate's value the reference's exactly.
    r = [ref for _, ref, _ in data]
    c = [ref if same else cand for cand, ref, same in data]
    cand = StepResult(c[2], [LayerParams(np.array([c[3:5]]))], [LayerParams(np.array([c[5:7]]))], None)
    ref = StepResult(r[2], [LayerParams(np.array([r[3:5]]))], [LayerParams(np.array([r[5:7]]))], None)
    spec = NetworkSpec((1, 2), ("identity",), loss="mse", optimizer=SGD(0.1))
    comparator = Comparator(spec, TOL)
    layout = RowLayout(spec, 2, forward=False)
    rows = [np.empty((1, layout.width)), np.empty((1, layout.width))]
    for result, row in zip((cand, ref), rows):
        assert layout.fill(result, row[0]) is not None
    by_rows = comparator.compare_rows(layout, *rows)
    in_place = comparator.compare_results(layout, layout.arrays(cand), layout.arrays(ref), (c[2], r[2]))
    one = comparator.compare(cand, ref, 0)
    stages = {"loss": [2], "gradient": [3, 4], "update": [5, 6]}
    agree = True
    for stage, at in stages.items():
        ok, worst_abs, worst_rel = _expected(np.array(c)[at], np.array(r)[at], TOL)
        agree = agree and ok
        col = STAGES.index(stage)
        for found in (by_rows, in_place):
            np.testing.assert_equal(found.abs_err[0, col], worst_abs)
            np.testing.assert_equal(found.rel_err[0, col], worst_rel)
        np.testing.assert_equal(one.abs_err[col], worst_abs)
        np.testing.assert_equal(one.rel_err[col], worst_rel)
    assert bool(by_rows.ok[0]) is agree
    assert bool(in_place.ok[0]) is agree
    assert (one.divergence is None) is agree


def test_rows_of_many_steps_are_compared_each_on_its_own() -> None:
    """compare_rows over a block: each row's errors are its own, whatever the others hold."""
    rng = np.random.default_rng(3)
    layout = RowLayout(SPEC, 2, forward=True)
    cands = rng.normal(size=(9, layout.width))
    refs = cands + rng.normal(scale=1e-12, size=cands.shape)
    cands[4, 0], refs[6, -1] = INF, NAN
    comparator = Comparator(SPEC, tolerance_for("float64"))
    block = comparator.compare_rows(layout, cands, refs)
    for i in range(9):
        alone = comparator.compare_rows(layout, cands[i : i + 1], refs[i : i + 1])
        np.testing.assert_equal(block.abs_err[i], alone.abs_err[0])
        np.testing.assert_equal(block.rel_err[i], alone.rel_err[0])
        assert block.ok[i] == alone.ok[0]
    assert block.ok.tolist() == [True] * 4 + [False, True, False, True, True]


class ReferenceOverflows(NumpyBackend):
    """A reference whose layer-0 activation overflows to inf in one element at step 2."""

    steps = 0

    def step(self, x: np.ndarray, y: np.ndarray) -> StepResult:
        result = super().step(x, y)
        self.steps += 1
        if self.steps == 3:
            assert result.activations is not None
            result.activations[0][1, 2] = INF
        return result


def test_a_finite_candidate_against_an_infinite_reference_diverges() -> None:
    spec = NetworkSpec((3, 5, 2), ("tanh", "identity"), loss="mse", bias=True)
    x, y = make_data(spec)
    report = verify(
        spec, x, y, steps=5, params=make_params(spec), candidate="numpy", reference=ReferenceOverflows
    )
    d = report.first_divergence
    assert d is not None, report.summary()
    assert (d.step, d.stage, d.layer, d.index) == (2, "forward", 0, (1, 2))
    assert d.nonfinite == "reference"
    assert d.mismatched == 1
    assert d.reference_value == INF
    assert d.abs_err == INF
    assert d.rel_err == INF
    assert d.verdict == "reference"  # the oracle recomputes the activation: finite, the candidate's
