"""BS-RoFormer and Mel-Band RoFormer inference for checkpoints trained with
ZFTurbo/Music-Source-Separation-Training, written for sepflow.

- :mod:`.model`: the networks (``BSRoformer``, ``MelBandRoformer``), whose state dicts are
  the training code's;
- :mod:`.config`: its YAML configs and checkpoints, read safely;
- :mod:`.inference`: its chunked inference (``demix``), also exact block by block.

The operator is :mod:`sepops.operators.roformer`; see docs/roformer.md.
"""
from .config import (
    RoformerSpec,
    YamlConfigError,
    build_model,
    load_state,
    load_weights,
    read_spec,
    yaml_beside,
)
from .inference import Grid, block_context, demix

__all__ = [
    "Grid",
    "RoformerSpec",
    "YamlConfigError",
    "block_context",
    "build_model",
    "demix",
    "load_state",
    "load_weights",
    "read_spec",
    "yaml_beside",
]
