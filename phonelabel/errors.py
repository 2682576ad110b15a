"""The one exception type a user can cause."""

from __future__ import annotations


class PhonelabelError(Exception):
    """A user error (bad path, bad option, unreadable audio, incompatible model).

    The CLI prints its message as one red line and exits with code 2.
    """
