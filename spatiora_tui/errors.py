"""The errors a user can act on, at the bottom of the house: the model library, the prompt parser
and the engine all raise them, and every front end says them in one line (cli/__init__.py).
engine/api.py re-exports them as part of the engine's contract."""

from __future__ import annotations


class EngineError(Exception):
    """A failure the user can act on; the message says what went wrong and what to do."""


class EngineOOM(EngineError):
    """The device ran out of memory. Memory has been released; a smaller request can succeed."""
