"""Error types. Each also inherits the built-in it resembles, so callers may catch either."""
from __future__ import annotations


class LesionCountError(Exception):
    """Base of every error lesioncount raises on purpose."""


class InputError(LesionCountError, ValueError):
    """An input file or dataset is unusable. The message names the file and what is wrong."""

    def __init__(self, path, reason: str):
        self.path = str(path) if path is not None else ""
        self.reason = reason
        super().__init__(f"{self.path}: {reason}" if self.path else reason)


class LayoutError(InputError):
    """A dataset folder is neither BIDS nor a manifest lesioncount understands."""


class GridError(InputError):
    """Two images that must share a grid or overlap in space do not."""


class RegistrationError(LesionCountError, RuntimeError):
    """Registration failed or its quality figure says it looks failed."""


class ConfigError(LesionCountError, ValueError):
    """A configuration value is out of range."""


class ReviewError(LesionCountError, RuntimeError):
    """A reader's decisions cannot be applied (or would be overwritten)."""
