"""Demucs models as users hold them, loaded without running code from the files.

What ``demucs`` itself reads, and so what this module reads:

- a **model folder**, as the demucs CLI's ``--repo`` reads it: one file per model named by its
  signature, ``<sig>.th`` or ``<sig>-<sha256 prefix>.th`` (the prefix is checked), and bags of
  models, ``<name>.yaml`` (``models: [sig, ...]``, optional ``weights`` and ``segment``);
- the **safetensors layout** of demucs 4.1 (one folder per named model: ``<name>.yaml`` plus
  ``<sig>.safetensors``, the class and its arguments as JSON in the file's metadata), which
  may sit in the same folder;
- a **single model file** (``.th`` or ``.safetensors``);
- model files alone, named by a bag the demucs package ships (``htdemucs_ft`` is four
  ``.th`` files; the package's ``remote/htdemucs_ft.yaml`` says which).

demucs's own loaders unpickle with ``weights_only=False`` and import whatever module a file's
metadata names. Here a ``.th`` is read with ``torch.load(weights_only=True)`` allowing only
the demucs model classes below and ``fractions.Fraction`` (HTDemucs's ``segment``), and a
safetensors file's class must be one of the same classes, by name. Quantized models (diffq)
are refused: restoring them needs diffq, which is not installed.
"""
from __future__ import annotations

import hashlib
import inspect
import io
import json
from fractions import Fraction
from pathlib import Path
from typing import Any

from .errors import CheckpointError
from .pretrained import load_yaml, safe_torch_load

__all__ = ["MODEL_CLASSES", "available_models", "load_demucs", "save_bag", "save_model"]

#: The model classes a demucs file may name, by their import path.
MODEL_CLASSES = ("demucs.htdemucs.HTDemucs", "demucs.hdemucs.HDemucs", "demucs.demucs.Demucs")
_SUFFIXES = (".th", ".safetensors")


def _classes() -> dict[str, type]:
    from demucs.demucs import Demucs
    from demucs.hdemucs import HDemucs
    from demucs.htdemucs import HTDemucs

    return {f"{c.__module__}.{c.__name__}": c for c in (HTDemucs, HDemucs, Demucs)}


def _signature(path: Path) -> tuple[str, str | None]:
    """A model file's signature and, for ``<sig>-<checksum>.th``, the checksum."""
    if path.suffix == ".th" and "-" in path.stem:
        sig, checksum = path.stem.rsplit("-", 1)
        return sig, checksum
    return path.stem, None


