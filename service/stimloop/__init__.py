"""stimloop server: the science core (``service.science``) and the shell around it."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("stimloop")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+source"
