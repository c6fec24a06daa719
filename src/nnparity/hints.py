"""What kind of mistake a wrong tensor looks like: one sentence a user can act on.

Given the side the oracle found wrong (:mod:`nnparity.diagnosis`) and the oracle's value for its
disputed tensor, each hypothesis below is a concrete counterfactual, tested element by element
within the oracle's error and the run's tolerance; the first that fits becomes the hint:

- any stage: non-finite values; float32 rounding in a float64 run (values representable in float32,
  or off by about float32's epsilon); a named constant factor (-1, 2, 1/2, N, 1/N, N x outputs, the
  number of outputs, the learning rate; for an update, on the displacement ``p' - p``);
- gradients: a transpose; an activation's derivative replaced by 1 or taken from the wrong variable
  (``1 - z^2`` for tanh, ReLU's for leaky ReLU, ...), recomputed by :func:`nnparity.oracle.backprop`;
  backprop through a later layer's already-updated weight; the gradient at the updated weights; a
  bias gradient reduced over axis 1;
- updates: ``torch.optim.SGD``'s documented variants (dampening on the first step, or never; weight
  decay after momentum, or never; Nesterov ignored or added; no momentum);
- activations: the activation not applied or another one; the bias missing or added twice;
- the loss: the other reduction; another loss.

When nothing fits, the hint says so rather than guess.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np

from nnparity import oracle
from nnparity.optim import SGD
from nnparity.oracle import Estimate, Rule
from nnparity.records import LayerParams, StepResult, as_real
from nnparity.report import Divergence
from nnparity.spec import NetworkSpec

Array = np.ndarray
TRUST = 2.0  # as in nnparity.diagnosis: within TRUST x the oracle's error bound, plus the tolerance
HINT_SLACK = 1e-8  # relative slack when a counterfactual is computed analytically (dE/df is ~1e-10)
FLOAT32_EPS = float(np.finfo(np.float32).eps)


def what(d: Divergence) -> str:
    """The disputed tensor in words: ``layer 0 weight gradient``, ``updated layer 1 bias``, ..."""
    if d.stage == "gradient":
        return f"layer {d.layer} {d.tensor} gradient"
    if d.stage == "update":
        return f"updated layer {d.layer} {d.tensor}"
    if d.stage == "forward":
        return f"layer {d.layer} activation"
    return "loss"


def layer_of(d: Divergence) -> int:
    if d.layer is None:
        raise ValueError(f"a {d.stage} divergence names no layer")
    return d.layer


def float64(value: object) -> Array:
    """A fresh float64 array of a real-valued ``value``."""
    return np.array(as_real(value, "float64"), dtype=np.float64)


def tensor_of(params: Sequence[LayerParams], d: Divergence) -> Array:
    """The divergence's weight or bias among ``params``, as float64."""
    p = params[layer_of(d)]
    return float64(p.weight if d.tensor == "weight" else p.bias)


class Evidence(NamedTuple):
    """What the hints look at: the side the oracle found wrong, and the oracle's value for it."""

    spec: NetworkSpec
    x: Array
    y: Array
    divergence: Divergence
    side: str  # "candidate" or "reference"
    value: Array  # its disputed tensor, float64
    estimate: Estimate  # the oracle's, from the side's own starting parameters
    start: list[LayerParams]  # the parameters the side started the step with, float64
    result: StepResult  # what the side's step returned
    buffer: Callable[[Rule], Array | None]  # its momentum buffer before the step under a rule, or ValueError


def explain(e: Evidence) -> str:
    """One sentence: what kind of mistake fits the wrong side's tensor, or that none does."""
    return _Hints(e).sentence()


def _relative_gap(got: Array, want: Array) -> float | None:
    """The largest difference relative to the largest value wanted (``None`` when that is 0)."""
    scale = float(np.max(np.abs(want), initial=0.0))
    return float(np.max(np.abs(got - want))) / scale if scale else None


def _ones(z: Array, a: Array) -> Array:
    return np.ones_like(z)


