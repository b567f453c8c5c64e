"""Separating a stream block by block, in memory bounded by the block length.

An operator that can work locally in time says how much context each side of a block needs
for its output there to equal the whole-signal result (:meth:`Operator.block_context`):
HPSS needs its STFT windows and half its harmonic median; the U-Net a window and the
resampler's reach, with blocks on its global window grid. Blocks are then separated with
that context and trimmed, so the stems equal a whole-signal separation to float precision,
with no seams. Operators whose models are global (REPET's period, REPET-SIM's similar
frames, NMF's bases, ICA's unmixing matrix) return ``None`` and are run on the whole track.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from .base import Operator
from .stream import AudioStream

__all__ = ["separate_blocks"]


def separate_blocks(
    operator: Operator, stream: AudioStream, *, block_s: float = 60.0
) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """Separate ``stream`` block by block.

    Yields
    ------
    start, stems : int, dict of stem -> np.ndarray (channels, n)
        Consecutive blocks of every stem, from sample ``start``; together they are the
        whole-signal stems of the stream.

    Raises
    ------
    ValueError
        When ``operator`` cannot work in blocks (``block_context`` is ``None``).
    """
    sr = stream.sr
    spec = operator.block_context(sr)
    if spec is None:
        raise ValueError(f"operator {operator.name!r} needs the whole track; it cannot work in blocks")
    context, align = spec
    block = max(align, round(block_s * sr / align) * align)
    # Input held: [start - context, start + block + context), read ahead as needed.
    held = np.zeros((stream.channels, 0), np.float32)
    held_from = 0  # sample index of held[:, 0]
    start = 0
    ended = False
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
        lo = max(0, start - context)  # a multiple of align: the STFT grid is the global one
        chunk = np.ascontiguousarray(held[:, lo - held_from : min(end_of_input, stop + context) - held_from])
        stems = operator.separate(chunk, sr)
        yield start, {name: np.ascontiguousarray(s[:, start - lo : stop - lo]) for name, s in stems.items()}
        if stop >= end_of_input and ended:
            return
        start = stop
        keep = max(0, start - context)
        held, held_from = held[:, keep - held_from :], keep
