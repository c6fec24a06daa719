"""What a verification found: the first divergence, and the per-step trace."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from nnparity.records import LayerParams

if TYPE_CHECKING:  # pandas is imported by the run that makes a trace, not by `import nnparity`
    import pandas as pd


@dataclass(frozen=True)
class Divergence:
    """The first quantity, in computation order, where the candidate left tolerance.

    ``stage`` is one of ``forward``, ``loss``, ``gradient``, ``update``, or ``step``
    when a backend's ``step()`` (or ``set_params()``) raised instead of returning.
    ``step`` counts from 0 (the notebook's "error at step 0"); ``layer`` is the
    0-based weight layer (``None`` for the loss); ``index`` the worst element of
    the tensor (``None`` when the tensor could not be compared at all, which
    ``message`` then explains). ``verdict`` (``candidate``, ``reference`` or
    ``undetermined``), ``hint`` and the oracle's value at ``index`` with its own
    error bound (``oracle_value``, ``oracle_err``; ``oracle`` says how it was
    computed) are ``None`` until :func:`nnparity.diagnosis.diagnose` fills them.
    ``nonfinite`` is set when this is where an inf or NaN first appeared: on the
    ``candidate``'s side, the ``reference``'s, or ``both``; ``nonfinite_identical``
    then says whether both sides hold the very same values (an overflow torch
    shares, not a mistake).
    """

    step: int
    stage: str
    layer: int | None
    tensor: str
    index: tuple[int, ...] | None
    candidate_value: float
    reference_value: float
    abs_err: float
    rel_err: float
    verdict: str | None = None
    hint: str | None = None
    mismatched: int = 0
    total: int = 0
    rtol: float = math.nan
    atol: float = math.nan
    message: str | None = None
    oracle_value: float | None = None
    oracle_err: float | None = None
    oracle: str | None = None
    nonfinite: str | None = None
    nonfinite_identical: bool | None = None

    @property
    def place(self) -> str:
        """E.g. ``gradient of layer 0 weight``, ``loss`` or ``activation of layer 1`` (``step()``
        for a backend that raised or misbehaved)."""
        if self.stage == "step":
            return f"the {self.verdict}'s step()" if self.verdict in ("candidate", "reference") else "step()"
        if self.stage == "loss":
            return self.stage
        if self.stage == "forward":
            return f"activation of layer {self.layer}"
        what = "gradient of" if self.stage == "gradient" else "updated"
        return f"{what} layer {self.layer} {self.tensor}"

    def __str__(self) -> str:
        if self.stage == "step":
            lines = [f"Step {self.step}: {self.message}."]
        elif self.message:
            lines = [f"Step {self.step}: the {self.place} cannot be compared: {self.message}."]
        else:
            pct = 100.0 * self.mismatched / self.total if self.total else 0.0
            where = "" if not self.index else f" at index {self.index}"
            lines = [
                f"Step {self.step}: the {self.place} differs.",
                f"Mismatched elements: {self.mismatched} / {self.total} ({pct:.1f}%)",
                f"Greatest difference{where}: candidate {self.candidate_value!r}, "
                f"reference {self.reference_value!r} "
                f"(absolute {self.abs_err:.3g}, relative {self.rel_err:.3g}; "
                f"allowed atol {self.atol:g} + rtol {self.rtol:g} x |reference|)",
            ]
            if self.oracle_value is not None:
                err = "" if self.oracle_err is None else f" +- {self.oracle_err:.2g}"
                lines.append(
                    f"Oracle ({self.oracle}): {self.oracle_value!r}{err} "
                    f"(candidate off by {abs(self.candidate_value - self.oracle_value):.3g}, "
                    f"reference by {abs(self.reference_value - self.oracle_value):.3g})"
                )
        if self.nonfinite:
            lines.append(self._nonfinite_sentence())
        if self.verdict:
            lines.append(
                f"Verdict: the {self.verdict} is wrong."
                if self.verdict != "undetermined"
                else "Verdict: undetermined."
            )
        if self.hint:
            lines.append(f"Hint: {self.hint}")
        return "\n".join(lines)

    def _nonfinite_sentence(self) -> str:
        if self.nonfinite != "both":
            other = "reference" if self.nonfinite == "candidate" else "candidate"
            return (
                f"Non-finite values (inf or NaN) first appear here, on the {self.nonfinite}'s side only; "
                f"the {other}'s stay finite."
            )
        if self.nonfinite_identical:
            return (
                "Non-finite values (inf or NaN) first appear here, identically on both sides: the run "
                "overflows in torch too, so the math agrees but the training does not converge "
                "(lower the learning rate or scale the data)."
            )
        return "Non-finite values (inf or NaN) first appear here, on both sides, but not the same ones."

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["index"] = None if self.index is None else list(self.index)
        return {k: _json_value(v) for k, v in data.items()}


@dataclass(frozen=True)
class Report:
    """The outcome of :func:`nnparity.verify`.

    ``trace`` has one row per step run: each side's loss and, per stage, the largest
    absolute and relative error (NaN where a stage was not compared). ``stopped_by`` is the
    failure (a backend that raised) that ended a ``keep_going`` run early after an earlier
    divergence, which stays ``first_divergence``.
    """

    ok: bool
    steps_run: int
    first_divergence: Divergence | None
    trace: pd.DataFrame
    steps: int = 0
    divergent_steps: int = 0
    interrupted: bool = False
    stopped_by: Divergence | None = None
    mode: str = "free"
    candidate: str = "numpy"
    reference: str = "torch"
    rtol: float = math.nan
    atol: float = math.nan
    spec: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict, compare=False)
    final_params: dict[str, list[LayerParams]] = field(default_factory=dict, compare=False, repr=False)

    def summary(self) -> str:
        """A few lines for a person: the verdict, and the divergence if there is one."""
        head = (
            f"{self.candidate} vs {self.reference}, mode {self.mode}, {self.spec.get('dtype')} "
            f"(rtol {self.rtol:g}, atol {self.atol:g}): "
        )
        if self.interrupted and self.first_divergence is None:
            if not self.steps_run:
                return head + f"interrupted before its first step (of {self.steps})."
            return head + f"interrupted after {self.steps_run} of {self.steps} steps, which agree."
        if self.ok:
            return head + f"agree at every step of {self.steps_run}."
        counted = (
            f" ({self.divergent_steps} of {self.steps_run} steps diverge)" if self.divergent_steps > 1 else ""
        )
        ended = f"; interrupted after {self.steps_run} of {self.steps} steps" if self.interrupted else ""
        if self.stopped_by is not None:
            ended += f"; stopped at step {self.stopped_by.step}: {self.stopped_by.message}"
        return head + f"DIVERGE{counted}{ended}.\n{self.first_divergence}"

    def to_dict(self) -> dict[str, Any]:
        last = self.trace.iloc[-1] if len(self.trace) else None
        return {
            "ok": self.ok,
            "candidate": self.candidate,
            "reference": self.reference,
            "mode": self.mode,
            "steps": self.steps,
            "steps_run": self.steps_run,
            "divergent_steps": self.divergent_steps,
            "interrupted": self.interrupted,
            "stopped_by": None if self.stopped_by is None else self.stopped_by.to_dict(),
            "tolerance": {"rtol": self.rtol, "atol": self.atol},
            "spec": self.spec,
            "final_loss": None
            if last is None
            else {
                "candidate": _json_value(last["candidate_loss"]),
                "reference": _json_value(last["reference_loss"]),
            },
            "first_divergence": None if self.first_divergence is None else self.first_divergence.to_dict(),
        }

    def to_json(self) -> str:
        """The report as JSON: the same inputs give the same text, byte for byte."""
        return json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"


def _json_value(value: Any) -> Any:
    """Plain JSON types; non-finite floats as the strings "nan", "inf", "-inf"."""
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else str(value)
    if isinstance(value, np.integer):
        return int(value)
    return value
