"""The ``ensemble`` operator: the stems of several operators combined, as UVR's ensemble modes.

::

    op = get_operator("ensemble", mode="max_spectrogram", members=[
        {"operator": "roformer", "params": {"checkpoint": "bs_roformer.ckpt"}},
        {"operator": "demucs", "params": {"repo": "models/", "two_stems": "vocals"}, "weight": 0.5},
    ])

Members are any registered operators (not oracles, not ensembles) that share stem names; the
ensemble's stems are the names they all have, in the first member's order. Modes:

- ``average_waveform``: the weighted mean of the members' waveforms (UVR's "Avg Wave").
- ``max_spectrogram`` / ``min_spectrogram``: per time-frequency bin, the member's STFT value
  with the largest / smallest magnitude, its phase kept (UVR's "Max Spec" / "Min Spec": max
  keeps the most of a stem, min the least bleed).
- ``average_spectrogram``: per bin, the weighted mean of the magnitudes, with the phase of the
  weighted mean of the complex values (UVR's "Avg Spec").
"""
from __future__ import annotations

import copy
import math
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, fields, replace
from typing import Any, Literal

import numpy as np

from ..base import Operator
from ..blocks import BlockContext
from ..errors import OperatorConfigError
from ..registry import operator_class, register
from ..spectral import Analysis, StftConfig, istft, stft

__all__ = ["EnsembleConfig", "EnsembleOperator"]

_MEMBER_KEYS = ("operator", "params", "weight")


@dataclass(frozen=True)
class EnsembleConfig:
    """Parameters of the ``ensemble`` operator.

    members : the operators combined, a list of {operator: NAME, params: {...}, weight: W}; weight (default 1) counts in the average modes only.
    mode : average_waveform (weighted mean of the waveforms), average_spectrogram (weighted mean of the STFT magnitudes), max_spectrogram or min_spectrogram (per STFT bin, the member with the largest or smallest magnitude).
    n_fft : the STFT frame length of the spectrogram modes, samples.
    hop_length : the STFT hop of the spectrogram modes, samples.
    """

    members: tuple[Any, ...] = ()
    mode: Literal["average_waveform", "average_spectrogram", "max_spectrogram", "min_spectrogram"] = "average_waveform"
    n_fft: int = 2048
    hop_length: int = 512

    def __post_init__(self):
        if len(self.members) < 2:
            raise ValueError("members needs at least two operators ({operator: NAME, params: {...}} each)")
        StftConfig(self.n_fft, self.hop_length, "hann")


def _member(entry: Any, index: int) -> dict:
    """A member entry checked and completed: its operator's full, validated parameters."""
    where = f"operator 'ensemble' parameter 'members[{index}]'"
    if isinstance(entry, str):
        entry = {"operator": entry}
    if not isinstance(entry, dict) or not isinstance(entry.get("operator"), str):
        raise OperatorConfigError(f"{where}: expected {{operator: NAME, params: {{...}}, weight: W}}, got {entry!r}")
    unknown = sorted(set(entry) - set(_MEMBER_KEYS))
    if unknown:
        raise OperatorConfigError(f"{where}: unknown key {', '.join(unknown)}; valid keys: {', '.join(_MEMBER_KEYS)}")
    try:
        cls = operator_class(entry["operator"])
        if cls.needs_references or cls is EnsembleOperator:
            raise OperatorConfigError(f"operator {cls.name!r} cannot be a member (an oracle or an ensemble)")
        config = cls.make_config(**dict(entry.get("params") or {}))
    except OperatorConfigError as exc:
        raise OperatorConfigError(f"{where}: {exc}") from None
    weight = entry.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight > 0:
        raise OperatorConfigError(f"{where}: weight must be a number > 0, got {weight!r}")
    params = {f.name: getattr(config, f.name) for f in fields(config)}
    return {"operator": cls.name, "params": _plain(params), "weight": float(weight)}


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value.item() if isinstance(value, np.generic) else value


