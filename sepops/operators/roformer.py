"""The ``roformer`` operator: BS-RoFormer and Mel-Band RoFormer checkpoints a user holds.

The checkpoints and YAML configs of ZFTurbo/Music-Source-Separation-Training (viperx's
``model_bs_roformer_ep_317_sdr_12.9755``, KimberleyJensen's Mel-Band RoFormer vocals ...)
run unchanged::

    op = get_operator("roformer", checkpoint="s3://models/model_bs_roformer_ep_317_sdr_12.9755.ckpt")
    stems = op.separate(audio, sr)          # {"vocals": ..., "other": ...}

The network and its chunked inference are :mod:`sepops.roformer`; see docs/roformer.md.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..audio import resample
from ..base import Operator
from ..blocks import BlockContext
from ..errors import CheckpointError, OperatorConfigError
from ..pretrained import (
    fit_length,
    grid_context,
    in_model_channels,
    release_memory,
    resolve_device,
)
from ..registry import register
from ..spectral import Analysis

__all__ = ["RoformerConfig", "RoformerOperator"]



@dataclass(frozen=True)
class RoformerConfig:
    """Parameters of the ``roformer`` operator.

    checkpoint : path or fsspec URI of the weights (.ckpt, .pt, .pth or .safetensors).
    config : path or URI of the YAML config ("" means the .yaml with the checkpoint's base name beside it).
    device : "auto" (CUDA when torch sees one), "cpu" or "cuda".
    threads : torch CPU threads (0 leaves torch's setting).
    batch_size : chunks per forward pass (0 means the YAML's inference.batch_size).
    num_overlap : chunks per sample, chunks starting every chunk_size // num_overlap samples (0 means the YAML's).
    chunk_size : samples per chunk at the model's rate (0 means the YAML's).
    """

    checkpoint: str = ""
    config: str = ""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = 0
    batch_size: int = 0
    num_overlap: int = 0
    chunk_size: int = 0

    def __post_init__(self):
        for name in ("threads", "batch_size", "num_overlap", "chunk_size"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (0: the default), got {getattr(self, name)}")
        if self.num_overlap and self.chunk_size and self.num_overlap > self.chunk_size:
            raise ValueError("num_overlap must be at most chunk_size")


def _load(c: RoformerConfig):
    """(model on the CPU with the checkpoint's weights, spec) of a config.

    Raises
    ------
    OperatorConfigError
        Naming ``checkpoint`` or ``config``, whichever is at fault.
    """
    from ..pretrained import local_copy
    from ..roformer import (
        YamlConfigError,
        build_model,
        load_state,
        load_weights,
        read_spec,
        yaml_beside,
    )

    if not c.checkpoint:
        raise OperatorConfigError(
            "operator 'roformer' parameter 'checkpoint': give the path or URI of a .ckpt / .pt / .pth / "
            ".safetensors file (its YAML config beside it, or in 'config')"
        )
    param = "checkpoint"
    try:
        ckpt = local_copy(c.checkpoint)
        state = load_state(ckpt)
        param = "config"
        yaml_uri = c.config or yaml_beside(c.checkpoint)
        spec = read_spec(local_copy(yaml_uri), state.keys())
        model = build_model(spec)
        param = "checkpoint"
        load_weights(model, state, spec, str(c.checkpoint))
    except YamlConfigError as exc:
        raise OperatorConfigError(f"operator 'roformer' parameter 'config': {exc}") from None
    except CheckpointError as exc:
        raise OperatorConfigError(f"operator 'roformer' parameter '{param}': {exc}") from None
    return model, _overridden(spec, c)


def _overridden(spec, c: RoformerConfig):
    import dataclasses

    changes = {k: getattr(c, k) for k in ("batch_size", "num_overlap", "chunk_size") if getattr(c, k)}
    spec = dataclasses.replace(spec, **changes)
    if spec.num_overlap > spec.chunk_size:
        raise OperatorConfigError(
            f"operator 'roformer' parameter 'num_overlap': {spec.num_overlap} is more than the chunk size {spec.chunk_size}"
        )
    return spec


@register
class RoformerOperator(Operator):
    """BS-RoFormer / Mel-Band RoFormer separation with a Music-Source-Separation-Training
    checkpoint and its YAML config, chunked as that code's inference does.

    Stems are the YAML's ``training.instruments``; with ``training.target_instrument`` the
    target and the rest of the mixture (named after the other instrument when there are
    two, else ``other``). Audio at any rate is resampled to the model's and back; channels go
    through a stereo model in pairs (a lone channel doubled, its outputs averaged), through
    a mono model one by one.
    """

    name = "roformer"
    Config = RoformerConfig
    loads_resources_when_built = True  # __init__'s _load is check_resources' check
    stems_description = "the YAML's training.instruments (with a target_instrument: the target and the rest)"

    def __init__(self, config: RoformerConfig | None = None, /, **params):
        super().__init__(config, **params)
        import torch

        from ..roformer import Grid

        c = self.config
        if c.threads:
            torch.set_num_threads(c.threads)
        self.device = resolve_device(c.device, operator="roformer")
        model, self.spec = _load(c)
        self.model = model.to(self.device).eval()
        self.grid = Grid(self.spec.chunk_size, self.spec.num_overlap, self.spec.batch_size)
        self.sr = self.spec.sample_rate
        release_memory()  # the checkpoint's tensors, copied into the model, are dropped

    @classmethod
    def check_resources(cls, config: RoformerConfig) -> None:
        # Reads and builds everything on the CPU, so a job never starts with a bad file; the
        # device is checked by the workers (the driver may have no GPU).
        _load(config)
        release_memory()  # built to be checked, then dropped: workers build their own

    @property
    def stem_names(self) -> list[str]:
        return self.spec.stem_names

    def block_context(self, sr: int) -> BlockContext:
        # Blocks start where the chunk grid and the batches repeat (Grid.align model samples),
        # with the context inference.block_context asks for (sepops.pretrained.grid_context
        # maps both to the input's rate and adds the resampler's reach).
        from ..roformer import block_context

        return BlockContext(*grid_context(sr, self.sr, self.grid.align, block_context(self.grid)))

    def separate(self, audio: np.ndarray, sr: int, *, analysis: Analysis | None = None) -> dict[str, np.ndarray]:
        # The model takes the waveform: a shared Analysis is of no use.
        return self._separate(audio, sr, at_start=True, at_end=True)

    def separate_block(self, audio: np.ndarray, sr: int, *, keep: tuple[int, int]) -> dict[str, np.ndarray]:
        # separate_blocks gives a block its whole context on each side unless the signal
        # starts / ends within it: then the block holds that end and is run as the whole
        # signal is there (reflect padding, the last batch's windows).
        context = self.block_context(sr).context
        return self._separate(audio, sr, at_start=keep[0] < context, at_end=np.shape(audio)[-1] - keep[1] < context)

    def _separate(self, audio: np.ndarray, sr: int, *, at_start: bool, at_end: bool) -> dict[str, np.ndarray]:
        audio = np.atleast_2d(np.asarray(audio, dtype=np.float32))
        n = audio.shape[1]
        x = resample(audio, sr, self.sr) if sr != self.sr else audio
        est = self._model_rate(x, at_start, at_end)  # (model stems, channels, samples)
        stems = {}
        for name, y in zip(self.spec.model_stems, est):
            stems[name] = fit_length(resample(y, self.sr, sr), n) if sr != self.sr else y
        if self.spec.complement:
            # Mixture minus target at the input's rate: the stems sum to the input, band
            # above the model's Nyquist frequency included.
            stems[self.spec.complement] = audio - stems[self.spec.model_stems[0]]
        return stems

    def _model_rate(self, x: np.ndarray, at_start: bool, at_end: bool) -> np.ndarray:
        """(channels, m) at the model's rate -> (model stems, channels, m)."""
        import torch

        from ..roformer import demix

        if x.shape[1] == 0:
            return np.zeros((len(self.spec.model_stems), *x.shape), np.float32)

        def run(group: np.ndarray) -> np.ndarray:
            return demix(self.model, group, self.grid, device=self.device, amp=self.spec.use_amp,
                         at_start=at_start, at_end=at_end)

        with torch.inference_mode():
            return in_model_channels(x, 2 if self.spec.stereo else 1, run)
