"""``--device``: the torch side on another device; the CUDA run is skipped where there is none."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
import torch

from nnparity import LayerParams, NetworkSpec, verify
from nnparity.cli import main
from nnparity.dataset import or_table
from nnparity.notebook import notebook_spec
from nnparity.torch_backend import TorchBackend, _numpy_from, on_device

HAS_CUDA = torch.cuda.is_available()


class ThroughTheDevicePath(TorchBackend):
    """The CPU, taken the way another device is: inputs copied in, results copied out."""

    def __init__(self, spec: NetworkSpec, params: Sequence[LayerParams]) -> None:
        super().__init__(spec, params)
        self._on_cpu = False
        self._numpy = _numpy_from


def test_the_cpu_is_the_plain_torch_backend() -> None:
    assert on_device("cpu") is TorchBackend


def test_the_device_path_gives_what_the_cpu_path_gives() -> None:
    data, spec = or_table(), notebook_spec()
    via_device = verify(spec, data.x, data.y, steps=300, reference=ThroughTheDevicePath)
    plain = verify(spec, data.x, data.y, steps=300)
    assert via_device.ok
    assert via_device.trace.equals(plain.trace)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--device", "blah"], "The torch device 'blah' is not available here"),
        (["--device", "meta"], "nnparity runs torch on cpu, cuda, mps, xpu devices"),
        (["--device", "cuda", "--reference", "numpy"], "neither side is torch"),
        pytest.param(
            ["--device", "cuda"],
            "The torch device 'cuda' is not available here",
            marks=pytest.mark.skipif(HAS_CUDA, reason="this machine has CUDA"),
        ),
    ],
)
def test_a_device_that_is_not_there_exits_2(
    args: list[str], fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["verify", "--steps", "3", *args]) == 2
    err = capsys.readouterr().err
    assert fragment in err
    assert err.count("\n") == 1


@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device")
def test_torch_on_cuda_agrees_with_numpy(capsys: pytest.CaptureFixture[str]) -> None:
    data, spec = or_table(), notebook_spec()
    report = verify(spec, data.x, data.y, steps=500, reference=on_device("cuda"))
    assert report.ok, report.summary()
    assert report.reference == "torch (cuda)"
    assert main(["verify", "--steps", "200", "--device", "cuda"]) == 0
    assert "vs torch (cuda)" in capsys.readouterr().out
    assert np.isfinite(report.trace["update_abs_err"]).all()
