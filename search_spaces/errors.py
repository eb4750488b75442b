"""The project's own error types.

Every error a user can cause (a bad config, a data file, a checkpoint, a CLI flag) is raised as an
`S4opError` subclass whose message is one line naming what is wrong and where. The CLI prints that
line and exits 2. This module sits in `search_spaces` because it is the package every other one may
import (dependencies flow orchestrator -> workers -> search_spaces).
"""


class S4opError(Exception):
    """A user-facing error: one line, naming the value, where it is and what was expected."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))  # always one line


class ConfigError(S4opError):
    """A search/training config (YAML, preset or --set override) is invalid."""


class DataError(S4opError):
    """A dataset folder or file is missing or malformed."""


class CheckpointError(S4opError):
    """A checkpoint folder is missing, truncated, altered or does not match the model."""


class SearchStateError(S4opError):
    """A search folder is in a state the command cannot work from (locked, no stage, ...)."""


class TrainingError(S4opError):
    """Training diverged (a non-finite loss): usually a learning rate too high for the model."""


class LatencyError(S4opError):
    """A latency cannot be measured as configured (e.g. the exported model disagrees with PyTorch)."""
