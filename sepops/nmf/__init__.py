"""Non-negative matrix factorisation for separation: the beta-NMF core, grouping components
into stems, and supervised dictionaries. The ``nmf`` operator is :mod:`sepops.operators.nmf`.
"""
from .core import BETA_NAMES, NmfResult, beta_divergence, init_factors, nmf
from .dictionary import (
    NmfDictionary,
    learn_dictionary,
    load_dictionary,
    save_dictionary,
    shipped_dictionaries,
)
from .grouping import group_components, loop_period, repetition_scores

__all__ = [
    "BETA_NAMES",
    "NmfDictionary",
    "NmfResult",
    "beta_divergence",
    "group_components",
    "init_factors",
    "learn_dictionary",
    "load_dictionary",
    "loop_period",
    "nmf",
    "repetition_scores",
    "save_dictionary",
    "shipped_dictionaries",
]
