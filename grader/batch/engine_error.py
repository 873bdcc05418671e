"""The error an engine raises when it cannot start: a bad ``--gpus``, Ray missing or unreachable.

Trusted side. A module of its own so that the engines (``engines.py``, ``ray_engine.py``) import it
without importing each other.
"""


class EngineError(Exception):
    """The engine cannot start (e.g. Ray missing or its cluster unreachable): a usage error, one line."""