# torch's activation derivatives as a hint names them, and the wrong ones hand-written backprop uses.
DERIVATIVE_FORMULA = {
    "sigmoid": "a (1 - a)",
    "tanh": "1 - a^2",
    "relu": "1 where z > 0, else 0",
    "leaky_relu": "1 where z > 0, else 0.01",
    "softplus": "sigmoid(z)",
    "elu": "1 where z > 0, else exp(z)",
}
WRONG_DERIVATIVES: dict[str, list[tuple[str, Callable[[Array, Array], Array]]]] = {
    "sigmoid": [
        ("replaced by 1", _ones),
        ("taken from z, z (1 - z)", lambda z, a: z * (1.0 - z)),
        ("missing its (1 - a) factor, a", lambda z, a: a),
        ("missing its a factor, 1 - a", lambda z, a: 1.0 - a),
    ],
    "tanh": [
        ("replaced by 1", _ones),
        ("taken from z, 1 - z^2", lambda z, a: 1.0 - z * z),
        ("missing the square, 1 - a", lambda z, a: 1.0 - a),
        ("taken as the sigmoid's, a (1 - a)", lambda z, a: a * (1.0 - a)),
    ],
    "relu": [("replaced by 1 (it differs only where z <= 0)", _ones)],
    "leaky_relu": [
        ("replaced by 1 (it differs only where z <= 0)", _ones),
        ("taken as ReLU's, 0 where z <= 0", lambda z, a: (z > 0).astype(np.float64)),
    ],
    "softplus": [
        ("replaced by 1", _ones),
        ("taken from a, sigmoid(a)", lambda z, a: oracle.FORWARD["sigmoid"](a)),
    ],
    "elu": [
        ("replaced by 1 (it differs only where z <= 0)", _ones),
        ("taken as a = exp(z) - 1 where z <= 0", lambda z, a: np.where(z > 0, 1.0, a)),
    ],
}
VARIANTS: list[tuple[Rule, str, Callable[[SGD, int], bool]]] = [
    (
        Rule(first="damped"),
        "matches momentum with dampening on the first step: torch.optim.SGD starts the buffer as the "
        "gradient itself (buf = g) and dampens only from the second step",
        lambda opt, step: bool(opt.momentum and opt.dampening and step == 0),
    ),
    (
        Rule(dampen=False),
        "matches momentum without dampening: after the first step the buffer is "
        "buf = momentum * buf + (1 - dampening) * g",
        lambda opt, step: bool(opt.momentum and opt.dampening and step > 0),
    ),
    (
        Rule(decay="after"),
        "matches weight decay added after momentum: torch adds weight_decay * p to the gradient "
        "before it enters the momentum buffer",
        lambda opt, step: bool(opt.weight_decay and opt.momentum),
    ),
    (
        Rule(decay="none"),
        "matches an update without weight decay: add weight_decay * p to the gradient first",
        lambda opt, step: bool(opt.weight_decay),
    ),
    (
        Rule(nesterov=False),
        "matches plain momentum although nesterov=True: the Nesterov step is g + momentum * buf, not buf",
        lambda opt, step: bool(opt.nesterov),
    ),
    (
        Rule(nesterov=True),
        "matches Nesterov momentum, which this run does not ask for: the step is the buffer itself",
        lambda opt, step: bool(opt.momentum and not opt.nesterov and not opt.dampening),
    ),
    (
        Rule(momentum=False),
        "matches SGD without momentum: keep a buffer, buf = momentum * buf + (1 - dampening) * g, "
        "and step by it",
        lambda opt, step: bool(opt.momentum),
    ),
]


