"""Golden trajectories: recorded exactly, replayed as the reference without torch, checked for fit."""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nnparity import SGD, NetworkSpec, NnparityError, init_params, verify
from nnparity.dataset import or_table
from nnparity.notebook import notebook_spec
from nnparity.suite.cases import batch, start
from nnparity.trajectory import (
    NOTEBOOK_TRAJECTORY,
    Trajectory,
    add_record_parser,
    load,
    notebook_trajectory,
    record,
    replay_backend,
    resolve,
    run_record,
    save,
)

SPEC = NetworkSpec(
    (3, 4, 2), ("tanh", "identity"), bias=True, optimizer=SGD(0.1, momentum=0.9, dampening=0.1)
)
STEPS = 12


@pytest.fixture(scope="module")
def recorded() -> Trajectory:
    x, y = batch(SPEC)
    return record(SPEC, x, y, steps=STEPS, params=start(SPEC))


def test_save_and_load_are_exact(recorded: Trajectory, tmp_path: Path) -> None:
    path = save(recorded, tmp_path / "run.npz")
    loaded = load(path)
    assert loaded.header == recorded.header
    for name in ("losses", "start", "grads", "params", "activations"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(recorded, name), strict=True)
    assert loaded.spec == SPEC
    step = loaded.result(5)
    assert step.grads[1].bias is not None
    assert step.activations is not None
    assert [a.shape for a in step.activations] == [(5, 4), (5, 2)]
    with pytest.raises(ValueError, match="read-only"):
        step.params[0].weight[0, 0] = 1.0


def test_the_header(recorded: Trajectory) -> None:
    header = recorded.header
    assert header["format"] == "nnparity-trajectory"
    assert header["spec"] == SPEC.to_dict()
    assert (header["steps"], header["every"], header["rows"], header["activations"]) == (STEPS, 1, 5, True)
    assert header["init"] is None  # the weights were given, not drawn from a scheme
    assert header["backend"] == "torch"
    assert set(header["versions"]) == {"python", "numpy", "torch", "nnparity"}
    assert len(header["data_sha256"]) == 64


def test_float32_round_trips_exactly(tmp_path: Path) -> None:
    spec = dataclasses.replace(SPEC, dtype="float32")
    x, y = batch(spec)
    trajectory = record(spec, x, y, steps=4, params=start(spec), backend="numpy")
    loaded = load(save(trajectory, tmp_path / "f32.npz"))
    assert loaded.params.dtype == np.float32
    np.testing.assert_array_equal(loaded.params, trajectory.params, strict=True)


def test_replay_is_the_reference(recorded: Trajectory) -> None:
    x, y = batch(SPEC)
    replay = replay_backend(recorded)
    for mode in ("free", "resync"):
        report = verify(
            SPEC, x, y, steps=STEPS, params=start(SPEC), candidate="numpy", reference=replay, mode=mode
        )
        assert report.ok, report.summary()
    live = verify(
        SPEC, x, y, steps=STEPS, params=start(SPEC), candidate="torch", reference=replay, rtol=0, atol=0
    )
    assert live.ok, live.summary()  # the recording is torch's run, bit for bit


def test_a_bug_is_placed_against_the_replay_as_against_torch(recorded: Trajectory) -> None:
    from nnparity.mutants import mutant_backend

    x, y = batch(SPEC)
    for name in ("TanhDerivativeOfInput", "DampeningIgnored", "ForwardWithoutBias"):
        cls = mutant_backend(name)
        by_torch = verify(SPEC, x, y, steps=STEPS, params=start(SPEC), candidate=cls).first_divergence
        by_replay = verify(
            SPEC, x, y, steps=STEPS, params=start(SPEC), candidate=cls, reference=replay_backend(recorded)
        ).first_divergence
        assert by_torch is not None
        assert by_replay == by_torch


def test_replay_refuses_another_network_weights_or_data(recorded: Trajectory) -> None:
    x, y = batch(SPEC)
    replay = replay_backend(recorded)
    other = dataclasses.replace(SPEC, optimizer=SGD(0.1))
    with pytest.raises(
        NnparityError, match=r"recorded for the network \[3, 4, 2\] tanh/identity.*momentum 0\.9"
    ):
        verify(other, x, y, steps=2, params=start(other), reference=replay)
    with pytest.raises(NnparityError, match="starts from other weights"):
        verify(SPEC, x, y, steps=2, params=start(SPEC, seed=9), reference=replay)
    # Other data, or more steps than recorded, are the caller's mistake, not a divergence to blame
    # on a side: verify raises, as the command line refuses them before the run.
    with pytest.raises(NnparityError, match=r"recorded on other training data \(5 rows"):
        verify(SPEC, x + 1.0, y, steps=2, params=start(SPEC), reference=replay)
    with pytest.raises(NnparityError, match=f"holds {STEPS} steps; there is no step {STEPS}"):
        verify(SPEC, x, y, steps=STEPS + 1, params=start(SPEC), reference=replay)
    with pytest.raises(NnparityError, match="recorded on other training data"):  # either side
        verify(SPEC, x + 1.0, y, steps=2, params=start(SPEC), candidate=replay, reference="numpy")
    with pytest.raises(NnparityError, match="can replay its steps but not predict"):
        replay(SPEC, start(SPEC)).predict(x)


