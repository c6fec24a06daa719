"""The pytest plugin and the packaged suite, run end to end with pytester, as a user's project runs them.

The example backend (``examples/my_backend.py``) is copied into each test project as it is, or
with one line of its backprop broken, and checked the three ways the README shows.
"""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import pytest

from nnparity import NetworkSpec, verify
from nnparity.cli import main

pytest_plugins = ["pytester"]

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
BACKEND = (EXAMPLES / "my_backend.py").read_text(encoding="utf-8")
USER_TESTS = (EXAMPLES / "test_my_backend.py").read_text(encoding="utf-8")
# The one line a user breaks: sigmoid's derivative loses its (1 - a).
GOOD_LINE, BAD_LINE = "return a * (1.0 - a)", "return a"


@pytest.fixture(scope="module", autouse=True)
def _torch_loaded_out_here() -> None:
    """pytester's in-process runs drop the modules they import, and torch cannot be imported twice:
    one torch step out here loads what torch loads lazily (its optimizer's first step, torch._dynamo)."""
    assert verify(NetworkSpec((1, 1), ("identity",)), np.ones((1, 1)), np.ones((1, 1)), steps=1).ok


def _registered() -> bool:
    return bool(entry_points(group="pytest11", name="nnparity"))


def _plugin() -> list[str]:
    """Load the plugin by hand until the ``pytest11`` entry point is installed."""
    return [] if _registered() else ["-p", "nnparity.pytest_plugin"]


def _project(pytester: pytest.Pytester, *, broken: bool = False) -> None:
    assert BACKEND.count(GOOD_LINE) == 1
    backend = BACKEND.replace(GOOD_LINE, BAD_LINE) if broken else BACKEND
    pytester.makepyfile(my_backend=backend, test_my_backend=USER_TESTS)
    pytester.syspathinsert()


def test_importing_the_plugin_imports_no_torch_and_no_pandas() -> None:
    # Every pytest run with nnparity installed imports the plugin: it must stay light.
    code = (
        "import sys, nnparity.pytest_plugin\n"
        "heavy = [m for m in ('torch', 'pandas', 'hypothesis') if m in sys.modules]\n"
        "assert not heavy, heavy"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


def test_the_entry_point_names_the_plugin() -> None:
    if not _registered():
        pytest.skip("the pytest11 entry point is not installed yet (pip install -e . after adding it)")
    (ep,) = entry_points(group="pytest11", name="nnparity")
    assert ep.value == "nnparity.pytest_plugin"


def test_a_broken_line_is_placed_by_the_suite_and_by_assert_parity(pytester: pytest.Pytester) -> None:
    _project(pytester, broken=True)
    result = pytester.runpytest(
        *_plugin(), "--nnparity-backend", "my_backend:MyBackend", "--nnparity-examples", "10", "--pyargs",
        "nnparity.suite", "test_my_backend",
    )  # fmt: skip
    outcomes = result.parseoutcomes()
    assert outcomes["failed"] >= 6, result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "*test_one_option?activation-sigmoid?*",
            "E*Parity failed at step 0: the gradient of layer 1 weight is not close!",
            "E*Mismatched elements: 8 / 8 (100.0%)",
            "E*Worst element at index (*): candidate *, reference *",
            "E*Absolute difference: * (up to 1e-12 allowed)",
            "E*Relative difference: * (up to 1e-09 allowed)",
            "E*Where: step 0, stage gradient, layer 1, tensor weight",
        ]
    )
    # The user's own test of the notebook's network names the output layer's gradient.
    result.stdout.fnmatch_lines(
        [
            "*test_the_notebook_network*",
            "E*Parity failed at step 0: the gradient of layer 1 weight is not close!",
            "E*Backends: my_backend:MyBackend vs torch, mode free, float64",
        ]
    )
    # The search shrinks to a minimal network and writes its reproduction.
    result.stdout.fnmatch_lines(
        ["*DIVERGENCE in network *; hypothesis shrank it*", "*nnparity verify --config *"]
    )
    # The helpers are hidden from the traceback: it ends in the user's test.
    assert "testing.py" not in result.stdout.str()


def test_a_broken_line_is_placed_by_the_command_line(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _project(pytester, broken=True)
    monkeypatch.chdir(pytester.path)
    assert main(["verify", "--candidate", "my_backend:MyBackend", "--steps", "50"]) == 1
    out = capsys.readouterr().out
    assert "Step 0: the gradient of layer 1 weight differs." in out


def test_fixtures_skip_without_a_backend(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_backend(nnparity_backend):
            pass

        def test_assert_parity(assert_parity):
            pass
        """
    )
    result = pytester.runpytest(*_plugin(), "-rs")
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines(["*no backend to check: pass --nnparity-backend MODULE:CLASS*"])


def test_the_backend_can_be_named_in_the_ini_file(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nnnparity_backend = numpy\nnnparity_reference = torch\n")
    pytester.makepyfile(
        """
        import numpy as np
        from nnparity import NetworkSpec

        def test_backend(nnparity_backend, nnparity_reference):
            assert nnparity_backend.__name__ == "NumpyBackend"
            assert nnparity_reference == "torch"

        def test_assert_parity(assert_parity):
            spec = NetworkSpec((2, 3, 1), ("tanh", "sigmoid"))
            x = np.array([[0.0, 1.0], [1.0, 0.5]])
            report = assert_parity(spec, x, np.array([[0.2], [0.9]]), steps=3)
            assert report.candidate.endswith(":NumpyBackend") and report.mode == "resync"
        """
    )
    result = pytester.runpytest(*_plugin(), "--strict-config")
    result.assert_outcomes(passed=2)


def test_a_backend_that_cannot_be_loaded_fails_the_tests_with_the_reason(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_backend(nnparity_backend):\n    pass\n")
    result = pytester.runpytest(*_plugin(), "--nnparity-backend", "no_such_module_xyz:Backend")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*--nnparity-backend: Cannot find backend module 'no_such_module_xyz'*"])


def test_the_example_passes_the_suite_and_its_own_tests() -> None:
    """The README's commands, from examples/, in a fresh process under this project's strict pytest
    settings (filterwarnings=error, strict markers and config), as a user's CI runs them."""
    args = [
        "--nnparity-backend",
        "my_backend:MyBackend",
        "--nnparity-examples",
        "10",
        "-p",
        "no:cacheprovider",
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", *_plugin(), *args, "--pyargs", "nnparity.suite", "test_my_backend"],
        cwd=EXAMPLES,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "nnparity: backend my_backend:MyBackend, reference torch" in out
    assert "MyBackend does not support activation-elu: activation elu" in out
    assert "MyBackend does not support sgd-nesterov: SGD with dampening, Nesterov or weight decay" in out
    assert "17 passed, 12 skipped" in out


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--nnparity-seed", "-1", "expected a number from 0 to 2**32 - 1, got -1"),
        ("--nnparity-examples", "-3", "expected a number from 0 to 1,000,000,000, got -3"),
        ("--nnparity-examples", "many", "expected a whole number, got 'many'"),
    ],
)
def test_bad_search_options_are_usage_errors(
    pytester: pytest.Pytester, option: str, value: str, message: str
) -> None:
    pytester.makepyfile("def test_nothing():\n    pass\n")
    result = pytester.runpytest(*_plugin(), option, value)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert any(message in line for line in result.errlines), result.errlines
