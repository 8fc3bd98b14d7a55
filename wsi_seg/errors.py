"""The error hierarchy. The CLI turns each into one line on stderr and an exit code.

Exit codes: 2 for bad input or usage (the whole command could not do its job),
1 when some items of a batch failed while the rest were processed.
"""

from __future__ import annotations


class WsiSegError(Exception):
    """Base class of every error wsi-seg reports to its user."""

    exit_code = 2


class InputError(WsiSegError, ValueError):
    """A file or value given by the user is unusable."""


class ConfigError(InputError):
    """A configuration file or option is invalid."""


class SlideError(InputError):
    """A slide cannot be opened or read."""


class MissingMppError(SlideError):
    """A slide carries no microns-per-pixel metadata and none was supplied."""


class CheckpointError(InputError):
    """A checkpoint is unreadable, unsafe, or does not fit the model."""


class OutputError(WsiSegError):
    """An output cannot be written (exists, read-only location, ...)."""


class BatchError(WsiSegError):
    """Some items of a batch failed; the others were processed."""

    exit_code = 1

    def __init__(self, failures: list[tuple[str, str]], total: int):
        self.failures = list(failures)
        self.total = total
        super().__init__(f"{len(self.failures)} of {total} item(s) failed")
