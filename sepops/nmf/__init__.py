"""Non-negative matrix factorisation for separation: the beta-NMF core, grouping components
into stems, the periodic split of activations, the working grid of unsupervised NMF, and
supervised dictionaries. The ``nmf`` operator is :mod:`sepops.operators.nmf`.
"""
from .core import BETA_NAMES, NmfResult, beta_divergence, init_factors, nmf
from .dictionary import (
    NmfDictionary,
    learn_dictionary,
    load_dictionary,
    save_dictionary,
    shipped_dictionaries,
)
from .grid import WorkingGrid
from .grouping import (
    fractional_loop_period,
    group_components,
    loop_period,
    repetition_scores,
)
from .repetition import repetition_penalties, split_periodic

__all__ = [
    "BETA_NAMES",
    "NmfDictionary",
    "NmfResult",
    "WorkingGrid",
    "beta_divergence",
    "fractional_loop_period",
    "group_components",
    "init_factors",
    "learn_dictionary",
    "load_dictionary",
    "loop_period",
    "nmf",
    "repetition_penalties",
    "repetition_scores",
    "save_dictionary",
    "shipped_dictionaries",
    "split_periodic",
]
