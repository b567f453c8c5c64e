"""Where a stem is audible: frame levels of its energy envelope and the segments above a threshold.

Lyrics alignment starts from these segments on a lead/vocal stem; any downstream job can use
``active_fraction`` to skip a stem that is mostly silent.
"""
from __future__ import annotations

import numpy as np

__all__ = ["FRAME_S", "activity_segments", "frame_power", "power_db"]

#: The envelope's frame: 10 ms, fine enough to place a segment's edges within a frame.
FRAME_S = 0.01


def frame_power(audio: np.ndarray, frame: int) -> np.ndarray:
    """Mean power (over channels and samples) of consecutive frames of ``frame`` samples.

    Parameters
    ----------
    audio : np.ndarray, shape (channels, samples) or (samples,)
    frame : int
        Frame length in samples; a last, partial frame is left out (a caller streaming
        blocks carries it over to the next block).

    Returns
    -------
    np.ndarray, shape (samples // frame,), float64
    """
    x = np.atleast_2d(audio)
    n = x.shape[1] // frame
    if n == 0:
        return np.zeros(0)
    power = np.mean(np.square(x[:, : n * frame], dtype=np.float64), axis=0)
    return power.reshape(n, frame).mean(axis=1)


def power_db(power: np.ndarray) -> np.ndarray:
    """Power as dBFS (a full-scale sine is -3 dB), floored at -120."""
    return 10.0 * np.log10(np.maximum(power, 1e-12))


def activity_segments(
    levels_db: np.ndarray,
    frame_s: float,
    *,
    threshold_db: float = -35.0,
    floor_db: float = -60.0,
    min_length_s: float = 0.1,
    min_gap_s: float = 0.25,
    duration_s: float | None = None,
) -> tuple[list[tuple[float, float]], float]:
    """The segments where a stem is audible, and the share of the track they cover.

    A frame is active when its level is above ``threshold_db`` below the stem's loudest
    frame and above ``floor_db`` (absolute, dBFS), so a quiet vocal is found in its own
    terms and a stem holding only bleed (everything below the floor) has no segment.

    Parameters
    ----------
    levels_db : np.ndarray, shape (frames,)
        Frame levels, dBFS (:func:`frame_power`, :func:`power_db`).
    frame_s : float
        Frame length, seconds.
    threshold_db : float
        Relative threshold (negative), dB below the loudest frame.
    floor_db : float
        Absolute threshold, dBFS.
    min_length_s : float
        Shorter segments are dropped (after gaps are closed).
    min_gap_s : float
        Gaps shorter than this between two segments are closed (the breaths and consonants
        inside a phrase).
    duration_s : float, optional
        The stem's length: segments end there at the latest (default: frames x frame_s).

    Returns
    -------
    segments : list of (start_s, end_s)
    active_fraction : float
        Total length of the segments / ``duration_s``.
    """
    levels_db = np.asarray(levels_db, dtype=np.float64)
    duration_s = len(levels_db) * frame_s if duration_s is None else duration_s
    if len(levels_db) == 0 or duration_s <= 0:
        return [], 0.0
    threshold = max(floor_db, float(levels_db.max()) + threshold_db)
    active = np.concatenate([[False], levels_db > threshold, [False]])
    edges = np.flatnonzero(np.diff(active.astype(np.int8)))
    runs = [[int(a), int(b)] for a, b in zip(edges[::2], edges[1::2])]  # frames [a, b)
    merged: list[list[int]] = []
    for run in runs:
        if merged and (run[0] - merged[-1][1]) * frame_s < min_gap_s:
            merged[-1][1] = run[1]
        else:
            merged.append(run)
    segments = [
        (round(a * frame_s, 6), round(min(b * frame_s, duration_s), 6))
        for a, b in merged
        if (b - a) * frame_s >= min_length_s
    ]
    return segments, float(sum(e - s for s, e in segments) / duration_s)