class _Hints:
    """Tests the wrong side's tensor against the oracle for the shapes common mistakes leave."""

    def __init__(self, e: Evidence) -> None:
        self.e, self.d, self.spec = e, e.divergence, e.spec
        est = e.estimate
        self.known = est.known & np.isfinite(est.value)
        self.W, self.want, self.err = e.value, est.value, est.err
        self.rows = int(e.x.shape[0])
        self.subject = f"The {e.side}'s {what(self.d)}"

    def fits(self, H: Array, err: Array | None = None, scale: float = 1.0) -> bool:
        """``W`` equals ``H`` within the oracle's error (``err``, times ``scale``) and the tolerance."""
        err = self.err if err is None else err
        with np.errstate(invalid="ignore", over="ignore"):
            allowed = TRUST * abs(scale) * err + self.d.atol + self.d.rtol * np.abs(H)
            ok = np.abs(self.W - H) <= allowed
        return bool(ok[self.known].all()) and bool(self.known.any())

    def fits_analytic(self, H: Array) -> bool:
        """For a counterfactual from :func:`oracle.backprop`: its own noise is ~1e-10 relative."""
        H = np.asarray(H, np.float64)
        if H.shape != self.W.shape:
            return False
        return self.fits(H, err=np.full(H.shape, HINT_SLACK * float(np.max(np.abs(H), initial=0.0))))

    def sentence(self) -> str:
        for test in (self.nonfinite, self.precision, *self.by_stage(), self.constant):
            found = test()
            if found:
                return found
        return (
            "No simple pattern fits (a constant factor, a sign, a transpose, float32 rounding"
            f"{self.tried()}); compare the {self.e.side}'s {what(self.d)} with the oracle's by hand."
        )

    def tried(self) -> str:
        return {
            "gradient": ", a wrong activation derivative, an updated weight used too early",
            "update": ", a documented SGD variant",
            "forward": ", another activation, a missing bias",
            "loss": ", another loss or reduction",
        }[self.d.stage]

    def by_stage(self) -> list[Callable[[], str | None]]:
        return {
            "gradient": [self.transposed, self.wrong_derivative, self.updated_too_early, self.wrong_axis],
            "update": [self.sgd_variant],
            "forward": [self.activation_variant],
            "loss": [self.loss_variant],
        }[self.d.stage]

    @property
    def noun(self) -> str:
        return {
            "gradient": "the finite-difference gradient",
            "update": "torch.optim.SGD's documented update",
            "forward": "the float64 recomputation",
            "loss": "the float64 loss",
        }[self.d.stage]

    # -- every stage --

    def nonfinite(self) -> str | None:
        if np.isfinite(self.W[self.known]).all():
            return None
        return (
            f"{self.subject} is not finite where {self.noun} is: look for an overflow, a log of 0 "
            "or a division by 0."
        )

    def precision(self) -> str | None:
        if self.spec.dtype != "float64":
            return None
        W, want = self.W[self.known], self.want[self.known]
        rel = _relative_gap(W, want)
        float32_values = np.array_equal(W, W.astype(np.float32).astype(np.float64))
        if rel is not None and 1e-12 < rel < 1e-5 and float32_values:
            return (
                f"{self.subject} holds only values representable in float32 (off by {rel:.1g} relative; "
                f"float32's epsilon is {FLOAT32_EPS:.2g}): it passes through float32 somewhere "
                "(np.float32, astype, a torch default dtype); keep it float64."
            )
        if self.d.stage == "update":  # what the step moved, p' - p: a small step's mistake is a
            p = tensor_of(self.e.start, self.d)[self.known]  # small part of the weights themselves
            rel = _relative_gap(W - p, want - p)
        if rel is None or not 1e-12 < rel < 1e-5:
            return None
        return (
            f"{self.subject} is off by {rel:.1g} relative, about float32's rounding in a float64 run: "
            "part of its computation runs in float32."
        )

    def constant(self) -> str | None:
        want, W = self.want, self.W
        if self.d.stage == "update":  # compare the displacements, p' - p
            p = tensor_of(self.e.start, self.d)
            W, want = W - p, want - p
        k = _ratio(W[self.known], want[self.known])
        if k is None:
            return None
        named = [(what, why) for c, what, why in self.factors() if abs(k - c) <= 1e-6 * abs(c) or k == c]
        if named and self._fits_scaled(k):
            return f"{self.subject} {named[0][0]}: {', or '.join(why for _, why in named)}."
        if self.d.stage == "loss" or not self._fits_scaled(k):
            return None  # any two numbers have a ratio: only a named one says something about a loss
        if self.d.stage == "update":
            return (
                f"{self.subject} moves {k:.6g}x as far as {self.noun}: check the learning rate "
                f"(lr = {self.spec.optimizer.lr:g}) and any factor in the step."
            )
        return (
            f"{self.subject} is a constant {k:.6g} times {self.noun}: look for a wrong factor or reduction."
        )

    def _fits_scaled(self, k: float) -> bool:
        if self.d.stage != "update":
            return self.fits(k * self.want, scale=k)
        p = tensor_of(self.e.start, self.d)
        return self.fits(p + k * (self.want - p), scale=max(abs(k), 1.0))

    def factors(self) -> list[tuple[float, str, str]]:
        """Named constants: ``(value, what the tensor is, why it might be)``, most likely first."""
        N, n_out, lr, noun = self.rows, self.spec.sizes[-1], self.spec.optimizer.lr, self.noun
        numel = N * n_out
        if self.d.stage == "update":
            moves = [
                (
                    -1.0,
                    f"moves the opposite way to {noun}",
                    "gradient descent is p = p - lr * g, not p + lr * g",
                ),
                (0.0, "does not move", "the update is not applied, or not written back to the parameter"),
                (2.0, f"moves twice as far as {noun}", "a factor 2 in the step, or lr doubled"),
                (0.5, f"moves half as far as {noun}", "a factor 1/2 in the step, or lr halved"),
            ]
            if lr:
                moves += [
                    (1.0 / lr, "moves by the gradient itself", f"the learning rate ({lr:g}) is not applied"),
                    (lr, "moves by lr^2 * g", f"the learning rate ({lr:g}) is applied twice"),
                ]
            return moves
        bias_gradient = self.d.stage == "gradient" and self.d.tensor == "bias"
        found = [
            (
                -1.0,
                f"has the opposite sign to {noun}",
                "look for (y - f) where (f - y) belongs, or a sign slip",
            ),
            (
                0.0,
                f"is zero where {noun} is not",
                "nothing reaches it: an array never written, or a factor of 0 on the way back",
            ),
            (
                0.5,
                f"is exactly half of {noun}",
                "a factor 2 is missing, as in MSE's dE_df = 2 (f - y) / N, or a term counted once too few",
            ),
            (2.0, f"is exactly 2x {noun}", "look for a factor 2 applied twice, or a term counted twice"),
            (
                1.0 / N,
                f"is {noun} divided by N = {N}, the number of rows",
                "it is averaged over the rows; sum instead, dE_db = dE_dz.sum(axis=0) (the loss's mean "
                "already divides by N)"
                if bias_gradient
                else "a mean over the rows is taken twice",
            ),
            (float(N), f"is N = {N} (the number of rows) times {noun}", "the mean's 1/N is missing"),
            (
                1.0 / numel,
                f"is {noun} divided by N x outputs = {numel}",
                "a mean over every element is taken twice",
            ),
            (
                float(numel),
                f"is N x outputs = {numel} times {noun}",
                "the mean over every element is missing",
            ),
            (
                float(n_out),
                f"is {n_out} (the number of outputs) times {noun}",
                f"the mean divides by the {N} rows, where the loss's mean is over all {numel} elements",
            ),
            (
                1.0 / n_out,
                f"is {noun} divided by the number of outputs, {n_out}",
                "an extra mean over the outputs",
            ),
        ]
        if self.d.stage == "gradient" and lr:
            found += [
                (
                    lr,
                    f"is the learning rate ({lr:g}) times {noun}",
                    "report the gradient before scaling by lr",
                ),
                (1.0 / lr, f"is {noun} divided by the learning rate ({lr:g})", "a division by lr slipped in"),
            ]
        return [(c, what, why) for c, what, why in found if c != 1.0]

    # -- gradients --

    def transposed(self) -> str | None:
        if self.W.ndim != 2 or self.W.shape[0] != self.W.shape[1]:
            return None
        saved = self.known
        self.known = self.known & self.known.T  # a sample of a large tensor holds both (i, j) and (j, i)
        fits = self.fits(self.want.T, err=self.err.T)
        self.known = saved
        if not fits:
            return None
        if self.d.stage == "gradient":
            return (
                f"{self.subject} is the transpose of {self.noun}: weights are (fan_in, fan_out), "
                "so dE_dW = a_prev.T @ dE_dz, not dE_dz.T @ a_prev."
            )
        return f"{self.subject} is the transpose of {self.noun}."

    def wrong_derivative(self) -> str | None:
        d, spec = self.d, self.spec
        for k in range(layer_of(d), spec.n_layers):
            act = spec.activations[k]
            for wrong, derivative in WRONG_DERIVATIVES.get(act, []):
                grads, _ = oracle.backprop(
                    spec, self.e.start, self.e.x, self.e.y, derivatives={k: derivative}
                )
                if self.fits_analytic(tensor_of(grads, d)):
                    return (
                        f"{self.subject} matches backprop with layer {k}'s {act} derivative {wrong}: "
                        f"dE_dz = dE_da * da_dz with da_dz = {DERIVATIVE_FORMULA[act]}."
                    )
        return None

    def updated_too_early(self) -> str | None:
        d, start, after = self.d, self.e.start, self.e.result.params
        layer = layer_of(d)
        later = list(range(layer + 1, self.spec.n_layers))
        x, y = self.e.x, self.e.y
        choices = [later, *([[k] for k in later] if len(later) > 1 else [])] if later else []
        for ks in choices:
            back = {k: np.asarray(after[k].weight, np.float64) for k in ks}
            grads, _ = oracle.backprop(self.spec, start, x, y, back_weights=back)
            if self.fits_analytic(tensor_of(grads, d)):
                which = f"layer {ks[0]}'s" if len(ks) == 1 else "the later layers'"
                return (
                    f"{self.subject} matches backprop through {which} already-updated weights: take every "
                    "gradient first (dE_da_prev = dE_dz @ W.T with the old W), then update."
                )
        try:
            at_after = oracle.gradient_at(self.spec, list(after), x, y, layer, d.tensor)
        except (TypeError, ValueError, AttributeError):
            return None
        if self.fits_analytic(at_after):
            return (
                f"{self.subject} is the gradient at the updated weights: take (and report) the gradients "
                "before applying the update."
            )
        return None

    def wrong_axis(self) -> str | None:
        layer = layer_of(self.d)
        if self.d.tensor != "bias" or self.spec.sizes[layer + 1] != self.rows:
            return None
        _, dE_dzs = oracle.backprop(self.spec, self.e.start, self.e.x, self.e.y)
        for reduce, name in ((np.sum, "summed"), (np.mean, "averaged")):
            if self.fits_analytic(reduce(dE_dzs[layer], axis=1)):
                return (
                    f"{self.subject} is dE_dz {name} over each row (axis 1) instead of over the rows: "
                    "dE_db = dE_dz.sum(axis=0)."
                )
        return None

    # -- the update --

    def sgd_variant(self) -> str | None:
        opt, d = self.spec.optimizer, self.d
        p, g = tensor_of(self.e.start, d), tensor_of(self.e.result.grads, d)
        for rule, text, applies in VARIANTS:
            if not applies(opt, d.step):
                continue
            try:
                buf = self.e.buffer(rule)
            except ValueError:
                continue
            if self.fits(oracle.sgd_step(opt, rule, p, g, buf)):
                return f"{self.subject} {text}."
        return None

    # -- the forward pass and the loss --

    def activation_variant(self) -> str | None:
        spec, layer = self.spec, layer_of(self.d)
        zs, outs = oracle.forward(spec, self.e.start, self.e.x)
        z, a_prev, p = zs[layer], outs[layer], self.e.start[layer]
        act = spec.activations[layer]
        if act != "identity" and self.fits(z):
            return f"{self.subject} is the pre-activation z itself: apply {act} after the linear map."
        for other, f in oracle.FORWARD.items():
            if other not in (act, "identity") and self.fits(f(z)):
                return f"{self.subject} matches {other} where the spec says {act}."
        forward = oracle.FORWARD[act]
        if p.bias is not None:
            if self.fits(forward(a_prev @ p.weight)):
                return f"{self.subject} is computed without the bias: z = a_prev @ W + b."
            if self.fits(forward(z + p.bias)):
                return f"{self.subject} adds the bias twice: z = a_prev @ W + b."
        return None

    def loss_variant(self) -> str | None:
        spec = self.spec
        _, outs = oracle.forward(spec, self.e.start, self.e.x)
        f, y = outs[-1], self.e.y
        other = "sum" if spec.reduction == "mean" else "mean"
        with np.errstate(all="ignore"):
            if self.fits(np.array(oracle.loss_value(spec, f, y, reduction=other))):
                return f"{self.subject} is the {other} where the spec asks for reduction='{spec.reduction}'."
            for name in ("mse", "l1", "bce", "bce_with_logits", "cross_entropy"):
                if name != spec.loss and self.fits(np.array(oracle.loss_value(spec, f, y, loss=name))):
                    return f"{self.subject} matches {name} where the spec says {spec.loss}."
        return None


def _ratio(W: Array, want: Array) -> float | None:
    """The least-squares ``k`` in ``W ~ k want``."""
    denom = float(np.dot(want, want))
    if not denom or not np.isfinite(denom):
        return None
    k = float(np.dot(W, want)) / denom
    return k if np.isfinite(k) else None
