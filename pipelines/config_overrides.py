"""``--operator`` and ``--set`` applied to a job file's mapping, and where each value came from.

:func:`apply_overrides` returns the mapping a job runs with and its :class:`Provenance`: the
flags that set values in it, by key path, beside the mapping (the mapping itself holds only
what YAML would). A config error names where the bad value came from: the flag that set it
(``--set hpss.margin=abc: ...``, ``--bit-depth 32: ...``, ``--operator hpsss: ...``), else the
config file.
"""
from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from .errors import ConfigError

__all__ = ["Override", "Provenance", "apply_overrides", "parse_set"]

#: A ``--set`` item, or (the item, the flag it was typed as: ``("audio.format=wav", "--format wav")``).
Override = str | tuple[str, str]


@dataclass
class Provenance:
    """Where the values of a job's mapping came from: ``source`` (the config file, or "command
    line" without one) unless a flag set them.

    ``flags`` maps a key path to the flag as typed, e.g. ``("audio", "subtype") -> "--bit-depth
    32"``, ``("operators", 0) -> "--operator hpss"`` (an operator the file does not list: every
    value of that entry came from the flag), ``("operators", 0, "params", "margin") -> "--set
    hpss.margin=abc"``. Operator entries are counted in the job's order, after ``--operator``.
    """

    source: str
    flags: dict[tuple, str] = field(default_factory=dict)

    def record(self, path: tuple, flag: str) -> None:
        """``flag`` set the value at ``path`` (a later flag for the same key replaces it)."""
        self.flags[path] = flag

    def of(self, *path) -> str:
        """Where the value at ``path`` came from: its flag, else the flag of the entry holding
        it, else ``source``."""
        for end in range(len(path), 0, -1):
            if path[:end] in self.flags:
                return self.flags[path[:end]]
        return self.source

    def blame(self, message: str, *path) -> str:
        """Where the values under ``path`` that the error ``message`` is about came from.

        A mapping's validation (a dataclass's ``__post_init__``, an operator's config) reports
        a bad combination in words only; it names its keys (``subtype FLOAT needs format wav``,
        ``operator 'hpss' parameter 'margin': ...``). The flags that set a key under ``path``
        which the message names, comma-separated in the order they were given; else
        :meth:`of` ``path``.
        """
        named = [flag for key, flag in self.flags.items()
                 if len(key) == len(path) + 1 and key[:-1] == path and _names(message, key[-1])]
        return ", ".join(named) or self.of(*path)


def _names(message: str, key: str) -> bool:
    """Whether ``message`` names ``key`` as a word of its own (``format``, not ``formats``)."""
    return re.search(rf"(?<![A-Za-z0-9_]){re.escape(key)}(?![A-Za-z0-9_])", message) is not None


def parse_set(item: str, sections: Sequence[str]) -> tuple[list[str], Any]:
    """``--set section.key=value`` (or ``label.param=value``) as (``[head, key]``, the value
    read as a YAML scalar: "31" -> 31, "true" -> True, "null" -> None, "[a, b]" -> a list)."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key=value, e.g. audio.format=wav or hpss.kernel_size=31")
    key, raw = item.split("=", 1)
    path = [p for p in key.strip().split(".")]
    if len(path) != 2 or not all(path):
        raise ConfigError(
            f"--set {item!r}: key must be <section>.<key> (sections: {', '.join(sections)}) "
            "or <operator label>.<param>"
        )
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return path, value


def apply_overrides(
    raw: dict, operators: list[str] | None, overrides: Sequence[Override], *, sections: Sequence[str], source: str
) -> tuple[dict, Provenance]:
    """The file's mapping (``raw``, not changed) with ``--operator`` and ``--set`` applied, and
    where its values came from (``source``: the file). ``sections``: the mapping's sections
    (``audio``, ``stft`` ...); a ``--set`` head that is none of them is an operator label."""
    raw = json.loads(json.dumps(raw))  # deep copy of plain YAML data
    provenance = Provenance(source)
    entries = raw.get("operators")
    if entries is None:
        entries = []
    if not isinstance(entries, list):
        raise ConfigError("'operators' must be a list of {operator, label, params} mappings")
    entries = [{"operator": e} if isinstance(e, str) else e for e in entries]
    if operators:
        entries = _choose_operators(entries, operators, provenance)
    raw["operators"] = entries
    for override in overrides or []:
        item, flag = override if isinstance(override, tuple) else (override, f"--set {override.strip()}")
        (head, key), value = parse_set(item, sections)
        if head in sections:
            _set_section_value(raw, head, key, value)
            provenance.record((head, key), flag)
        else:
            for index in _operator_targets(entries, head, item, sections):
                entries[index]["params"] = {**(entries[index].get("params") or {}), key: value}
                provenance.record(("operators", index, "params", key), flag)
    return raw, provenance


def _choose_operators(entries: list, operators: list[str], provenance: Provenance) -> list:
    """The entries ``--operator`` names (by label or operator), in its order; an operator the
    file does not list runs with its default parameters (its errors name the flag)."""
    chosen = []
    for name in operators:
        matches = [e for e in entries if isinstance(e, dict) and name in (e.get("label"), e.get("operator"))]
        if not matches:
            provenance.record(("operators", len(chosen)), f"--operator {name}")
            matches = [{"operator": name}]
        chosen.extend(matches)
    return chosen


def _set_section_value(raw: dict, head: str, key: str, value: Any) -> None:
    section = raw.get(head) or {}
    if not isinstance(section, dict):
        raise ConfigError(f"'{head}' must be a mapping")
    section[key] = value
    raw[head] = section


def _operator_targets(entries: list, head: str, item: str, sections: Sequence[str]) -> list[int]:
    """The positions of the entries labelled ``head`` (their operator's name when they have no
    label); ``ConfigError`` when none is."""
    targets = [i for i, e in enumerate(entries) if isinstance(e, dict) and head == (e.get("label") or e.get("operator"))]
    if not targets:
        labels = [e.get("label") or e.get("operator") for e in entries if isinstance(e, dict)]
        raise ConfigError(
            f"--set {item!r}: unknown key '{head}'; use a section ({', '.join(sections)}) "
            f"or an operator label of this job ({', '.join(map(str, labels)) or 'none'})"
        )
    return targets
