"""edge360: an asyncio HLS origin and caching edge that counts its viewers exactly."""

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from edge360.native import guard

# before any other module of the package is imported: compiled modules only if built from exactly
# these sources (edge360.native)
guard(__name__, Path(__file__).parent)

try:
    __version__ = version("edge360")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"

__all__ = ["__version__"]
