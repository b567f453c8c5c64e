"""What every ``sepflow`` subcommand's handler shares: the check of its required flags."""
from __future__ import annotations

from collections.abc import Iterable

from .errors import UsageError

__all__ = ["require_flags"]


def require_flags(command: str, flags: Iterable[tuple[str, object]]) -> None:
    """Raise ``UsageError`` naming every flag of ``flags`` (flag, its value) whose value is
    empty: ``missing --input, --output; see sepflow run --help``."""
    missing = [flag for flag, value in flags if not value]
    if missing:
        raise UsageError(f"missing {', '.join(missing)}; see sepflow {command} --help")
