"""Parity tests for my_backend.py, as a user writes them (run: ``pytest test_my_backend.py``).

``assert_parity`` trains the backend and torch in lockstep and fails with the first step,
stage, layer, tensor and element that differ. The last test uses the plugin's fixture instead,
bound to ``--nnparity-backend my_backend:MyBackend`` (it skips without that option).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from my_backend import MyBackend

from nnparity import SGD, NetworkSpec, init_params
from nnparity.testing import assert_parity

OR_X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float64)
OR_Y = np.array([[0], [1], [1], [1]], dtype=np.float64)
NOTEBOOK = NetworkSpec((2, 3, 1), ("sigmoid", "sigmoid"), optimizer=SGD(0.05))


def test_the_notebook_network() -> None:
    assert_parity(
        NOTEBOOK, OR_X, OR_Y, steps=200, candidate=MyBackend, params=init_params(NOTEBOOK), mode="free"
    )


@pytest.mark.parametrize("hidden", ["sigmoid", "tanh", "relu"])
def test_each_hidden_activation_with_biases(hidden: str) -> None:
    spec = NetworkSpec((3, 4, 2), (hidden, "identity"), bias=True, optimizer=SGD(0.1, momentum=0.9))
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(6, 3)), rng.normal(size=(6, 2))
    assert_parity(spec, x, y, steps=5, candidate=MyBackend, params=init_params(spec, seed=3))


def test_with_the_plugin_fixture(assert_parity: Callable[..., Any]) -> None:
    spec = NetworkSpec((2, 4, 1), ("tanh", "sigmoid"), bias=True)
    assert_parity(spec, OR_X, OR_Y, steps=20, params=init_params(spec, seed=5))