def available_models(folder: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """The model files (by signature) and bags (by name) in ``folder``."""
    models: dict[str, Path] = {}
    bags: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix in _SUFFIXES and path.is_file():
            sig, _ = _signature(path)
            if sig in models:
                raise CheckpointError(f"{folder}: two files for model {sig}: {models[sig].name}, {path.name}")
            models[sig] = path
        elif path.suffix == ".yaml" and path.is_file():
            bags[path.stem] = path
    return models, bags


def load_demucs(path: Path, name: str = "") -> Any:
    """The model (a demucs ``Model`` or ``BagOfModels``, in eval mode on the CPU) that
    ``path`` and ``name`` designate.

    Parameters
    ----------
    path : Path
        A model folder or a single model file (local; see :func:`sepops.pretrained.local_copy`).
    name : str
        In a folder, the bag name or model signature (as the demucs CLI's ``-n``); "" picks
        ``htdemucs`` when the folder has it, else the folder's only bag, else its only model.

    Raises
    ------
    CheckpointError
        One line naming the file: nothing of that name, a file that is not a demucs model, a
        class outside :data:`MODEL_CLASSES`, a quantized model, or weights that do not fit.
    """
    if path.is_file():
        if path.suffix not in _SUFFIXES:
            raise CheckpointError(f"{path}: a demucs model file ends in .th or .safetensors")
        return _load_model(path).eval()
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such file or folder")
    models, bags = available_models(path)
    name = name or _default_name(path, models, bags)
    if name in bags:
        return _load_bag(bags[name], models).eval()
    if name in models:
        return _load_model(models[name]).eval()
    known = ", ".join(sorted(bags) + sorted(models)) or "none"
    published = _published_bag(name)
    if published is not None:  # e.g. the four htdemucs_ft files without their .yaml
        sigs = (load_yaml(published) or {}).get("models", [])
        if all(sig in models for sig in sigs):
            return _load_bag(published, models).eval()
        raise CheckpointError(
            f"{path}: {name} is the demucs bag of {', '.join(sigs)}, whose files are not all there (there: {known})",
            param="name",
        )
    raise CheckpointError(f"{path}: no model or bag named {name!r} (there: {known})", param="name")


def _published_bag(name: str) -> Path | None:
    """The bag ``<name>.yaml`` that the demucs package ships (its ``remote/`` folder: which
    signatures make htdemucs, htdemucs_ft, htdemucs_6s ...), for a folder that holds the
    model files without it."""
    import importlib.util

    spec = importlib.util.find_spec("demucs")
    if spec is None or not spec.submodule_search_locations or "/" in name or not name:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "remote" / f"{name}.yaml"
    return path if path.is_file() else None


def _default_name(folder: Path, models: dict[str, Path], bags: dict[str, Path]) -> str:
    if "htdemucs" in bags or "htdemucs" in models:
        return "htdemucs"
    if len(bags) == 1:
        return next(iter(bags))
    if not bags and len(models) == 1:
        return next(iter(models))
    known = ", ".join(sorted(bags) + sorted(models)) or "none"
    raise CheckpointError(f"{folder}: several models or none, name one with 'name' (there: {known})", param="name")


def _load_bag(yaml_path: Path, models: dict[str, Path]) -> Any:
    from demucs.apply import BagOfModels

    bag = load_yaml(yaml_path)
    if not isinstance(bag, dict) or not isinstance(bag.get("models"), list) or not bag["models"]:
        raise CheckpointError(f"{yaml_path}: not a demucs bag of models (a 'models' list of signatures)")
    missing = [sig for sig in bag["models"] if sig not in models]
    if missing:
        raise CheckpointError(f"{yaml_path.name}: model {missing[0]} is not in the folder (a {missing[0]}-*.th or .safetensors file)")
    members = [_load_model(models[sig]) for sig in bag["models"]]
    try:
        return BagOfModels(members, bag.get("weights"), bag.get("segment"))
    except AssertionError:
        raise CheckpointError(f"{yaml_path}: its models' sources, rates or weights do not agree") from None


def _load_model(path: Path) -> Any:
    if path.suffix == ".safetensors":
        klass, args, kwargs, state = _read_safetensors(path)
    else:
        klass, args, kwargs, state = _read_th(path)
    if state.get("__quantized"):
        raise CheckpointError(f"{path}: a quantized (diffq) model; sepflow runs the unquantized ones")
    # As demucs.states.load_model: drop arguments the installed class no longer has.
    params = inspect.signature(klass).parameters
    kwargs = {k: v for k, v in kwargs.items() if k in params}
    try:
        model = klass(*args, **kwargs)
        model.load_state_dict(state)
    except Exception as exc:  # noqa: BLE001 - any mismatch: the file does not fit its class
        first = str(exc).strip().splitlines()[0][:300]
        raise CheckpointError(f"{path}: the weights do not fit {klass.__name__} ({first})") from None
    return model


def _read_th(path: Path) -> tuple[type, list, dict, dict]:
    _, checksum = _signature(path)
    if checksum is not None:
        sha = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                sha.update(chunk)
        digest = sha.hexdigest()
        if not digest.startswith(checksum):
            raise CheckpointError(f"{path}: checksum mismatch (the name says {checksum}, the file is {digest[:8]})")
    classes = _classes()
    package = safe_torch_load(path, allowlist=[*classes.values(), Fraction])
    if not isinstance(package, dict) or not {"klass", "state"} <= set(package):
        raise CheckpointError(f"{path}: not a demucs model package (no 'klass' and 'state')")
    klass = package["klass"]
    if klass not in classes.values():
        raise CheckpointError(f"{path}: names {klass!r}, not a demucs model class")
    return klass, list(package.get("args") or []), dict(package.get("kwargs") or {}), package["state"]


def _read_safetensors(path: Path) -> tuple[type, list, dict, dict]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None
    if "structure" in meta:
        raise CheckpointError(f"{path}: a quantized (diffq) model; sepflow runs the unquantized ones")
    klass = _classes().get(meta.get("klass", ""))
    if klass is None:
        raise CheckpointError(
            f"{path}: its metadata names class {meta.get('klass')!r}; allowed: {', '.join(MODEL_CLASSES)}"
        )
    try:
        args = _decode(json.loads(meta.get("args", "[]")))
        kwargs = _decode(json.loads(meta.get("kwargs", "{}")))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: its metadata is not JSON ({exc})") from None
    return klass, list(args), dict(kwargs), state


def _decode(value: Any) -> Any:
    """The JSON of demucs 4.1's safetensors metadata: fractions as ``{"_type": "fraction"}``."""
    if isinstance(value, dict):
        if value.get("_type") == "fraction":
            return Fraction(value["numerator"], value["denominator"])
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def save_model(model: Any, folder: Path, sig: str, *, checksum: bool = True) -> Path:
    """Write ``model`` (a demucs model built by its class, which records its arguments) as
    ``<folder>/<sig>-<sha256 prefix>.th`` (or ``<sig>.th``), the package demucs's own
    ``save_with_checksum`` writes and its ``--repo`` reads; tensors and the class only.
    """
    import torch

    args, kwargs = model._init_args_kwargs
    package = {
        "klass": type(model), "args": list(args), "kwargs": dict(kwargs),
        "state": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}, "training_args": {},
    }
    buf = io.BytesIO()
    torch.save(package, buf)
    name = f"{sig}-{hashlib.sha256(buf.getvalue()).hexdigest()[:8]}.th" if checksum else f"{sig}.th"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(buf.getvalue())
    return folder / name


def save_bag(folder: Path, name: str, sigs: list[str], weights: list | None = None, segment: float | None = None) -> Path:
    """Write ``<folder>/<name>.yaml``, a bag of the models ``sigs`` as demucs's ``--repo`` reads it."""
    import yaml

    bag: dict[str, Any] = {"models": list(sigs)}
    if weights is not None:
        bag["weights"] = weights
    if segment is not None:
        bag["segment"] = segment
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(bag))
    return path
