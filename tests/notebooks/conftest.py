"""The notebook tests use the user-facing plugin's fixture, as a user's conftest would get it."""

from jupyter_sse.testing import sse_hub

__all__ = ["sse_hub"]
