"""The one error the desk's parts raise to say "refuse this request, and why"."""
from __future__ import annotations


class DeskError(Exception):
    """A refusal meant for the client: ``status`` (4xx) and a short ``error`` text that the
    web side returns as ``{"error": ...}``. Never carries personal data."""

    def __init__(self, status: int, error: str) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
