"""The one exception type nnparity raises for problems a user can fix."""

from __future__ import annotations


class NnparityError(Exception):
    """Bad input, a bad option or an unusable backend.

    The message is one sentence that says what is wrong and what would fix it;
    the command line prints it on stderr and exits with status 2.
    """
