"""Types for the command line's options: each turns an option's text into a value, or tells argparse
in a few words what it expected (``argument --steps: expected a whole number, got 'ten'``)."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def whole_number(low: int, high: int, high_text: str | None = None) -> Callable[[str], int]:
    """A whole number from ``low`` to ``high`` (written ``high_text`` in the message, if given)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if not low <= value <= high:
            upper = high_text or f"{high:,}"
            raise argparse.ArgumentTypeError(f"expected a number from {low} to {upper}, got {value}")
        return value

    return parse


def count(text: str) -> int:
    """A count (of steps, networks, layers, ...): 1 to ``MAX_STEPS``, the most steps a run takes."""
    from nnparity.config import MAX_STEPS  # here: parsing the command line stays light

    return whole_number(1, MAX_STEPS)(text)


seed = whole_number(0, 2**32 - 1, "2**32 - 1")


def tolerance(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0:  # NaN too
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def names(text: str) -> list[str]:
    """Comma-separated names, none of them empty."""
    found = [name.strip() for name in text.split(",")]
    if not all(found):
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r}")
    return found
