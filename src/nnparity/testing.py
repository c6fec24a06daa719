"""``assert_parity``: a lockstep verification as an assertion, for a user's own tests.

It runs :func:`nnparity.verify` and, when the backends diverge, raises ``AssertionError``
with a message in the style of ``torch.testing.assert_close``::

    Parity failed at step 3: the gradient of layer 0 weight is not close!

    Mismatched elements: 6 / 6 (100.0%)
    Worst element at index (0, 2): candidate -0.000302528..., reference 0.000531277...
    Absolute difference: 0.000834 (up to 1e-12 allowed)
    Relative difference: 1.57 (up to 1e-09 allowed)
    Where: step 3, stage gradient, layer 0, tensor weight
    Backends: my_backend:MyBackend vs torch, mode resync, float64

The worst element is the one furthest out of tolerance, and the differences are
its own. When the diagnosis (:mod:`nnparity.diagnosis`) supplied them, the oracle's
independent value at that element and ``Verdict:`` and ``Hint:`` lines follow.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from nnparity.records import LayerParams
from nnparity.report import Divergence, Report
from nnparity.spec import NetworkSpec

__all__ = ["assert_parity", "parity_message"]


def assert_parity(
    spec: NetworkSpec,
    x: np.ndarray,
    y: np.ndarray,
    *,
    steps: int,
    candidate: str | type,
    reference: str | type = "torch",
    mode: str = "resync",
    params: Sequence[LayerParams] | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    msg: str | None = None,
) -> Report:
    """Assert that ``candidate`` trains like ``reference`` for ``steps`` SGD steps on ``(x, y)``.

    The arguments are :func:`nnparity.verify`'s, except that ``mode`` defaults to
    ``"resync"`` (every step starts from the reference's weights, so each step tests
    one step's math). Returns the :class:`~nnparity.Report` when they agree; raises
    ``AssertionError`` naming the first step, stage, layer, tensor and element that
    differ otherwise, with ``msg`` (if given) as its first line. Bad arguments raise
    :class:`~nnparity.NnparityError`, as ``verify`` does.
    """
    __tracebackhide__ = True
    from nnparity.verify import verify

    report = verify(
        spec,
        x,
        y,
        steps=steps,
        params=params,
        candidate=candidate,
        reference=reference,
        mode=mode,
        rtol=rtol,
        atol=atol,
    )
    if report.interrupted and report.first_divergence is None:
        raise KeyboardInterrupt
    if not report.ok:
        text = parity_message(report)
        raise AssertionError(text if msg is None else f"{msg}\n\n{text}")
    return report


def parity_message(report: Report) -> str:
    """The failure message for a report that diverged (``torch.testing``'s layout)."""
    d = report.first_divergence
    backends = (
        f"Backends: {report.candidate} vs {report.reference}, mode {report.mode}, {report.spec.get('dtype')}"
    )
    if d is None:
        return f"Parity failed, but the report names no divergence.\n{backends}"
    lines = [_headline(d), ""]
    if d.stage != "step" and d.message is None:
        pct = 100.0 * d.mismatched / d.total if d.total else 0.0
        where = "" if not d.index else f" at index {d.index}"
        lines += [
            f"Mismatched elements: {d.mismatched} / {d.total} ({pct:.1f}%)",
            f"Worst element{where}: candidate {d.candidate_value!r}, reference {d.reference_value!r}",
            f"Absolute difference: {d.abs_err:.3g} (up to {d.atol:g} allowed)",
            f"Relative difference: {d.rel_err:.3g} (up to {d.rtol:g} allowed)",
        ]
        oracle = getattr(d, "oracle_value", None)
        if oracle is not None:
            err = getattr(d, "oracle_err", None)
            bound = "" if err is None else f" +- {err:.2g}"
            lines.append(f"Independent value ({getattr(d, 'oracle', None) or 'oracle'}): {oracle!r}{bound}")
    lines.append(f"Where: {_where(d)}")
    lines.append(backends)
    if d.verdict:
        lines.append(
            f"Verdict: the {d.verdict} is wrong." if d.verdict != "undetermined" else "Verdict: undetermined."
        )
    if d.hint:
        lines.append(f"Hint: {d.hint}")
    return "\n".join(lines)


def _headline(d: Divergence) -> str:
    if d.stage == "step":
        return f"Parity failed at step {d.step}: {d.message}."
    if d.message is not None:
        return f"Parity failed at step {d.step}: the {d.place} cannot be compared: {d.message}."
    return f"Parity failed at step {d.step}: the {d.place} is not close!"


def _where(d: Divergence) -> str:
    layer = "-" if d.layer is None else d.layer
    return f"step {d.step}, stage {d.stage}, layer {layer}, tensor {d.tensor}"
