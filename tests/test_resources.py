"""A network too large for the machine is refused up front, with its size and what it would need."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nnparity import NetworkSpec, NnparityError, init_params, verify
from nnparity.cli import main
from nnparity.resources import (
    ENV_LIMIT,
    check_memory,
    format_bytes,
    memory_available,
    memory_needed,
    parameter_count,
    parse_size,
)

# 3 * 10**12 parameters: about 350 TiB to verify, more than any machine has
ABSURD = NetworkSpec((2, 10**12, 1), ("sigmoid", "sigmoid"))
# 784 * 10_000 + 10_000 * 10 = 7,940,000 parameters: about 1 GiB to verify in float64
MEDIUM = NetworkSpec((784, 10_000, 10), ("relu", "identity"))
NOTEBOOK = NetworkSpec((2, 3, 1), ("sigmoid", "sigmoid"))
X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
Y = np.array([[0.0], [1.0], [1.0], [1.0]])


@pytest.fixture(autouse=True)
def _no_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_LIMIT, raising=False)


def test_parameter_count_is_exact_for_absurd_widths() -> None:
    assert parameter_count(ABSURD) == 3 * 10**12
    huge = NetworkSpec((10**40, 10**40, 3), ("tanh", "tanh"), bias=True)
    assert parameter_count(huge) == 10**80 + 10**40 + 3 * 10**40 + 3
    assert memory_needed(huge, 1) > 10**81  # no float overflow, no wrap-around


def test_memory_needed_counts_parameters_activations_and_dtype() -> None:
    n = parameter_count(MEDIUM)
    assert n == 7_940_000
    units = 784 + 10_000 + 10
    layers = 2 * 32 * 1024  # the Python objects of each layer, on both sides
    assert memory_needed(MEDIUM, 0) == 16 * n * 8 + layers
    assert memory_needed(MEDIUM, 128) == (16 * n + 10 * units * 128) * 8 + layers
    assert memory_needed(MEDIUM, 128, steps=1000) == memory_needed(MEDIUM, 128) + 512 * 1000
    single = NetworkSpec(MEDIUM.sizes, MEDIUM.activations, dtype="float32")
    assert memory_needed(single, 128) - layers == (memory_needed(MEDIUM, 128) - layers) // 2


def test_long_runs_and_deep_networks_are_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    """The trace grows with the steps (measured 240-290 bytes a step) and each layer costs Python
    objects (~18 KB): 10**8 steps of the notebook's network, or a million layers, do not fit 8 GiB."""
    monkeypatch.setenv("NNPARITY_MEMORY_LIMIT", "8G")
    with pytest.raises(
        NnparityError, match=r"for 100,000,000 steps needs about 47\.[0-9] GiB.*Use fewer steps\.$"
    ):
        check_memory(NOTEBOOK, 4, steps=10**8)
    check_memory(NOTEBOOK, 4, steps=10**6)  # a million steps fit in 8 GiB
    deep = NetworkSpec((2,) * 1_000_001, ("tanh",) * 1_000_000)
    with pytest.raises(NnparityError, match="Use fewer layers"):
        check_memory(deep, 4)


def test_absurd_network_is_refused_with_its_size_and_need() -> None:
    with pytest.raises(NnparityError) as info:
        check_memory(ABSURD, 1)
    message = str(info.value)
    assert message.startswith("The network 2-1000000000000-1 has 3,000,000,000,000 parameters (float64); ")
    # (16 * 3e12 + 10 * (1e12 + 3)) * 8 bytes
    assert "verifying it with 1 row needs about 422.0 TiB, but only " in message
    assert message.endswith(" is available. Use smaller widths or float32.")


def test_absurd_network_is_refused_by_init_params_and_verify() -> None:
    with pytest.raises(NnparityError, match=r"^The network 2-1000000000000-1 has 3,000,000,000,000"):
        init_params(ABSURD)
    with pytest.raises(NnparityError, match=r"verifying it with 4 rows for 1 step needs about"):
        verify(ABSURD, X, Y, steps=1)


