"""Chunked inference of a RoFormer over a signal of any length, as the reference ``demix``
(ZFTurbo/Music-Source-Separation-Training, ``utils/model_utils.py``) does it, so that sepflow
gives what users of the published checkpoints know:

- ``step = chunk // num_overlap``, ``border = chunk - step``, ``fade = chunk // 10``;
- a signal longer than ``2 * border`` is reflect-padded by ``border`` at both ends, and
  chunks start every ``step`` samples from the start of the padded signal while the start is
  inside it; a last chunk shorter than ``chunk`` is reflect-padded if longer than half a
  chunk, else zero-padded; the padding is cut off the outputs;
- each chunk's output is weighted by a window of linear fades (``fade`` samples) and the
  sum is divided by the sum of the windows (0 where that is 0);
- chunks go through the network ``batch_size`` at a time, and the window depends on the
  batch, as in the reference: in a batch whose last chunk is the first chunk (batch size 1)
  the fade-in is dropped; in the batch that holds the last chunk every chunk's fade-out is
  dropped. So the result depends on ``batch_size`` (only near the end of the signal).

The chunk grid is global, so a block of a long signal gives exactly the whole-signal result
on its inner samples if it starts on a multiple of ``step * batch_size`` samples (the grid
and the batch grouping then repeat) and carries :func:`block_context` samples each side:
:func:`demix` takes ``at_start`` / ``at_end`` (whether the block holds the signal's start /
end) for that.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["Grid", "block_context", "demix"]


class Grid:
    """The chunk grid of ``chunk`` samples, ``num_overlap`` and ``batch_size``."""

    def __init__(self, chunk: int, num_overlap: int, batch_size: int):
        self.chunk, self.batch = int(chunk), int(batch_size)
        self.step = self.chunk // int(num_overlap)
        self.border = self.chunk - self.step
        self.fade = self.chunk // 10

    @property
    def align(self) -> int:
        """Blocks start at multiples of this many samples: the grid and the batches repeat."""
        return self.step * self.batch

    def window(self, drop_fade_in: bool, drop_fade_out: bool) -> torch.Tensor:
        """(chunk,) the reference's window: linear fades of ``fade`` samples (0 to 1, 1 to 0)."""
        w = torch.ones(self.chunk)
        if self.fade:
            w[-self.fade:] = torch.linspace(1, 0, self.fade)
            w[: self.fade] = torch.linspace(0, 1, self.fade)
            if drop_fade_in:
                w[: self.fade] = 1
            elif drop_fade_out:  # the reference's elif: a lone chunk keeps its fade-out
                w[-self.fade:] = 1
        return w


def block_context(grid: Grid) -> int:
    """Samples each side of a block for :func:`demix` on it to be exact on the block.

    A chunk that touches the block's inner samples starts less than a chunk before them and
    ends less than a chunk after them; no chunk of the signal's last batch (whose fade-outs
    are dropped) may touch them unless the block holds the end: those start at most
    ``batch * step - border`` samples before the end of the signal; and a signal longer than
    a block is then longer than ``2 * border``, so it is padded (:func:`_chunks`).
    """
    return max(grid.chunk, grid.batch * grid.step - grid.border, 2 * grid.border)


def _chunks(n: int, grid: Grid, at_start: bool, at_end: bool) -> tuple[int, int, list[tuple[int, int]]]:
    """The padding and the chunks of a block of ``n`` samples.

    Returns ``(left, right, chunks)``: reflect padding at each end, and ``(start, index)`` of
    each chunk, ``start`` in the padded block, ``index`` the chunk's number in the whole
    signal modulo ``grid.batch`` (-1 for the first chunk of the signal, numbered 0).
    """
    g = grid
    whole = at_start and at_end
    # A block of a longer signal: that signal is longer than 2 * border (block_context).
    pad = g.border if g.border > 0 and (n > 2 * g.border or not whole) else 0
    left, right = (pad if at_start else 0), (pad if at_end else 0)
    length = n + left + right
    # Block starts are multiples of step * batch of the unpadded signal, the padded signal's
    # grid starts `pad` earlier: the first chunk here is (pad + first) / step chunks in.
    first = 0 if at_start else (-pad) % g.step
    chunks = []
    start = first
    while start < length and (at_end or start + g.chunk <= length):
        number = (start + (0 if at_start else pad)) // g.step
        chunks.append((start, number))
        start += g.step
    return left, right, chunks


def demix(model, mix: np.ndarray, grid: Grid, *, device: str = "cpu", amp: bool = False,
          at_start: bool = True, at_end: bool = True) -> np.ndarray:
    """Separate ``mix`` (channels, n), float32 at the model's rate -> (stems, channels, n).

    ``at_start`` / ``at_end`` say whether ``mix`` holds the start / end of the signal (both
    for a whole signal); a block that does not must carry :func:`block_context` samples on
    that side, of which the result is not exact, and start at a multiple of ``grid.align``.
    """
    g = grid
    x = torch.from_numpy(np.ascontiguousarray(mix, dtype=np.float32))
    n = x.shape[-1]
    left, right, chunks = _chunks(n, g, at_start, at_end)
    if left or right:
        x = F.pad(x[None], (left, right), mode="reflect")[0]
    length = x.shape[-1]
    result = counter = None
    last_number = chunks[-1][1] if at_end and chunks else None
    batch_start = 0
    while batch_start < len(chunks):
        # The reference's batches: chunk numbers batch * k ... batch * (k + 1) - 1.
        batch_end = batch_start + 1
        while batch_end < len(chunks) and chunks[batch_end][1] % g.batch:
            batch_end += 1
        group = chunks[batch_start:batch_end]
        parts = [_part(x, s, g.chunk) for s, _ in group]
        with _autocast(device, amp):
            out = model(torch.stack(parts).to(device)).float().cpu()  # (b, stems, channels, chunk')
        if result is None:
            result = torch.zeros(out.shape[1], x.shape[0], length)
            counter = torch.zeros_like(result)
        newest = group[-1][1]
        w = g.window(drop_fade_in=at_start and newest == 0, drop_fade_out=newest == last_number)
        for j, (s, _) in enumerate(group):
            seg = min(g.chunk, length - s)
            result[..., s : s + seg] += out[j, ..., :seg] * w[:seg]
            counter[..., s : s + seg] += w[:seg]
        batch_start = batch_end
    if result is None:
        raise ValueError(f"a block of {n} samples holds no whole chunk of {g.chunk}")
    est = (result / counter).numpy()
    np.nan_to_num(est, copy=False, nan=0.0)
    return est[..., left : left + n]


def _part(x: torch.Tensor, start: int, chunk: int) -> torch.Tensor:
    part = x[:, start : start + chunk]
    short = chunk - part.shape[-1]
    if short:
        mode = "reflect" if part.shape[-1] > chunk // 2 else "constant"
        part = F.pad(part[None], (0, short), mode=mode)[0]
    return part


def _autocast(device: str, amp: bool):
    # The reference runs under CUDA autocast (float16) when training.use_amp; on the CPU it
    # has no effect there, so neither here.
    return torch.autocast("cuda", dtype=torch.float16, enabled=amp and str(device).startswith("cuda"))
