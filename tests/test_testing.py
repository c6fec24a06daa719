"""``nnparity.testing.assert_parity``: passes quietly, or fails naming the step, stage, layer,
tensor, worst element, both values and the allowed tolerance, in torch.testing's layout."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import numpy as np
import pytest

from nnparity import SGD, NetworkSpec, NnparityError, Report, StepResult, init_params, verify
from nnparity.numpy_backend import NumpyBackend
from nnparity.testing import assert_parity, parity_message

SPEC = NetworkSpec((3, 5, 4, 2), ("sigmoid", "tanh", "identity"), bias=True, optimizer=SGD(0.05))


def _data(spec: NetworkSpec = SPEC) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    return rng.normal(size=(6, spec.sizes[0])), rng.normal(scale=0.5, size=(6, spec.sizes[-1]))


class HalfLossGradient(NumpyBackend):
    """dE/df without the squared error's 2: the last layer's weight gradient is half torch's."""

    def step(self, x: np.ndarray, y: np.ndarray) -> StepResult:
        loss = self._loss
        self._loss = loss._replace(gradient=lambda a, t, r: loss.gradient(a, t, r) / 2.0)
        try:
            return super().step(x, y)
        finally:
            self._loss = loss


class TransposedGradient(NumpyBackend):
    def step(self, x: np.ndarray, y: np.ndarray) -> StepResult:
        result = super().step(x, y)
        grads = list(result.grads)
        grads[0] = grads[0]._replace(weight=grads[0].weight.T)
        return result._replace(grads=grads)


class Raises(NumpyBackend):
    def step(self, x: np.ndarray, y: np.ndarray) -> StepResult:
        raise ValueError("shapes (6,5) and (4,2) not aligned")


class Float32Gradients(NumpyBackend):
    def step(self, x: np.ndarray, y: np.ndarray) -> StepResult:
        result = super().step(x, y)
        grads = [g._replace(weight=g.weight.astype(np.float32).astype(np.float64)) for g in result.grads]
        return result._replace(grads=grads)


def _failure(candidate: type, **kwargs: Any) -> str:
    x, y = _data()
    with pytest.raises(AssertionError) as info:
        assert_parity(SPEC, x, y, steps=4, candidate=candidate, params=init_params(SPEC, seed=3), **kwargs)
    return str(info.value)


def test_agreeing_backends_pass_and_return_the_report() -> None:
    x, y = _data()
    report = assert_parity(SPEC, x, y, steps=4, candidate="numpy", params=init_params(SPEC, seed=3))
    assert isinstance(report, Report)
    assert report.ok
    assert report.mode == "resync"  # the default: every step tests one step's math


def test_message_names_the_place_the_element_the_values_and_the_tolerance() -> None:
    text = _failure(HalfLossGradient)
    lines = text.splitlines()
    assert lines[0] == "Parity failed at step 0: the gradient of layer 2 weight is not close!"
    assert lines[1] == ""
    assert lines[2] == "Mismatched elements: 8 / 8 (100.0%)"
    assert re.fullmatch(r"Worst element at index \(\d, \d\): candidate \S+, reference \S+", lines[3])
    assert re.fullmatch(r"Absolute difference: \S+ \(up to 1e-12 allowed\)", lines[4])
    assert re.fullmatch(r"Relative difference: 0\.5 \(up to 1e-09 allowed\)", lines[5])
    assert lines[6].startswith("Independent value")  # the diagnosis' oracle
    assert lines[7] == "Where: step 0, stage gradient, layer 2, tensor weight"
    assert lines[8] == f"Backends: {__name__}:HalfLossGradient vs torch, mode resync, float64"


def test_the_values_in_the_message_are_the_worst_element() -> None:
    x, y = _data()
    params = init_params(SPEC, seed=3)
    d = verify(SPEC, x, y, steps=1, params=params, candidate=HalfLossGradient).first_divergence
    assert d is not None
    text = _failure(HalfLossGradient)
    assert f"at index {d.index}: candidate {d.candidate_value!r}, reference {d.reference_value!r}" in text
    assert d.candidate_value == pytest.approx(d.reference_value / 2, rel=1e-12)


def test_msg_comes_first() -> None:
    text = _failure(HalfLossGradient, msg="my backend, deep network")
    assert text.startswith("my backend, deep network\n\nParity failed at step 0")


def test_a_result_that_cannot_be_compared() -> None:
    text = _failure(TransposedGradient)
    assert text.splitlines()[0] == (
        "Parity failed at step 0: the gradient of layer 0 weight cannot be compared: "
        "shapes differ: candidate (5, 3), reference (3, 5)."
    )
    assert "Where: step 0, stage gradient, layer 0, tensor weight" in text
    assert "Mismatched elements" not in text


def test_a_step_that_raises() -> None:
    text = _failure(Raises)
    assert text.splitlines()[0] == (
        "Parity failed at step 0: the candidate's step() raised ValueError: "
        "shapes (6,5) and (4,2) not aligned."
    )
    assert "Where: step 0, stage step, layer -, tensor step" in text


def test_tolerances_pass_through() -> None:
    x, y = _data()
    params = init_params(SPEC, seed=3)
    text = _failure(Float32Gradients)
    assert "(up to 1e-09 allowed)" in text
    assert assert_parity(
        SPEC, x, y, steps=4, candidate=Float32Gradients, params=params, rtol=1e-6, atol=1e-9
    ).ok
    with pytest.raises(AssertionError, match=r"up to 1e-10 allowed"):
        assert_parity(SPEC, x, y, steps=4, candidate=Float32Gradients, params=params, rtol=1e-10, atol=1e-14)


def test_free_mode_is_passed_through() -> None:
    x, y = _data()
    report = assert_parity(
        SPEC, x, y, steps=3, candidate="numpy", mode="free", params=init_params(SPEC, seed=3)
    )
    assert report.mode == "free"


def test_the_diagnosis_is_included_when_there_is_one() -> None:
    x, y = _data()
    report = verify(SPEC, x, y, steps=2, params=init_params(SPEC, seed=3), candidate=HalfLossGradient)
    assert report.first_divergence is not None
    d = dataclasses.replace(report.first_divergence, verdict="candidate", hint="dE/df is half of torch's.")
    text = parity_message(dataclasses.replace(report, first_divergence=d))
    assert text.splitlines()[-2:] == ["Verdict: the candidate is wrong.", "Hint: dE/df is half of torch's."]
    bare = dataclasses.replace(d, verdict=None, hint=None, oracle_value=None)
    text = parity_message(dataclasses.replace(report, first_divergence=bare))
    assert "Verdict" not in text
    assert "Hint" not in text
    assert "Independent value" not in text


def test_the_diagnosis_blames_the_candidate() -> None:
    text = _failure(HalfLossGradient)
    assert "Verdict: the candidate is wrong." in text
    assert re.search(r"^Independent value \(.+\): \S+", text, re.MULTILINE)


def test_bad_arguments_raise_nnparity_error_not_assertion_error() -> None:
    x, y = _data()
    with pytest.raises(NnparityError, match="Unknown mode"):
        assert_parity(SPEC, x, y, steps=2, candidate="numpy", mode="sometimes")
    with pytest.raises(NnparityError, match="Unknown backend"):
        assert_parity(SPEC, x, y, steps=2, candidate="jax")
