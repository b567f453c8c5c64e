"""The ``demucs`` operator: Demucs v4 (HTDemucs) and earlier Demucs models a user holds.

::

    op = get_operator("demucs", repo="~/models/demucs")                  # htdemucs: 4 sources
    op = get_operator("demucs", repo="s3://bucket/demucs", name="htdemucs_6s", two_stems="guitar")

The files are read by :mod:`sepops.demucs_files` (a ``--repo`` folder, demucs 4.1's
safetensors layout, or a single file; never unpickling code), copied once per machine from a
bucket (:func:`sepops.pretrained.local_copy`); the separation is the ``demucs`` package's own
``demucs.apply.apply_model`` with the demucs CLI's parameters, so the stems equal the
package's on the same weights and settings. Audio at other rates is resampled to the model's
and back; any channel count runs through the stereo model (:func:`sepops.pretrained.in_model_channels`).

Long tracks stream in blocks that start on apply_model's chunk grid with a chunk of context each
side, so a block's stems equal the whole track's (the model's own overlap and cross-fade
carry across blocks).
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ..audio import resample
from ..base import Operator
from ..blocks import BlockContext
from ..errors import CheckpointError, OperatorConfigError
from ..pretrained import (
    fit_length,
    grid_context,
    in_model_channels,
    local_copy,
    release_memory,
    resolve_device,
    trim_heap,
)
from ..registry import register
from ..spectral import Analysis

__all__ = ["DemucsConfig", "DemucsOperator"]


@dataclass(frozen=True)
class DemucsConfig:
    """Parameters of the ``demucs`` operator (named as the demucs CLI names them).

    repo : the model: a folder as the demucs CLI's --repo reads it (.th or .safetensors model files, bag .yaml files) or one model file, by local path or any fsspec URI (s3://, gs://).
    name : the bag of models or model signature inside the folder (the CLI's -n); "" picks htdemucs when the folder has it, else its only bag or model.
    segment : seconds of audio per chunk (the CLI's --segment); 0 keeps the model's own, which HTDemucs cannot exceed (7.8 s).
    overlap : the fraction of a chunk shared with the next one, cross-faded (the CLI's --overlap).
    shifts : how many randomly time-shifted copies are separated and averaged (the CLI's --shifts); slower, slightly better; the shifts are seeded, so re-runs give the same stems.
    split : whether the track is separated in chunks (false is the CLI's --no-split; the whole track then goes through the model at once and long tracks are not streamed).
    two_stems : a source to keep, with the other sources summed as no_<source> (the CLI's --two-stems); "" keeps every source.
    jobs : chunks separated in parallel threads on the CPU (the CLI's -j); 0 separates them one after another.
    device : "auto" (CUDA when torch sees it), "cpu" or "cuda".
    threads : torch CPU threads in each worker process (0 leaves torch's setting).
    """

    repo: str = ""
    name: str = ""
    segment: float = 0.0
    overlap: float = 0.25
    shifts: int = 0
    split: bool = True
    two_stems: str = ""
    jobs: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = 0

    def __post_init__(self):
        if not 0 <= self.overlap < 1:
            raise ValueError(f"overlap must be in [0, 1), got {self.overlap}")
        if self.segment < 0 or self.shifts < 0 or self.jobs < 0 or self.threads < 0:
            raise ValueError("segment, shifts, jobs and threads must be >= 0")


@register
class DemucsOperator(Operator):
    """Demucs models (HTDemucs v4, Hybrid Demucs, Demucs) from weights the user holds.

    Stems are the model's own sources (drums, bass, other, vocals; htdemucs_6s adds guitar and
    piano), or a source and its complement with ``two_stems``.
    """

    name = "demucs"
    Config = DemucsConfig
    loads_resources_when_built = True  # __init__'s _load is check_resources' check
    stems_description = "the model's sources (htdemucs: drums, bass, other, vocals), or X and no_X with two_stems"

    def __init__(self, config: DemucsConfig | None = None, /, **params: Any):
        super().__init__(config, **params)
        import torch


        c = self.config
        if c.threads:
            torch.set_num_threads(c.threads)
        self.device = resolve_device(c.device, operator="demucs")
        self.model = _load(c).to(self.device)
        self.sources = list(self.model.sources)
        self.samplerate = int(self.model.samplerate)
        self.channels = int(self.model.audio_channels)
        release_memory()  # the file's tensors, copied into the model, are dropped

    @classmethod
    def check_resources(cls, config: DemucsConfig) -> None:
        # Built to be checked, then dropped: workers build their own once per process.
        _load(config)
        release_memory()

    @property
    def stem_names(self) -> list[str]:
        if self.config.two_stems:
            return [self.config.two_stems, f"no_{self.config.two_stems}"]
        return list(self.sources)

    def _members(self) -> list[Any]:
        return list(getattr(self.model, "models", [self.model]))

    def block_context(self, sr: int) -> BlockContext | None:
        # apply_model puts chunks of `length` samples at 0, stride, 2 stride ... of its input,
        # each seeing only its own samples. A block that starts on that grid has the same
        # chunks as the whole track over the samples it keeps when it also holds every chunk
        # that reaches into them: back to the first one that ends inside the block, (length - 1)
        # // stride strides before it, and forward to the end of the last one starting in it
        # (length - stride after the block). Random shifts move the chunks by up to 0.5 s.
        if not self.config.split:
            return None
        lengths = [int(self.samplerate * (self.config.segment or m.segment)) for m in self._members()]
        strides = [int((1 - self.config.overlap) * n) for n in lengths]
        reach = max(max((n - 1) // s * s, n - s) for n, s in zip(lengths, strides))
        if self.config.shifts:
            reach += int(0.5 * self.samplerate)
        context, align = grid_context(sr, self.samplerate, math.lcm(*strides), reach)
        return BlockContext(context, align)

    def separate(self, audio: np.ndarray, sr: int, *, analysis: Analysis | None = None) -> dict[str, np.ndarray]:
        audio = np.atleast_2d(np.asarray(audio, dtype=np.float32))
        n = audio.shape[1]
        x = resample(audio, sr, self.samplerate)
        out = in_model_channels(x, self.channels, self._apply)  # (sources, channels, n at model rate)
        stems = {name: fit_length(resample(out[i], self.samplerate, sr), n) for i, name in enumerate(self.sources)}
        if not self.config.two_stems:
            return stems
        keep = self.config.two_stems
        rest = sum(s for name, s in stems.items() if name != keep)
        return {keep: stems[keep], f"no_{keep}": np.asarray(rest, dtype=np.float32)}

    def _apply(self, x: np.ndarray) -> np.ndarray:
        """demucs.apply.apply_model on (channels, n) audio at the model's rate -> (sources, channels, n)."""
        import torch
        from demucs.apply import apply_model

        c = self.config
        model = self.model
        members = self._members()
        if len(members) == 1 and all(w == 1 for w in getattr(model, "weights", [[1]])[0]):
            # apply_model's bag path adds the one model's output to a second track-long copy
            # (`0. + out`) and divides it by 1: the model alone gives the same numbers with
            # half the memory (4 sources x 2 channels x 4 bytes, 32 bytes a sample).
            model = members[0]
        state = random.getstate()
        random.seed(0)  # the shifts are drawn from `random`: the same stems on every run
        try:
            with torch.no_grad():
                y = apply_model(
                    model, torch.from_numpy(np.ascontiguousarray(x))[None], shifts=c.shifts, split=c.split,
                    overlap=c.overlap, segment=c.segment or None, device=self.device, num_workers=c.jobs,
                    callback=trim_heap,  # after each chunk: no creeping memory (sepops.pretrained)
                )
        finally:
            random.setstate(state)
        return y[0].float().cpu().numpy()


def _load(config: DemucsConfig) -> Any:
    """The model ``config`` names, checked against its other parameters.

    Raises
    ------
    OperatorConfigError
        Naming the parameter: no repo, a file that cannot be read or loaded safely, a
        ``two_stems`` source the model lacks, a ``segment`` longer than HTDemucs allows.
    """
    from ..demucs_files import load_demucs

    if not config.repo:
        raise OperatorConfigError(
            "operator 'demucs' parameter 'repo': name the folder or file of the demucs model you hold "
            "(sepflow downloads nothing)"
        )
    try:
        model = load_demucs(local_copy(config.repo), config.name)
    except CheckpointError as exc:
        raise OperatorConfigError(f"operator 'demucs' parameter '{exc.param or 'repo'}': {exc}") from None
    sources = list(model.sources)
    if config.two_stems and config.two_stems not in sources:
        raise OperatorConfigError(
            f"operator 'demucs' parameter 'two_stems': {config.two_stems!r} is not a source of this model "
            f"({', '.join(sources)})"
        )
    if config.segment:
        from demucs.htdemucs import HTDemucs

        limits = [float(m.segment) for m in getattr(model, "models", [model]) if isinstance(m, HTDemucs)]
        if limits and config.segment > min(limits):
            raise OperatorConfigError(
                f"operator 'demucs' parameter 'segment': {config.segment} s is longer than the model was "
                f"trained on ({min(limits):.2f} s); use at most that, or 0 for the model's own"
            )
    return model
