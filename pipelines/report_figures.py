"""The figures of ``sepflow report``, drawn with matplotlib (no pyplot) as PNG bytes.

Every figure is ``FIGURE_WIDTH_PX`` wide at ``DPI``: the width of the page's content column,
so that the browser shows it at its own size, its text at ``STYLE``'s point sizes (11 pt at
100 dpi is about 15 px, the page's own text size). Spectrograms and masks are drawn on a
logarithmic frequency axis from ``FMIN_HZ`` to the Nyquist frequency, labelled in Hz: each
octave gets the same height, so the music is not squeezed into the bottom strip of a linear
0-22 kHz axis.
"""
from __future__ import annotations

import contextlib
import io

import numpy as np

#: Pixels across every figure: the page's content column (``report_html.CONTENT_PX``).
FIGURE_WIDTH_PX = 1150
#: Resolution the figures are rendered at (pixels per inch).
DPI = 100
#: Matplotlib point sizes of the figures' text.
STYLE = {"font.size": 11.0, "axes.titlesize": 12.0, "axes.labelsize": 11.0, "xtick.labelsize": 10.0,
         "ytick.labelsize": 10.0, "legend.fontsize": 10.0}
#: Height of each row (mixture, then one per stem) of a track's figure, in inches.
ROW_IN = 2.3
#: Spectrogram frames drawn at most: longer excerpts get a larger hop.
MAX_FRAMES = 900
#: Floor of the dB scale, relative to the mixture's peak.
DB_RANGE = 80.0
#: Points of the waveform envelope drawn per stem.
ENVELOPE_POINTS = 1500
#: The log frequency axis: lowest frequency drawn, bands (rows) from there to Nyquist, ticks.
FMIN_HZ = 30.0
LOG_BANDS = 256
HZ_TICKS = (50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000)


def _png(fig) -> bytes:
    """The figure as a 256-colour PNG: spectrograms are noisy images that a full-colour PNG
    stores at ~500 KB each; the palette keeps them near a third of that, with no visible loss."""
    from PIL import Image

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    image = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB").quantize(256)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


@contextlib.contextmanager
def _style():
    import matplotlib

    with matplotlib.rc_context(STYLE):
        yield


def new_figure(height_in: float):
    """A constrained-layout figure as wide as the page's content column."""
    from matplotlib.figure import Figure

    return Figure(figsize=(FIGURE_WIDTH_PX / DPI, height_in), dpi=DPI, layout="constrained")


