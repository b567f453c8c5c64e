"""The YAML configs of ZFTurbo/Music-Source-Separation-Training, read for inference.

A config has the sections ``audio:`` (``sample_rate``, ``chunk_size``), ``model:`` (the
network's keyword arguments), ``training:`` (``instruments``, ``target_instrument``,
``use_amp``) and ``inference:`` (``batch_size``, ``num_overlap``, optionally
``chunk_size``, which wins over ``audio.chunk_size`` as in the reference's ``demix``). The
published configs use ``!!python/tuple``; :func:`sepops.pretrained.load_yaml` reads it as a
tuple and refuses every other unsafe tag.

Which network: ``num_bands`` in ``model:`` means Mel-Band RoFormer, ``freqs_per_bands``
BS-RoFormer; a config with neither is told apart by the checkpoint (only BS-RoFormer has
``final_norm.gamma``).

Stems: without ``training.target_instrument`` the model's ``num_stems`` outputs are
``training.instruments`` in order. With it, the model outputs that one stem, and the
operator adds the rest of the mixture (mixture minus target) as a second stem, named after
the other instrument when ``training.instruments`` lists exactly two (viperx's
``[vocals, other]`` with target ``vocals`` gives ``vocals`` and ``other``), else ``other``
(``rest`` when the target is itself called ``other``).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import CheckpointError
from ..pretrained import load_yaml

__all__ = ["RoformerSpec", "YamlConfigError", "build_model", "load_state", "load_weights", "read_spec", "yaml_beside"]

#: ``model:`` keys of the training code that change nothing at inference (dropout, loss,
#: memory-saving recomputation, attention kernels that compute the same softmax attention).
IGNORED_KEYS = frozenset({
    "attn_dropout", "ff_dropout", "flash_attn", "use_torch_checkpoint", "sage_attention", "dim_freqs_in",
    "multi_stft_resolution_loss_weight", "multi_stft_resolutions_window_sizes", "multi_stft_hop_size",
    "multi_stft_normalized", "multi_stft_window_fn",
})
COMMON_KEYS = frozenset({
    "dim", "depth", "stereo", "num_stems", "time_transformer_depth", "freq_transformer_depth",
    "linear_transformer_depth", "dim_head", "heads", "stft_n_fft", "stft_hop_length", "stft_win_length",
    "stft_normalized", "zero_dc", "mask_estimator_depth", "mlp_expansion_factor", "skip_connection",
})
MODEL_KEYS = {
    "bs_roformer": COMMON_KEYS | {"freqs_per_bands"},
    "mel_band_roformer": COMMON_KEYS | {"num_bands", "sample_rate", "match_input_audio_length"},
}
#: Keys that change inference in a way this code does not implement: refused when set.
UNSUPPORTED = {
    "use_pope": "PoPE position embeddings",
    "stft_window_fn": "a custom STFT window function",
}


class YamlConfigError(CheckpointError):
    """The YAML config is unreadable or describes something this code cannot run."""


@dataclass(frozen=True)
class RoformerSpec:
    """What a YAML config says, as inference needs it.

    ``kind`` is ``"bs_roformer"`` or ``"mel_band_roformer"``; ``model_kwargs`` the network's
    keyword arguments (ignored keys dropped); ``model_stems`` the names of the network's
    outputs; ``complement`` the name of the mixture-minus-target stem, or ``None``.
    """

    kind: str
    model_kwargs: dict
    sample_rate: int
    chunk_size: int
    num_overlap: int
    batch_size: int
    model_stems: tuple[str, ...]
    complement: str | None
    use_amp: bool

    @property
    def stem_names(self) -> list[str]:
        return [*self.model_stems, *([self.complement] if self.complement else [])]

    @property
    def stereo(self) -> bool:
        return bool(self.model_kwargs.get("stereo", False))


def read_spec(path: str | Path, state_keys: Iterable[str] = ()) -> RoformerSpec:
    """Read the YAML at ``path``; ``state_keys`` (the checkpoint's) tell the network apart
    when the ``model:`` section does not.

    Raises
    ------
    YamlConfigError
        Unreadable, an unsafe tag, a missing section or value, unknown or unsupported
        ``model:`` keys, or stems that do not fit ``num_stems``.
    """
    try:
        raw = load_yaml(path)
    except CheckpointError as exc:
        raise YamlConfigError(str(exc)) from None
    sections = {}
    for name in ("audio", "model", "training", "inference"):
        value = raw.get(name) if isinstance(raw, dict) else None
        if not isinstance(value, dict):
            raise YamlConfigError(f"{path}: no '{name}:' section (not a Music-Source-Separation-Training config)")
        sections[name] = value
    audio, model, training, inference = (sections[k] for k in ("audio", "model", "training", "inference"))
    kind = _kind(path, model, set(state_keys))
    kwargs = _model_kwargs(path, kind, model)
    model_stems, complement = _stems(path, training, int(kwargs.get("num_stems", 1)))
    chunk = inference.get("chunk_size", audio.get("chunk_size"))
    values = {"sample_rate": audio.get("sample_rate", 44100), "chunk_size": chunk,
              "num_overlap": inference.get("num_overlap"), "batch_size": inference.get("batch_size", 1)}
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise YamlConfigError(f"{path}: {name} must be a positive integer, got {v!r}")
    if values["num_overlap"] > values["chunk_size"]:
        raise YamlConfigError(f"{path}: inference.num_overlap is larger than the chunk size")
    return RoformerSpec(kind=kind, model_kwargs=kwargs, model_stems=model_stems, complement=complement,
                        use_amp=bool(training.get("use_amp", True)), **values)


def _kind(path: Any, model: dict, state_keys: set[str]) -> str:
    if "num_bands" in model and "freqs_per_bands" not in model:
        return "mel_band_roformer"
    if "freqs_per_bands" in model and "num_bands" not in model:
        return "bs_roformer"
    if not ("num_bands" in model or "freqs_per_bands" in model) and state_keys:
        return "bs_roformer" if "final_norm.gamma" in state_keys else "mel_band_roformer"
    raise YamlConfigError(
        f"{path}: cannot tell the network: the 'model:' section should have 'num_bands' "
        "(Mel-Band RoFormer) or 'freqs_per_bands' (BS-RoFormer), not both or neither"
    )


def _model_kwargs(path: Any, kind: str, model: dict) -> dict:
    for key, what in UNSUPPORTED.items():
        if model.get(key):
            raise YamlConfigError(f"{path}: model.{key} asks for {what}, which sepflow does not implement")
    unknown = sorted(set(model) - MODEL_KEYS[kind] - IGNORED_KEYS - set(UNSUPPORTED))
    if unknown:
        raise YamlConfigError(
            f"{path}: unknown {kind} model key(s) {', '.join(unknown)} (sepflow does not know what they change)"
        )
    kwargs = {k: v for k, v in model.items() if k in MODEL_KEYS[kind]}
    if "dim" not in kwargs or "depth" not in kwargs:
        raise YamlConfigError(f"{path}: model.dim and model.depth are needed")
    return kwargs


def _stems(path: Any, training: dict, num_stems: int) -> tuple[tuple[str, ...], str | None]:
    instruments = training.get("instruments")
    if not isinstance(instruments, (list, tuple)) or not instruments or not all(isinstance(i, str) for i in instruments):
        raise YamlConfigError(f"{path}: training.instruments must be a list of stem names")
    instruments = tuple(instruments)
    target = training.get("target_instrument")
    if target:
        if num_stems != 1:
            raise YamlConfigError(f"{path}: training.target_instrument {target!r} needs num_stems 1, got {num_stems}")
        others = [i for i in instruments if i != target]
        if len(instruments) == 2 and len(others) == 1:
            return (target,), others[0]
        return (target,), "rest" if target == "other" else "other"
    if num_stems != len(instruments):
        raise YamlConfigError(
            f"{path}: model.num_stems is {num_stems} but training.instruments lists {len(instruments)} "
            "(and no training.target_instrument is set)"
        )
    if len(set(instruments)) != len(instruments):
        raise YamlConfigError(f"{path}: training.instruments repeats a name")
    return instruments, None


def build_model(spec: RoformerSpec):
    """The network of ``spec``, random weights, in eval mode on the CPU.

    Raises
    ------
    YamlConfigError
        The ``model:`` values are of the wrong type or inconsistent (bands and STFT size).
    """
    from .model import BSRoformer, MelBandRoformer

    cls = BSRoformer if spec.kind == "bs_roformer" else MelBandRoformer
    try:
        return cls(**spec.model_kwargs).eval()
    except (TypeError, ValueError, RuntimeError) as exc:
        raise YamlConfigError(f"model: section cannot build a {spec.kind}: {exc}") from None


# ---------------------------------------------------------------------------------------------
# Checkpoints

#: Wrappers the training code's loader unwraps (``torch.save`` of a whole training state).
WRAPPERS = ("state", "state_dict", "model_state_dict", "model")


def yaml_beside(checkpoint: str) -> str:
    """The ``.yaml`` with ``checkpoint``'s base name beside it (a path or a URI)."""
    head, _, name = str(checkpoint).rpartition("/")
    stem = name.rsplit(".", 1)[0] if "." in name else name
    return f"{head}/{stem}.yaml" if head else f"{stem}.yaml"


def load_state(path: str | Path) -> dict:
    """The state dict in the file at ``path`` (``.safetensors`` or a torch checkpoint, read
    with ``weights_only``), unwrapped from ``state`` / ``state_dict`` / ``model_state_dict``
    / ``model`` and a DataParallel ``module.`` prefix, as the training code's loader does.

    Raises
    ------
    CheckpointError
        Unreadable, refused by the safe loader, or not a dict of tensors.
    """
    import torch

    from ..pretrained import safe_torch_load

    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except Exception as exc:  # noqa: BLE001 - a truncated or foreign file: one line
            raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None
    else:
        state = safe_torch_load(path)
    for key in WRAPPERS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: holds no state dict of tensors")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def load_weights(model, state: dict, spec: RoformerSpec, where: str) -> None:
    """``model.load_state_dict(state, strict=True)``, a mismatch said in one sentence.

    Raises
    ------
    CheckpointError
        Naming how many keys are missing, unexpected or of another shape (with examples) and
        the YAML's main model values.
    """
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} vs {expected[k]}" for k in expected
              if k in state and tuple(state[k].shape) != expected[k]]
    problems = [f"{len(keys)} {what} such as {', '.join(keys[:2])}"
                for keys, what in ((unexpected, "unexpected keys"), (missing, "missing keys"),
                                   (shapes, "keys of another shape (checkpoint vs YAML)")) if keys]
    if problems:
        m = spec.model_kwargs
        summary = ", ".join(f"{k} {m[k]}" for k in ("dim", "depth", "num_stems", "num_bands") if k in m)
        raise CheckpointError(
            f"{where}: the checkpoint does not match the YAML ({spec.kind}, {summary} in the YAML): "
            + "; ".join(problems)
        )
    model.load_state_dict(state, strict=True)
