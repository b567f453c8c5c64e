"""sepops: a pure-Python music source separation library (no Beam).

>>> import sepops
>>> audio, sr = sepops.load_audio("examples/loop_mix.flac")
>>> stems = sepops.get_operator("hpss", mask="soft").separate(audio, sr)
"""
from .audio import AudioError, audio_info, load_audio, save_audio
from .base import Operator, OperatorConfigError, get_operator, list_operators, register
from .spectral import Analysis, StftConfig, istft, stft

__version__ = "0.1.0"

__all__ = [
    "Analysis",
    "AudioError",
    "Operator",
    "OperatorConfigError",
    "StftConfig",
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
