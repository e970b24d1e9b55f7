"""The Jupyter server extension: tornado handlers over the core."""

from .app import SSEExtension

__all__ = ["SSEExtension"]
