"""The operators of a job: each entry of the config's ``operators`` list (or ``--operator``)
checked and completed into an :class:`OperatorSpec` by its operator's own config class."""
from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from typing import Any

from sepops.errors import OperatorConfigError
from sepops.registry import operator_class

from .config_overrides import Provenance
from .errors import ConfigError

__all__ = ["OPERATOR_KEYS", "OperatorSpec", "operator_spec"]

#: The keys of an entry of ``operators``.
OPERATOR_KEYS = ("operator", "label", "params")
_LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class OperatorSpec:
    """One operator of the job with its complete, validated parameters (defaults included)."""

    operator: str
    label: str
    params: dict = field(hash=False)

    def params_json(self) -> str:
        return json.dumps(self.params, sort_keys=True)


def _entry_parts(entry: Any, where: str, source: str) -> tuple[str, str, dict]:
    """An operator entry's name, label and params, each checked (``where``: ``operators[i]``,
    or ``operator`` for one ``--operator`` added; ``source``: where the entry came from)."""
    if isinstance(entry, str):
        entry = {"operator": entry}
    if not isinstance(entry, dict):
        raise ConfigError(f"{source}: {where} must be a mapping with 'operator' and 'params'")
    ConfigError.check_keys(entry, OPERATOR_KEYS, prefix=where, origin=lambda _: source, valid_in="keys")
    name = entry.get("operator")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{source}: {where}.operator is missing (the name of a registered operator)")
    label = entry.get("label") or name
    if not isinstance(label, str) or not _LABEL_RE.match(label):
        raise ConfigError(
            f"{source}: {where}.label {label!r} must be letters, digits, '_', '-' or '.' "
            "(it becomes a folder name)"
        )
    params = entry.get("params") or {}
    if not isinstance(params, dict):
        raise ConfigError(f"{source}: {where}.params must be a mapping, got {type(params).__name__}")
    return name, label, params


def operator_spec(entry: Any, index: int, stft: dict, provenance: Provenance) -> OperatorSpec:
    """Operator entry ``index`` of the job (after ``--operator``) as an ``OperatorSpec`` with its
    complete, validated parameters: its own, then the job-wide ``stft`` values it has and does
    not set, then its defaults. ``ConfigError`` names the entry's key and where it came from."""
    added = ("operators", index) in provenance.flags  # by --operator, not in the file
    where, source = ("operator" if added else f"operators[{index}]"), provenance.of("operators", index)
    name, label, params = _entry_parts(entry, where, source)
    try:
        cls = operator_class(name)
    except OperatorConfigError as exc:
        raise ConfigError(f"{source}: {exc}" if added else f"{source}: {where}.operator: {exc}") from None
    if cls.needs_references:
        raise ConfigError(
            f"{source}: {where}.operator {name!r} needs the true stems (an oracle); "
            "it cannot run on a catalog of mixtures"
        )
    config_fields = {f.name for f in dataclasses.fields(cls.Config)}
    # The job-wide STFT fills in what the operator's own params leave unset, so operators
    # of one job agree on the STFT and share it.
    stft_defaults = {k: v for k, v in stft.items() if k in config_fields and k not in params}
    try:
        # make_config also resolves what the parameters name (an NMF dictionary, a U-Net
        # model), so a missing one stops the job here rather than on every worker.
        config = cls.make_config(**{**stft_defaults, **params})
    except OperatorConfigError as exc:
        blamed = provenance.blame(str(exc), "operators", index, "params")
        prefix = f"{source}: {where}.params" if blamed == source and not added else blamed
        raise ConfigError(f"{prefix}: {exc}") from None
    return OperatorSpec(operator=name, label=label, params=_config_as_json(config))


def _config_as_json(config: Any) -> dict:
    # A JSON round trip gives plain lists/numbers: the form recorded in the metadata.
    values = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    return json.loads(json.dumps(values, default=lambda v: v.item() if hasattr(v, "item") else list(v)))
