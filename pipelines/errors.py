"""The one error root of ``pipelines`` and the command line's exit codes.

A :class:`UsageError` is the user's mistake (a flag, a config value, an input, a runner): the
job stops before it starts, the command prints one line naming the cause and exits with
:data:`EXIT_USAGE`. Everything that goes wrong with one track is not an exception at all: it
is an error row and a dead-letter record (:mod:`pipelines.units`).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_TRACK_ERRORS",
    "EXIT_USAGE",
    "BeamOptionError",
    "ConfigError",
    "InputError",
    "ReportError",
    "UsageError",
]

EXIT_OK = 0
EXIT_FAILED = 1  # the pipeline itself failed
EXIT_USAGE = 2  # bad flags, config or inputs: nothing ran
EXIT_TRACK_ERRORS = 3  # with --strict: the job finished but some tracks failed


class UsageError(ValueError):
    """A command that must not run: one line on stderr, exit status 2 (a ``ValueError``, as
    every one of its kinds was before they had a root)."""


class ConfigError(UsageError):
    """A job config (YAML, ``--set``, ``--operator``) that cannot run, naming the key."""

    @classmethod
    def check_keys(
        cls, mapping: dict, valid: Sequence[str], *, prefix: str | None, origin: Callable[[str], str], valid_in: str,
    ) -> None:
        """Raise one naming every key of ``mapping`` outside ``valid`` (``prefix.key``, or the
        quoted key without a prefix), where the first came from (``origin(key)``) and the
        valid keys (``valid <valid_in>: ...``)."""
        unknown = sorted(set(mapping) - set(valid))
        if unknown:
            names = ", ".join(f"{prefix}.{k}" if prefix else repr(k) for k in unknown)
            raise cls(f"{origin(unknown[0])}: unknown key {names}; valid {valid_in}: {', '.join(valid)}")


class InputError(UsageError):
    """Inputs or an output the job cannot use (nothing matched, output inside the input)."""


class BeamOptionError(UsageError):
    """A Beam pipeline option with a value Beam refuses, or a runner sepflow cannot use."""


class ReportError(UsageError):
    """A report that cannot be drawn from what its run published."""