def test_every_k_steps_is_an_archive(recorded: Trajectory, tmp_path: Path) -> None:
    x, y = batch(SPEC)
    sparse = load(save(record(SPEC, x, y, steps=STEPS, params=start(SPEC), every=5), tmp_path / "sparse.npz"))
    assert sparse.grads.shape[0] == 3  # steps 0, 5, 10
    np.testing.assert_array_equal(sparse.losses, recorded.losses)
    for t in (0, 5, 10):
        np.testing.assert_array_equal(sparse.result(t).params[0].weight, recorded.result(t).params[0].weight)
    with pytest.raises(NnparityError, match="every 5th step only; step 3 is not one"):
        sparse.result(3)
    with pytest.raises(NnparityError, match="record it with --every 1"):
        verify(SPEC, x, y, steps=2, params=start(SPEC), reference=replay_backend(sparse))


def test_without_activations_the_forward_pass_is_not_compared(tmp_path: Path) -> None:
    x, y = batch(SPEC)
    bare = record(SPEC, x, y, steps=3, params=start(SPEC), activations=False)
    assert bare.activations is None
    loaded = load(save(bare, tmp_path / "bare.npz"))
    assert loaded.activations is None
    assert loaded.result(2).activations is None
    assert verify(SPEC, x, y, steps=3, params=start(SPEC), reference=replay_backend(loaded)).ok


# Damage done to a good file: each must be refused in a sentence (NnparityError), never a traceback.
HEADER_EDITS: dict[str, tuple[Any, str]] = {
    "format": ({"format": "something-else"}, "its header names no nnparity trajectory"),
    "version": ({"version": 99}, "format version 99"),
    "every-zero": ({"every": 0}, "header's every is 0, not a whole number >= 1"),
    "rows-float": ({"rows": 4.0}, "header's rows is 4.0"),
    "steps-bool": ({"steps": True}, "header's steps is True"),
    "no-sha": ({"data_sha256": None}, "no sha256 of the data"),
    "short-sha": ({"data_sha256": "abc"}, "no sha256 of the data"),
    "init-no-seed": ({"init": {"scheme": "numpy-rand"}}, "header's init is"),
    "init-text": ({"init": "numpy-rand"}, "header's init is"),
    "spec-list": ({"spec": [1, 2]}, "holds no network spec"),
    "activations-text": ({"activations": "yes"}, "whether activations"),
    "activations-missing": ({"activations": False}, "disagree on the activations"),
}


