"""Separating a stream block by block, in memory bounded by the block length.

An operator that can work on a long track in blocks says how (:meth:`Operator.block_context`,
a :class:`BlockContext`): how much input each side of a block it needs, on which grid blocks
start, and whether neighbouring blocks are cross-faded.

- **Exact** operators (``crossfade == 0``) see enough context for their output in a block to
  equal the whole-signal result: HPSS (its STFT windows and half its harmonic median), the
  U-Net (a window and the resampler's reach, on its global window grid), REPET-SIM (its
  ``max_lag_s`` search radius: only the block's own frames are modelled), supervised NMF
  (frames are fitted independently against the fixed dictionary) and ICA once its unmixing
  matrix is fitted to the whole stream (:meth:`Operator.fit_stream`, two decoding passes).
- **Windowed** operators (``crossfade > 0``) estimate their model from the block and its
  context alone: REPET (its period and repeating model) and unsupervised NMF (its templates
  and their grouping). Neighbouring blocks are blended with a raised-cosine cross-fade, so the
  stems stay continuous and, since each block's stems sum to its mixture, still sum to the
  mixture. The cost against a whole-track model is measured in ``benchmarks/long_track.py``.

Operators that need the whole track (the oracles, which need the true stems) return ``None``
and are run on the whole track.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import numpy as np

from .base import Operator
from .stream import AudioStream

__all__ = ["WINDOWED_CONTEXT_S", "WINDOWED_CROSSFADE_S", "BlockContext", "crossfade_weights", "separate_blocks"]

#: Windowed operators' defaults, seconds: input each side of a block (REPET's two longest
#: periods; as much for NMF's loop-period grouping) and the cross-fade between blocks.
WINDOWED_CONTEXT_S = 12.0
WINDOWED_CROSSFADE_S = 4.0


class BlockContext(NamedTuple):
    """How an operator works in blocks, all in samples.

    Attributes
    ----------
    context : int
        Input each side of a block the operator is given.
    align : int
        Blocks start at multiples of this (an exact operator's global grid: hop, strided
        median, window grid).
    crossfade : int
        Length of the blend between neighbouring blocks, centred on their boundary, at most
        twice the ``context``; 0 for exact operators (blocks are cut, not blended).
    """

    context: int
    align: int = 1
    crossfade: int = 0


def crossfade_weights(n: int, length: int) -> np.ndarray:
    """The first ``n`` weights of a raised-cosine fade-in over ``length`` samples, float32
    (the fade-out is one minus them, so the two always sum to one)."""
    i = np.arange(n, dtype=np.float64) + 0.5
    return (0.5 - 0.5 * np.cos(np.pi * i / max(length, 1))).astype(np.float32)


def separate_blocks(
    operator: Operator, stream: AudioStream, *, block_s: float = 60.0
) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """Separate ``stream`` block by block.

    ``operator`` must work in blocks as it is: an operator with a global model is first fitted
    to the stream with :meth:`Operator.fit_stream`.

    Yields
    ------
    start, stems : int, dict of stem -> np.ndarray (channels, n)
        Consecutive pieces of every stem, from sample ``start``; together they are the stems
        of the whole stream (equal to a whole-signal separation for exact operators).

    Raises
    ------
    ValueError
        When ``operator`` cannot work in blocks (``block_context`` is ``None``).
    """
    sr = stream.sr
    spec = operator.block_context(sr)
    if spec is None:
        raise ValueError(
            f"operator {operator.name!r} needs the whole track, or fitting to it first (Operator.fit_stream); "
            "it cannot work in blocks as it is"
        )
    context, align, fade = BlockContext(*spec)
    align = max(1, int(align))
    half = fade // 2
    if half > context:
        raise ValueError(f"a cross-fade of {fade} samples needs at least {half} samples of context, got {context}")
    block = max(align, round(block_s * sr / align) * align, 2 * half + align)
    # Input held: [start - context, start + block + context), read ahead as needed.
    held = np.zeros((stream.channels, 0), np.float32)
    held_from = 0  # sample index of held[:, 0]
    start = 0
    ended = False
    tail: dict[str, np.ndarray] | None = None  # the previous block's stems over [start - half, start + half)
    while True:
        want = start + block + context  # one past the last sample this block needs
        while not ended and held_from + held.shape[1] < want:
            more = stream.read(want - held_from - held.shape[1])
            ended = more.shape[1] == 0 or held_from + held.shape[1] + more.shape[1] < want
            held = np.concatenate([held, more], axis=1) if more.shape[1] else held
        end_of_input = held_from + held.shape[1]
        if start >= end_of_input:
            return
        stop = min(start + block, end_of_input)
        last = ended and stop >= end_of_input
        lo = max(0, start - context)  # a multiple of align: exact operators' grids are global
        hi = min(end_of_input, stop + context)
        out_from = start - half if tail is not None else start
        out_to = end_of_input if last else min(stop + half, end_of_input)
        chunk = np.ascontiguousarray(held[:, lo - held_from : hi - held_from])
        stems = operator.separate_block(chunk, sr, keep=(out_from - lo, out_to - lo))
        piece = {name: np.ascontiguousarray(s[:, out_from - lo : out_to - lo]) for name, s in stems.items()}
        if tail is not None:
            for name, s in piece.items():
                n = tail[name].shape[1]
                w = crossfade_weights(n, 2 * half)
                s[:, :n] = tail[name] * (1.0 - w) + s[:, :n] * w
        if last:
            yield out_from, piece
            return
        cut = stop - half - out_from
        yield out_from, {name: s[:, :cut] for name, s in piece.items()}
        tail = {name: s[:, cut:] for name, s in piece.items()} if half else None
        start = stop
        keep = max(0, start - context)
        held, held_from = held[:, keep - held_from :], keep
