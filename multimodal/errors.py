"""Errors the CLI turns into one-line messages and documented exit codes."""
from __future__ import annotations

# Exit codes, documented in README.md.
EXIT_OK = 0
EXIT_FAILED = 1  # some inputs of a batch failed, the others completed
EXIT_USAGE = 2  # bad command line, or a command whose optional dependencies are missing
EXIT_INPUT = 3  # no usable input (missing path, no media)
EXIT_MODEL = 4  # a model file is missing, corrupt or fails its checksum
EXIT_OUTPUT = 5  # the output cannot be written (permissions, would overwrite)
EXIT_INTERRUPTED = 130


class MultimodalError(Exception):
    """Base class: ``str(err)`` is the one-line message shown to the user."""

    exit_code = EXIT_FAILED


class UsageError(MultimodalError):
    """Options that cannot work together or name something that is not there."""

    exit_code = EXIT_USAGE


class InputError(MultimodalError):
    """A media file that cannot be used (missing, empty, not media, truncated)."""

    exit_code = EXIT_INPUT


class ModelError(MultimodalError):
    """A model file that is missing, corrupt, fails its checksum or its export check."""

    exit_code = EXIT_MODEL


class OutputError(MultimodalError):
    """Results that cannot be written, or would replace existing ones unasked."""

    exit_code = EXIT_OUTPUT


class MissingDependencyError(MultimodalError):
    """A command needs an optional dependency that is not installed; the message names the pip extra."""

    exit_code = EXIT_USAGE