def _damaged(recorded: Trajectory, tmp_path: Path, damage: str) -> Path:
    path = tmp_path / "bad.npz"
    good = save(recorded, tmp_path / "good.npz")
    raw = good.read_bytes()
    if damage == "truncated":
        path.write_bytes(raw[: len(raw) // 2])
        return path
    if damage == "empty":
        path.write_bytes(b"")
        return path
    if damage == "flipped-bytes":  # inside the compressed grads: a bad CRC or a broken stream
        at = raw.index(b"grads.npy") + 200
        path.write_bytes(raw[:at] + bytes(b ^ 0xFF for b in raw[at : at + 64]) + raw[at + 64 :])
        return path
    if damage == "npy":
        np.save(tmp_path / "array.npy", np.zeros(3))
        (tmp_path / "array.npy").rename(path)
        return path
    with np.load(good) as npz:
        members = {name: npz[name] for name in npz.files}
    header = json.loads(str(members["header"]))
    if damage in HEADER_EDITS:
        header.update(HEADER_EDITS[damage][0])
    elif damage == "header-list":
        header = [1, 2]
    elif damage == "shape":
        members["grads"] = members["grads"][:, :, :-1]
    elif damage == "losses-float32":
        members["losses"] = members["losses"].astype(np.float32)
    elif damage == "start-float32":
        members["start"] = members["start"].astype(np.float32)
    elif damage == "start-complex":
        members["start"] = members["start"].astype(np.complex128)
    elif damage == "grads-float":
        members["grads"] = members["grads"].astype(np.float64)
    members["header"] = np.array(json.dumps(header))
    np.savez(path, **members)
    return path


@pytest.mark.parametrize(
    ("damage", "fragment"),
    [
        ("truncated", "not an nnparity trajectory"),
        ("empty", "not an nnparity trajectory"),
        ("flipped-bytes", "is damaged"),
        ("npy", "a single .npy array"),
        ("header-list", "its header names no nnparity trajectory"),
        ("shape", "grads has shape"),
        ("losses-float32", "its losses are float32, not float64"),
        ("start-float32", "its start are float32, not float64"),
        ("start-complex", "its start are complex128"),
        ("grads-float", "its grads are not byte planes"),
        *((name, fragment) for name, (_, fragment) in HEADER_EDITS.items()),
    ],
)
def test_load_refuses_a_damaged_file(
    recorded: Trajectory, tmp_path: Path, damage: str, fragment: str
) -> None:
    path = _damaged(recorded, tmp_path, damage)
    with pytest.raises(NnparityError, match=re.escape(fragment)):
        load(path)


def test_load_refuses_what_is_no_file(tmp_path: Path) -> None:
    with pytest.raises(NnparityError, match="no such file"):
        load(tmp_path / "missing.npz")
    (tmp_path / "text.npz").write_bytes(b"not a zip")
    with pytest.raises(NnparityError, match="not an nnparity trajectory"):
        load(tmp_path / "text.npz")


def test_record_rejects_bad_arguments() -> None:
    x, y = batch(SPEC)
    with pytest.raises(NnparityError, match="every must be a whole number >= 1"):
        record(SPEC, x, y, steps=3, every=0)
    with pytest.raises(NnparityError, match="steps must be a whole number >= 1"):
        record(SPEC, x, y, steps=0)
    with pytest.raises(NnparityError, match=r"x must have shape \(rows, 3\)"):
        record(SPEC, x[:, :2], y, steps=1)
    # The header records init only for the weights it made: given both, it could vouch for neither.
    with pytest.raises(NnparityError, match=r"as params or as init=\(scheme, seed\), not both"):
        record(SPEC, x, y, steps=1, params=start(SPEC, seed=7), init=("numpy-rand", 1))


# --- the shipped trajectory ---------------------------------------------------------------------------


def test_the_notebook_run_is_shipped() -> None:
    path = resolve(NOTEBOOK_TRAJECTORY)
    assert path.is_file()
    assert path.stat().st_size < 2_000_000
    trajectory = notebook_trajectory()
    header = trajectory.header
    assert trajectory.spec == notebook_spec()
    assert (header["steps"], header["every"], header["activations"]) == (10_000, 1, True)
    assert header["init"] == {"scheme": "numpy-rand", "seed": 1}
    assert header["backend"] == "torch"
    data = or_table()
    trajectory.check(notebook_spec(), data.x, data.y, init_params(notebook_spec()), 10_000)
    # The notebook's printed errors.
    assert f"{trajectory.losses[0]:10.6e}" == "1.960156e-01"
    assert f"{trajectory.losses[9000]:10.6e}" == "6.205274e-02"


def test_the_numpy_backend_replays_the_notebook_run_at_every_step() -> None:
    data, spec = or_table(), notebook_spec()
    report = verify(
        spec,
        data.x,
        data.y,
        steps=10_000,
        params=init_params(spec),
        reference=replay_backend(NOTEBOOK_TRAJECTORY),
    )
    assert report.ok, report.summary()
    assert report.reference == f"nnparity.trajectory:Replay[{NOTEBOOK_TRAJECTORY}]"


def test_the_installed_torch_still_makes_the_notebook_run() -> None:
    data, spec = or_table(), notebook_spec()
    report = verify(
        spec,
        data.x,
        data.y,
        steps=1000,
        params=init_params(spec),
        candidate="torch",
        reference=replay_backend(NOTEBOOK_TRAJECTORY),
    )
    assert report.ok, report.summary()


def test_replay_needs_no_torch() -> None:
    script = textwrap.dedent(
        """
        import sys
        sys.modules["torch"] = None  # import torch now raises ImportError
        from nnparity import init_params, verify
        from nnparity.dataset import or_table
        from nnparity.mutants import mutant_backend
        from nnparity.notebook import notebook_spec
        from nnparity.trajectory import replay_backend

        data, spec = or_table(), notebook_spec()
        replay = replay_backend("notebook_trajectory.npz")
        report = verify(spec, data.x, data.y, steps=300, params=init_params(spec), reference=replay)
        assert report.ok, report.summary()
        bug = mutant_backend("SigmoidDerivativeOfInput")
        start = init_params(spec)
        report = verify(spec, data.x, data.y, steps=300, params=start, candidate=bug, reference=replay)
        d = report.first_divergence
        print(d.step, d.stage, d.layer, d.tensor)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["0", "gradient", "1", "weight"]


# --- nnparity record ----------------------------------------------------------------------------------


def _record_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_record_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["record", *argv])


def test_record_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "train.csv").write_text("a,b,c,t1,t2\n0.5,-1,2,0.1,0.9\n1.5,0.25,-0.5,0.7,0.2\n")
    (tmp_path / "run.toml").write_text(
        '[network]\nsizes = [3, 4, 2]\nactivations = ["tanh", "identity"]\nbias = true\n'
        '[init]\nscheme = "numpy-rand"\nseed = 4\n[train]\nsteps = 30\n'
        '[data]\ncsv = "train.csv"\ntargets = ["t1", "t2"]\n'
    )
    out = tmp_path / "rec" / "run.npz"
    assert (
        run_record(
            _record_args("--config", str(tmp_path / "run.toml"), "--backend", "numpy", "--out", str(out))
        )
        == 0
    )
    assert f"Recorded 30 steps of numpy (every step) to {out}" in capsys.readouterr().out
    trajectory = load(out)
    assert trajectory.header["init"] == {"scheme": "numpy-rand", "seed": 4}
    assert trajectory.steps == 30
    assert (out.stat().st_mode & 0o777) != 0o600  # not left private like a temporary file


def test_record_command_bad_input(tmp_path: Path) -> None:
    # (Bad --steps and --every are argparse's to refuse: tests/test_bad_input.py.)
    with pytest.raises(NnparityError, match="Cannot read config file"):
        run_record(_record_args("--config", "missing.toml", "--out", str(tmp_path / "x.npz")))
    with pytest.raises(NnparityError, match=r"must end in \.npz"):
        run_record(_record_args("--out", str(tmp_path / "x.bin")))


def test_start_for_replay_checks_the_config() -> None:
    from nnparity.config import RunConfig
    from nnparity.trajectory import start_for_replay

    data = or_table()
    params = start_for_replay(NOTEBOOK_TRAJECTORY, RunConfig(), data.x, data.y)
    np.testing.assert_array_equal(params[0].weight, init_params(notebook_spec())[0].weight)
    with pytest.raises(
        NnparityError, match="recorded from \\[init\\] scheme 'numpy-rand' seed 1, not scheme"
    ):
        start_for_replay(NOTEBOOK_TRAJECTORY, RunConfig(seed=2), data.x, data.y)
    with pytest.raises(NnparityError, match="holds 10000 steps; verify 10000 steps or fewer"):
        start_for_replay(NOTEBOOK_TRAJECTORY, RunConfig(steps=10_001), data.x, data.y)
    with pytest.raises(NnparityError, match="recorded on other training data"):
        start_for_replay(NOTEBOOK_TRAJECTORY, RunConfig(), data.x, 1.0 - data.y)


def _wired(command: str) -> bool:
    from nnparity.cli import build_parser

    subparsers = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return command in subparsers[0].choices


def test_cli_verify_replays_a_trajectory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from nnparity.cli import main

    assert main(["verify", "--reference", NOTEBOOK_TRAJECTORY, "--steps", "500"]) == 0
    assert f"numpy vs {NOTEBOOK_TRAJECTORY}, mode free" in capsys.readouterr().out
    assert main(["verify", "--reference", NOTEBOOK_TRAJECTORY, "--steps", "20000"]) == 2
    assert "holds 10000 steps" in capsys.readouterr().err
    candidate = "nnparity.mutants:SigmoidDerivativeOfInput"
    assert (
        main(["verify", "--reference", NOTEBOOK_TRAJECTORY, "--steps", "50", "--candidate", candidate]) == 1
    )
    assert "Step 0: the gradient of layer 1 weight differs." in capsys.readouterr().out
    # A recording as the candidate is checked against the run as well, before it starts.
    replayed = ["verify", "--candidate", NOTEBOOK_TRAJECTORY, "--reference", "numpy"]
    assert main([*replayed, "--steps", "50"]) == 0
    assert main([*replayed, "--steps", "20000"]) == 2
    assert "holds 10000 steps" in capsys.readouterr().err


def test_cli_record_and_mutants_are_wired(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from nnparity.cli import main

    if not (_wired("record") and _wired("mutants")):
        pytest.skip("nnparity record / mutants are not wired into cli.py yet (the lead's patch)")
    out = tmp_path / "nb.npz"
    assert main(["record", "--steps", "40", "--out", str(out)]) == 0
    assert main(["verify", "--reference", str(out), "--steps", "40"]) == 0
    assert main(["record", "--every", "0", "--out", str(out)]) == 2
    assert main(["mutants", "--only", "GradientAscent"]) == 0
    assert "1 of 1 mutants caught and placed correctly" in capsys.readouterr().out