def test_absurd_network_on_the_command_line_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "big.toml"
    config.write_text("[network]\nsizes = [2, 1000000000000, 1]\n")
    for argv in (
        ["verify", "--config", str(config), "--steps", "2"],
        ["record", "--config", str(config), "--steps", "2", "--out", str(tmp_path / "big.npz")],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(
            "nnparity: error: The network 2-1000000000000-1 has 3,000,000,000,000 parameters"
        )
        assert "Use smaller widths or float32." in err
        assert err.count("\n") == 1
    assert list(tmp_path.iterdir()) == [config]


def test_deep_network_label_is_shortened() -> None:
    spec = NetworkSpec((784, *[10**6] * 6, 10), ("relu",) * 6 + ("identity",))
    with pytest.raises(NnparityError, match=r"^The network 784-1000000-1000000-\.\.\.-1000000-10 has "):
        check_memory(spec, 1)


def test_many_rows_suggest_fewer_rows() -> None:
    wide_data = NetworkSpec((10_000, 10_000, 1), ("relu", "identity"), dtype="float32")
    with pytest.raises(NnparityError, match=r"Use fewer data rows or smaller widths\.$"):
        check_memory(wide_data, 10**9)


def test_normal_networks_pass() -> None:
    check_memory(NOTEBOOK, 4)
    check_memory(MEDIUM, 128)  # about 1 GiB: every machine that runs torch has that
    available = memory_available()
    assert available is not None  # Linux: /proc/meminfo
    assert available > 0


def test_small_runs_pass_whatever_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_LIMIT, "1")
    check_memory(NOTEBOOK, 1000)  # needs far less than 64 MiB


def test_the_environment_overrides_the_available_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_LIMIT, "100G")
    assert memory_available() == 100 * 1024**3
    check_memory(MEDIUM, 128)
    monkeypatch.setenv(ENV_LIMIT, "512M")
    with pytest.raises(NnparityError, match=r"needs about 1\.0 GiB, but only 512\.0 MiB is available"):
        check_memory(MEDIUM, 128)
    monkeypatch.setenv(ENV_LIMIT, "a lot")
    with pytest.raises(NnparityError, match=f"{ENV_LIMIT} must be a number of bytes"):
        check_memory(MEDIUM, 128)


def test_the_override_also_guards_the_command_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(ENV_LIMIT, "1K")
    big_data = NetworkSpec((2, 3, 1), ("sigmoid", "sigmoid"))
    with pytest.raises(NnparityError, match=r"with 10,000,000 rows needs about 4\.4 GiB"):
        check_memory(big_data, 10_000_000)
    assert main(["verify", "--steps", "2"]) == 0  # the notebook's run needs a few KiB
    capsys.readouterr()


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("1024", 1024),
        ("8G", 8 * 1024**3),
        ("8g", 8 * 1024**3),
        ("1.5K", 1536),
        ("512MiB", 512 * 1024**2),
        ("2 GB", 2 * 1024**3),
        ("1T", 1024**4),
        ("1" + "0" * 400, 10**400),
    ],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "G", "-1G", "8X", "1e9", "eight"])
def test_parse_size_refuses(text: str) -> None:
    with pytest.raises(NnparityError, match=ENV_LIMIT):
        parse_size(text)


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (512, "512 bytes"),
        (1536, "1.5 KiB"),
        (45 * 1024**3 + 6 * 1024**3 // 10 + 1, "45.6 GiB"),
        (3 * 1024**6, "3.0 EiB"),
        (10**400, f"{10**400 // 1024**6:,}.{10**400 % 1024**6 * 10 // 1024**6} EiB"),
    ],
)
def test_format_bytes(n: int, text: str) -> None:
    assert format_bytes(n) == text


def test_a_recording_too_large_to_keep_is_refused_before_it_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """record() keeps every kept step's gradients, parameters and activations: 100,000 steps of a
    100-100-10 network are ~35 GiB; refused before the first step, with what to change."""
    from nnparity.trajectory import record

    monkeypatch.setenv("NNPARITY_MEMORY_LIMIT", "8G")
    spec = NetworkSpec((100, 100, 10), ("tanh", "identity"))
    x, y = np.zeros((4, 100)), np.zeros((4, 10))
    with pytest.raises(
        NnparityError, match=r"recording it with 4 rows for 100,000 steps needs about 3[0-9]\.[0-9] GiB"
    ):
        record(spec, x, y, steps=100_000, backend="numpy")
    with pytest.raises(NnparityError, match=r"Use fewer steps or a larger every \(--every"):
        record(spec, x, y, steps=100_000, backend="numpy")