@register
class EnsembleOperator(Operator):
    """Several operators' stems combined per stem: averaged waveforms, or the average, max
    or min of their spectrograms (UVR's ensemble modes)."""

    name = "ensemble"
    Config = EnsembleConfig
    stems_description = "the stem names all members share"

    def __init__(self, config: EnsembleConfig | None = None, /, **params: Any):
        super().__init__(config, **params)
        self.members = [operator_class(m["operator"])(**m["params"]) for m in self.config.members]
        self.weights = [m["weight"] for m in self.config.members]
        self._stems = _common_stems(self.members)

    @classmethod
    def make_config(cls, **params: Any) -> EnsembleConfig:
        config = super().make_config(**params)
        config = replace(config, members=tuple(_member(m, i) for i, m in enumerate(config.members)))
        # Built once here so that members without a common stem stop a job before it starts.
        _common_stems([operator_class(m["operator"])(**m["params"]) for m in config.members])
        return config

    @property
    def stem_names(self) -> list[str]:
        return list(self._stems)

    @property
    def works_in_blocks(self) -> bool:
        return all(m.works_in_blocks for m in self.members)

    def stft_config(self) -> StftConfig:
        return StftConfig(self.config.n_fft, self.config.hop_length, "hann")

    def block_context(self, sr: int) -> BlockContext | None:
        # Blocks start where every member's grid (and the STFT's hop) does, with the most
        # context any member asks for; windowed members keep their cross-fade.
        specs = [m.block_context(sr) for m in self.members]
        if any(s is None for s in specs):
            return None
        align = math.lcm(*(max(1, int(s.align)) for s in specs))
        context = max(s.context for s in specs)
        if self.config.mode != "average_waveform":
            align = math.lcm(align, self.config.hop_length)
            context += self.config.n_fft
        return BlockContext(-(-context // align) * align, align, max(s.crossfade for s in specs))

    def fit_stream(self, passes: Callable[[], AbstractContextManager[Any]]) -> Operator:
        fitted = copy.copy(self)
        fitted.members = [m.fit_stream(passes) for m in self.members]
        return fitted

    def separate(self, audio: np.ndarray, sr: int, *, analysis: Analysis | None = None) -> dict[str, np.ndarray]:
        an = self._analysis(audio, sr, analysis)
        return self._combine([m.separate(an.audio, sr, analysis=an) for m in self.members], an.audio.shape[1])

    def separate_block(self, audio: np.ndarray, sr: int, *, keep: tuple[int, int]) -> dict[str, np.ndarray]:
        return self._combine([m.separate_block(audio, sr, keep=keep) for m in self.members], audio.shape[1])

    def _combine(self, outputs: list[dict[str, np.ndarray]], n: int) -> dict[str, np.ndarray]:
        w = np.asarray(self.weights, dtype=np.float32) / np.float32(sum(self.weights))
        if self.config.mode == "average_waveform":
            return {s: sum(wi * o[s] for wi, o in zip(w, outputs)).astype(np.float32) for s in self._stems}
        cfg = self.stft_config()
        stems = {}
        for s in self._stems:
            specs = np.stack([stft(o[s], cfg.n_fft, cfg.hop_length) for o in outputs])  # (members, C, F, T)
            stems[s] = istft(_combine_spectra(specs, w, self.config.mode), cfg.n_fft, cfg.hop_length, length=n)
        return stems


def _combine_spectra(specs: np.ndarray, weights: np.ndarray, mode: str) -> np.ndarray:
    """Members' complex STFTs (members, C, F, T) -> one (C, F, T), per ``mode``."""
    mags = np.abs(specs)
    if mode in ("max_spectrogram", "min_spectrogram"):
        pick = mags.argmax(axis=0) if mode == "max_spectrogram" else mags.argmin(axis=0)
        return np.take_along_axis(specs, pick[None], axis=0)[0]
    w = weights[:, None, None, None]
    mean = (w * specs).sum(axis=0)
    phase = np.where(np.abs(mean) > 0, mean / np.maximum(np.abs(mean), 1e-30), specs[0] / np.maximum(mags[0], 1e-30))
    return ((w * mags).sum(axis=0) * phase).astype(np.complex64)


def _common_stems(members: list[Operator]) -> list[str]:
    names = [m.stem_names for m in members]
    common = [s for s in names[0] if all(s in other for other in names[1:])]
    if not common:
        listed = "; ".join(f"{m.name}: {', '.join(n)}" for m, n in zip(members, names))
        raise OperatorConfigError(f"operator 'ensemble' parameter 'members': the members share no stem name ({listed})")
    return common
