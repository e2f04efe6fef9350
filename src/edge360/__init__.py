"""edge360: an asyncio HLS origin and caching edge that counts its viewers exactly."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("edge360")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"

__all__ = ["__version__"]
