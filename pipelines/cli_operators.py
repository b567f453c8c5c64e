"""``sepflow operators``: every registered operator with its stems and parameters, as text or
JSON, documented from the operator's own docstrings (its class's first paragraph, its config
class's ``name : text`` entries)."""
from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import textwrap
import typing

from .errors import EXIT_OK, EXIT_USAGE

__all__ = ["add_arguments", "describe_operator", "main", "parameter_docs"]

#: Columns of the text listing.
WIDTH = 88


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``sepflow operators``."""
    parser.add_argument("name", nargs="?", help="show one operator only")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def main(args: argparse.Namespace, _beam_args: list[str] = ()) -> int:
    """Run ``sepflow operators`` (the handler's signature: it takes no Beam options); return
    0, or 2 with one line on stderr for an unknown operator."""
    from sepops import OperatorConfigError, list_operators, resources
    from sepops.registry import operator_class

    described = []
    for name in [args.name] if args.name else list_operators():
        try:
            cls = operator_class(name)
        except OperatorConfigError as exc:
            print(f"sepflow operators: {exc}", file=sys.stderr)
            return EXIT_USAGE
        described.append(describe_operator(name, cls))
    shipped = {kind: resources.shipped(kind) for kind in resources.KINDS}
    for d in described:  # what a parameter of it may name
        d["shipped"] = {
            "nmf": {"dictionary": shipped["nmf_dictionary"]}, "unet": {"model": shipped["unet_model"]},
        }.get(d["name"], {})
    if args.json:
        print(json.dumps(described, indent=1, default=str))
        return EXIT_OK
    for d in described:
        print(_operator_text(d))
    if not args.name or args.name in ("nmf", "unet"):
        print("shipped resources (a parameter may also name a path or URI of your own):")
        print(f"    nmf dictionary= {', '.join(shipped['nmf_dictionary'])}")
        print(f"    unet model=     {', '.join(shipped['unet_model'])}")
    return EXIT_OK


def describe_operator(name: str, cls: type) -> dict:
    """One operator as ``sepflow operators --json`` lists it: name, doc, whether it needs the
    true stems, its stems and its parameters (name, type, default, help)."""
    hints = typing.get_type_hints(cls.Config)
    helps = parameter_docs(cls.Config)
    automatic = getattr(cls.Config, "automatic_stft", False)
    params = []
    for f in dataclasses.fields(cls.Config):
        default = f.default if f.default is not dataclasses.MISSING else None
        if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        text = helps.get(f.name, "")
        if f.name in ("n_fft", "hop_length") and not automatic:
            text += " 0 is not allowed here (it means automatic only for nmf)."
        params.append({"name": f.name, "type": _type_name(hints[f.name]), "default": default, "help": text.strip()})
    return {
        "name": name, "doc": _plain(_first_paragraph(cls.__doc__)), "needs_references": cls.needs_references,
        "stems": _stem_names(cls), "params": params,
    }


def _operator_text(d: dict) -> str:
    """One operator of the text listing, ending in an empty line."""
    note = "  (oracle: needs the true stems, not for catalogs)" if d["needs_references"] else ""
    lines = [f"{d['name']}{note}"]
    if d["doc"]:
        lines.append(textwrap.indent(textwrap.fill(d["doc"], WIDTH - 4), "    "))
    lines.append(textwrap.indent(textwrap.fill(f"stems: {d['stems']}", WIDTH - 4), "    "))
    lines.append("    parameters:")
    for p in d["params"]:
        head = f"{p['name']} ({p['type']}, default {p['default']!r})"
        lines.append(textwrap.fill(
            f"{head}: {p['help']}" if p["help"] else head, WIDTH, initial_indent="      ", subsequent_indent="          "
        ))
    return "\n".join(lines) + "\n"


def _type_name(tp) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        return " | ".join(map(str, args))
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        return " | ".join("null" if a is type(None) else _type_name(a) for a in args)
    if origin in (tuple, list):
        return f"list of {_type_name(args[0])}" if args else "list"
    return getattr(tp, "__name__", str(tp)).replace("typing.", "")


def _first_paragraph(doc: str | None) -> str:
    """A docstring's first paragraph as one line (never cut mid-sentence)."""
    lines = []
    for line in (doc or "").strip().splitlines():
        if not line.strip():
            break
        lines.append(line.strip())
    return " ".join(lines)


def parameter_docs(config_cls: type) -> dict[str, str]:
    """``name : text`` entries of a config class's docstring (and its bases'), by parameter;
    an entry naming several (``min_period_s, max_period_s : ...``) serves each."""
    docs: dict[str, str] = {}
    for cls in reversed(config_cls.__mro__):
        current: list[str] | None = None
        for line in (cls.__doc__ or "").splitlines():
            stripped = line.strip()
            entry = re.match(r"^([a-z_][a-z0-9_]*(?:, [a-z_][a-z0-9_]*)*) : (.*)$", stripped)
            if entry and line.startswith("    ") and not line.startswith("     "):
                current = [entry.group(2)]
                for name in entry.group(1).split(", "):
                    docs[name] = current  # shared list: continuation lines reach every name
            elif current is not None and stripped and line.startswith("        "):
                current.append(stripped)
            else:
                current = None
    return {name: _plain(" ".join(parts)) for name, parts in docs.items()}


def _plain(text: str) -> str:
    """reST markup read as plain text: ``x`` and :func:`x` -> x."""
    return re.sub(r":\w+:`~?([^`]+)`", r"\1", text).replace("``", "")


def _stem_names(cls) -> str:
    """What the operator's stems are called, in words."""
    if cls.needs_references:
        return "the names of the true stems it is given"
    described = getattr(cls, "stems_description", None)
    if described:
        return described
    try:
        return ", ".join(cls().stem_names) or "(named when fitted)"
    except Exception:  # noqa: BLE001 - a default that cannot be built here (a model missing)
        return "(see the parameters)"