# --- spectra ------------------------------------------------------------------------------------
def _stft_grid(samples: int, sr: int) -> tuple[int, int]:
    """``(n_fft, hop)`` for a display spectrogram of at most ``MAX_FRAMES`` frames."""
    n_fft = 2048 if sr > 32000 else 1024
    hop = max(n_fft // 4, -(-samples // MAX_FRAMES))
    return n_fft, min(hop, n_fft)


def magnitude(audio: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """The magnitude spectrogram of the channels' mean, (bins, frames)."""
    from sepops.spectral import stft

    return np.abs(stft(audio.mean(axis=0), n_fft=n_fft, hop_length=hop)[0])


def log_frequency_edges(sr: int) -> np.ndarray:
    """``LOG_BANDS + 1`` geometrically spaced band edges from ``FMIN_HZ`` to ``sr / 2``, in Hz."""
    return np.geomspace(FMIN_HZ, sr / 2, LOG_BANDS + 1)


def to_log_frequency(mag: np.ndarray, sr: int, n_fft: int, edges: np.ndarray) -> np.ndarray:
    """The rows of ``mag`` (linear bins ``k * sr / n_fft``) resampled onto the bands ``edges``:
    a band holding bins gets their mean; a band narrower than a bin (low frequencies) gets the
    linear interpolation at its centre. Returns (bands, frames)."""
    step, bins = sr / n_fft, mag.shape[0]
    lo = np.clip(np.ceil(edges[:-1] / step).astype(int), 0, bins)
    hi = np.clip(np.ceil(edges[1:] / step).astype(int), 0, bins)
    cumulative = np.vstack([np.zeros((1, mag.shape[1])), np.cumsum(mag, axis=0)])
    count = hi - lo
    mean = (cumulative[hi] - cumulative[lo]) / np.maximum(count, 1)[:, None]
    centre = np.sqrt(edges[:-1] * edges[1:]) / step
    low = np.clip(np.floor(centre).astype(int), 0, bins - 2)
    weight = np.clip(centre - low, 0.0, 1.0)[:, None]
    interpolated = mag[low] * (1 - weight) + mag[low + 1] * weight
    return np.where((count > 0)[:, None], mean, interpolated)


def log_spectrogram(audio: np.ndarray, sr: int) -> tuple[np.ndarray, float]:
    """The magnitude of ``audio`` on the log frequency bands, and the seconds it spans."""
    n_fft, hop = _stft_grid(audio.shape[1], sr)
    mag = magnitude(audio, n_fft, hop)
    return to_log_frequency(mag, sr, n_fft, log_frequency_edges(sr)), mag.shape[1] * hop / sr


def masks_of(magnitudes: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each stem's share of the stems' summed magnitude per bin, 0..1 (0 where all are silent)."""
    total = sum(magnitudes.values())
    safe = np.where(total > 0, total, 1.0)
    return {stem: np.where(total > 0, m / safe, 0.0) for stem, m in magnitudes.items()}


def _envelope(audio: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray]:
    """Peak envelope of the channels' mean: times (s) and peak per point, at most ``ENVELOPE_POINTS``."""
    x = np.abs(audio.mean(axis=0))
    step = max(1, -(-x.size // ENVELOPE_POINTS))
    padded = np.pad(x, (0, -x.size % step)).reshape(-1, step).max(axis=1)
    return np.arange(padded.size) * step / sr, padded


# --- drawing ------------------------------------------------------------------------------------
def hz_label(hz: float) -> str:
    """A tick label in Hz: ``50``, ``500``, ``1k``, ``20k``."""
    return f"{hz / 1000:g}k" if hz >= 1000 else f"{hz:g}"


def frequency_image(ax, rows: np.ndarray, seconds: float, sr: int, **imshow):
    """``rows`` (log bands x frames) drawn on ``ax`` with a log frequency axis labelled in Hz."""
    edges = log_frequency_edges(sr)
    extent = (0, seconds, np.log10(edges[0]), np.log10(edges[-1]))
    image = ax.imshow(rows, origin="lower", aspect="auto", extent=extent, interpolation="nearest", **imshow)
    ticks = [t for t in HZ_TICKS if edges[0] <= t <= edges[-1]]
    ax.set_yticks(np.log10(ticks), [hz_label(t) for t in ticks])
    ax.set_ylabel("Hz (log)")
    return image


def _waveform(ax, audio, sr, spans, title):
    t, peak = _envelope(audio, sr)
    ax.fill_between(t, -peak, peak, color="#3b6ea5", linewidth=0)
    for start, end in spans or ():
        ax.axvspan(start, end, color="#f5a623", alpha=0.3, linewidth=0)
    ax.set_xlim(0, audio.shape[1] / sr)
    ax.set_ylim(-1, 1)
    ax.set_title(title, loc="left")


def _db(mag: np.ndarray, ref: float) -> np.ndarray:
    return 20 * np.log10(np.maximum(mag, ref * 10 ** (-DB_RANGE / 20)) / ref)


def draw_track(mixture, mixture_sr, stems, stems_sr, activity):
    """The figure of one track and operator (see :func:`track_figure`), a matplotlib Figure."""
    mix_mag, mix_s = log_spectrogram(mixture, mixture_sr)
    ref = float(mix_mag.max()) or 1.0
    spectra = {s: log_spectrogram(a, stems_sr) for s, a in stems.items()}
    frames = min(m.shape[1] for m, _ in spectra.values())
    stem_mags = {s: m[:, :frames] for s, (m, _) in spectra.items()}
    stem_s = min(seconds for _, seconds in spectra.values())
    masks = masks_of(stem_mags)

    fig = new_figure(ROW_IN * (1 + len(stems)) + 0.3)
    axes = fig.subplots(1 + len(stems), 3, squeeze=False, width_ratios=[1.2, 1.2, 1.0])
    scale = {"vmin": -DB_RANGE, "vmax": 0, "cmap": "magma"}
    db_image = frequency_image(axes[0, 0], _db(mix_mag, ref), mix_s, mixture_sr, **scale)
    axes[0, 0].set_title("mixture: spectrogram", loc="left")
    axes[0, 1].axis("off")
    axes[0, 1].text(0.5, 0.5, "masks: each stem's magnitude /\nthe sum of the stems' magnitudes",
                    ha="center", va="center", color="#555", transform=axes[0, 1].transAxes)
    _waveform(axes[0, 2], mixture, mixture_sr, None, "mixture: waveform")
    mask_image = None
    for row, stem in enumerate(stems, start=1):
        frequency_image(axes[row, 0], _db(stem_mags[stem], ref), stem_s, stems_sr, **scale)
        axes[row, 0].set_title(f"{stem}: spectrogram", loc="left")
        mask_image = frequency_image(axes[row, 1], masks[stem], stem_s, stems_sr, vmin=0, vmax=1, cmap="viridis")
        axes[row, 1].set_title(f"{stem}: mask", loc="left")
        spans = None if activity is None else activity.get(stem, [])
        _waveform(axes[row, 2], stems[stem], stems_sr, spans, f"{stem}: waveform")
    for ax in axes[-1]:
        ax.set_xlabel("time (s)")
    fig.colorbar(db_image, ax=axes[:, 0], shrink=0.6, label="dB")
    if mask_image is not None:
        fig.colorbar(mask_image, ax=axes[1:, 1], shrink=0.6, label="mask")
    return fig


def track_figure(mixture, mixture_sr, stems, stems_sr, activity) -> bytes:
    """One track and operator: rows mixture + stems; columns spectrogram (dB re the mixture's
    peak), mask (0..1), both on a log frequency axis in Hz, and waveform with the activity
    segments shaded (the caption says so). PNG bytes, ``FIGURE_WIDTH_PX`` wide.

    Parameters
    ----------
    mixture : np.ndarray, (channels, samples)
    stems : dict of stem -> np.ndarray, (channels, samples), all at ``stems_sr``
    activity : dict of stem -> list of (start_s, end_s), or None without a features table
    """
    with _style():
        return _png(draw_track(mixture, mixture_sr, stems, stems_sr, activity))


def _sdr_groups(evaluation) -> list[tuple[tuple, np.ndarray]]:
    """The finite SDRs of the ok rows by (is_oracle, label, stem), in row order, the groups
    sorted (``evaluation``: a pyarrow Table or a pandas DataFrame of evaluation rows)."""
    names = ("status", "sdr", "is_oracle", "label", "stem")
    if hasattr(evaluation, "to_pydict"):  # a pyarrow Table
        columns = evaluation.select(list(names)).to_pydict()
    else:  # a pandas DataFrame
        columns = {n: evaluation[n].tolist() for n in names}
    groups: dict[tuple, list[float]] = {}
    for status, sdr, *key in zip(*(columns[n] for n in names)):
        if status == "ok" and sdr is not None and np.isfinite(sdr) and None not in key:
            groups.setdefault(tuple(key), []).append(sdr)
    return [(key, np.asarray(values, dtype=float)) for key, values in sorted(groups.items(), key=lambda kv: kv[0])]


def draw_sdr_box_plot(evaluation):
    """The figure of :func:`sdr_box_plot`, a matplotlib Figure."""
    groups = _sdr_groups(evaluation)
    fig = new_figure(3.8)
    ax = fig.add_subplot()
    values = [v for _, v in groups]
    names = [f"{label}/{stem}" + (" (oracle)" if oracle else "") for (oracle, label, stem), _ in groups]
    boxes = ax.boxplot(values, patch_artist=True, showmeans=True, widths=0.5 if len(groups) > 3 else 0.3)
    for patch, ((oracle, _, _), _) in zip(boxes["boxes"], groups):
        patch.set_facecolor("#cccccc" if oracle else "#9ecae1")
    rotated = len(groups) > 6
    ax.set_xticks(range(1, len(names) + 1), names, rotation=25 if rotated else 0, ha="right" if rotated else "center")
    ax.set_ylabel("SDR (dB)")
    ax.grid(axis="y", alpha=0.3)
    return fig


def sdr_box_plot(evaluation) -> bytes:
    """A box plot of SDR across tracks, one box per label/stem (oracles in grey), as PNG."""
    with _style():
        return _png(draw_sdr_box_plot(evaluation))
