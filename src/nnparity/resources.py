"""Refusing, up front, a network too large for the machine, rather than being killed midway.

:func:`check_memory` estimates what a verification run allocates and compares it with the
memory available: ``MemAvailable`` in ``/proc/meminfo`` (and a cgroup v2 limit, in a container),
else the physical memory, else no check. ``NNPARITY_MEMORY_LIMIT`` (bytes, or with a ``K``,
``M``, ``G`` or ``T`` suffix, powers of 1024) overrides the figure.

The estimate, in elements of the spec's dtype, with ``P`` parameters and ``A`` units per row
(the sum of the widths, the input's included)::

    each backend    6 P     parameters, gradients, momentum buffers, the update's two
                            temporaries, and the copies a step returns
                    4 A rows  pre-activations and activations forward, their gradients backward
    the verifier    4 P     the starting parameters, each side's copy of them, the final ones
                    2 A rows  the activations each side returns, compared

that is ``16 P + 10 A rows`` elements, plus 32 KiB a layer (the Python objects of each side's
layers: measured ~18 KB) and 512 bytes a step (the trace and what grows with it: measured 240-290).
Generous, so that what passes fits, but within a small factor of what a run really holds. Runs
needing less than 64 MiB are never refused.
"""

from __future__ import annotations

import os
import re
from decimal import Decimal
from pathlib import Path

from nnparity.errors import NnparityError
from nnparity.spec import NetworkSpec

ENV_LIMIT = "NNPARITY_MEMORY_LIMIT"
PARAM_COPIES = 16
ACTIVATION_COPIES = 10
LAYER_BYTES = 32 * 1024
STEP_BYTES = 512
ALWAYS_FITS = 64 * 1024**2
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parameter_count(spec: NetworkSpec) -> int:
    """The number of weights and biases, as an exact Python int however wide the layers."""
    return sum(
        int(fan_in) * int(fan_out) + (int(fan_out) if spec.bias else 0)
        for fan_in, fan_out in zip(spec.sizes[:-1], spec.sizes[1:])
    )


def memory_needed(spec: NetworkSpec, rows: int, steps: int = 0, recorded: int = 0) -> int:
    """About how many bytes verifying ``spec`` on a batch of ``rows`` rows for ``steps`` steps
    allocates; with ``recorded``, recording that many steps' tensors (:func:`nnparity.trajectory.record`)."""
    units = sum(int(width) for width in spec.sizes)
    elements = PARAM_COPIES * parameter_count(spec) + ACTIVATION_COPIES * units * int(rows)
    elements += _recording(spec, rows, recorded)
    return elements * spec.np_dtype.itemsize + LAYER_BYTES * spec.n_layers + STEP_BYTES * int(steps)


def _recording(spec: NetworkSpec, rows: int, recorded: int) -> int:
    """Elements a recording holds: each kept step's gradients, parameters and activations, twice
    (the rows as they come, then stacked into one array)."""
    return 2 * int(recorded) * (2 * parameter_count(spec) + int(rows) * sum(int(w) for w in spec.sizes[1:]))


def memory_available() -> int | None:
    """Bytes this process may still allocate, or ``None`` when that cannot be told."""
    override = os.environ.get(ENV_LIMIT)
    if override is not None:
        return parse_size(override)
    figures = [_meminfo_available(), _cgroup_available()]
    known = [figure for figure in figures if figure is not None]
    if known:
        return min(known)
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def check_memory(spec: NetworkSpec, rows: int, steps: int = 0, recorded: int = 0) -> None:
    """Raise :class:`NnparityError` if verifying ``spec`` on ``rows`` rows for ``steps`` steps
    (recording ``recorded`` of them) would not fit in memory (``rows=0``: the parameters alone,
    before the data is known)."""
    needed = memory_needed(spec, rows, steps, recorded)
    if needed < ALWAYS_FITS:
        return
    available = memory_available()
    if available is None or needed <= available:
        return
    fixes = ["smaller widths" if spec.n_layers * LAYER_BYTES < needed // 2 else "fewer layers"]
    if ACTIVATION_COPIES * sum(spec.sizes) * rows * spec.np_dtype.itemsize > needed // 2:
        fixes.insert(0, "fewer data rows")  # the data's share is the larger
    if spec.dtype == "float64":
        fixes.append("float32")
    if STEP_BYTES * steps > needed // 2:  # the trace: neither the widths nor the dtype matter
        fixes = ["fewer steps"]
    if _recording(spec, rows, recorded) * spec.np_dtype.itemsize > needed // 2:
        fixes = ["fewer steps", "a larger every (--every: fewer of them kept)"]
    advice = ", ".join(fixes[:-1]) + " or " + fixes[-1] if len(fixes) > 1 else fixes[0]
    raise NnparityError(
        f"The network {network_label(spec)} has {parameter_count(spec):,} parameters ({spec.dtype}); "
        f"{'recording' if recorded else 'verifying'} it{_with_rows(rows)}{_for_steps(steps)} needs about "
        f"{format_bytes(needed)}, "
        f"but only {format_bytes(available)} is available. Use {advice}."
    )


def _for_steps(steps: int) -> str:
    return "" if steps == 0 else f" for {steps:,} step{'' if steps == 1 else 's'}"


def _with_rows(rows: int) -> str:
    if rows == 0:
        return ""
    return f" with {rows:,} row{'' if rows == 1 else 's'}"


def network_label(spec: NetworkSpec) -> str:
    """``784-100-10``; a deep network's middle widths elided as ``...``."""
    widths = [str(width) for width in spec.sizes]
    if len(widths) > 6:
        widths = [*widths[:3], "...", *widths[-2:]]
    return "-".join(widths)


def format_bytes(n: int) -> str:
    """``45.6 GiB``; exact for any size, however absurd."""
    for unit in ("EiB", "PiB", "TiB", "GiB", "MiB", "KiB"):
        scale = 1024 ** ("KMGTPE".index(unit[0]) + 1)
        if n >= scale:
            whole, rest = divmod(n, scale)
            return f"{whole:,}.{rest * 10 // scale} {unit}"
    return f"{n:,} bytes"


def parse_size(text: str) -> int:
    """``"8G"`` -> 8589934592; a plain number is bytes; ``KiB``, ``GB`` and the like are read as 1024s."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([KMGT]?)(?:i?B)?\s*", text, flags=re.IGNORECASE)
    if match is None:
        raise NnparityError(
            f"{ENV_LIMIT} must be a number of bytes, optionally with a K, M, G or T suffix "
            f"such as 8G; got {text!r}."
        )
    number, unit = match.groups()
    return int(Decimal(number) * _UNITS[unit.upper()])


def _meminfo_available() -> int | None:
    try:
        text = Path("/proc/meminfo").read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError):
        return None
    match = re.search(r"^MemAvailable:\s+(\d+)\s*kB", text, flags=re.MULTILINE)
    return None if match is None else int(match.group(1)) * 1024


def _cgroup_available() -> int | None:
    """What a cgroup v2 memory limit (a container's) still allows, if there is one."""
    base = Path("/sys/fs/cgroup")
    try:
        limit = (base / "memory.max").read_text(encoding="ascii").strip()
        if limit == "max":
            return None
        current = (base / "memory.current").read_text(encoding="ascii").strip()
        return max(int(limit) - int(current), 0)
    except (OSError, UnicodeDecodeError, ValueError):
        return None
