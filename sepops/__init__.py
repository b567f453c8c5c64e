"""sepops: a pure-Python music source separation library (no Beam).

>>> import sepops
>>> audio, sr = sepops.load_audio("examples/loop_stereo.flac")
>>> stems = sepops.get_operator("hpss", mask="soft").separate(audio, sr)
"""
from .audio import audio_info, load_audio, save_audio
from .base import MaskingOperator, Operator, StftParams
from .errors import (
    AudioError,
    CheckpointError,
    OperatorConfigError,
    ResourceNotFoundError,
    SepopsError,
)
from .registry import get_operator, list_operators, register
from .spectral import Analysis, StftConfig, istft, stft

__version__ = "0.1.0"

__all__ = [
    "Analysis",
    "AudioError",
    "CheckpointError",
    "MaskingOperator",
    "Operator",
    "OperatorConfigError",
    "ResourceNotFoundError",
    "SepopsError",
    "StftConfig",
    "StftParams",
    "__version__",
    "audio_info",
    "get_operator",
    "istft",
    "list_operators",
    "load_audio",
    "register",
    "save_audio",
    "stft",
]
