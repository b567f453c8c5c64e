"""Job configuration: YAML file + ``--operator`` + ``--set key=value`` -> a validated ``JobConfig``.

A job file looks like this (every section but ``operators`` is optional)::

    operators:                 # one or more; several share each track's STFT
      - operator: hpss         # a registered sepops operator (`sepflow operators` lists them)
        label: hpss            # optional; unique per job; the stems' folder when the file
                               # lists several operators (JobConfig.stems_by_label)
        params: {kernel_size: 31, mask: soft}
    stft:                      # optional; fills n_fft/hop_length/window of operators that
      n_fft: 4096              # have them and do not set them (unset: operator defaults)
      hop_length: 512
    audio:
      format: flac             # flac | wav | mp3 | opus (lossy previews; Opus at 48 kHz)
      subtype: PCM_16          # PCM_16 | PCM_24 | FLOAT (wav only); default per format; none for mp3/opus
      sample_rate: null        # null keeps each input's rate
      mono: false
    features:                  # per-stem features -> <output>/features/ (sepops.features)
      activity: true           # activity segments + active fraction (10 ms energy envelope)
      onsets: true
      loudness: true           # integrated LUFS, ITU-R BS.1770-4
      rhythm: false            # tempo + beat times on rhythm_stems
      pitch: false             # pyin f0 contour on pitch_stems (the costliest)
      chroma: false            # chroma per beat on chroma_stems
    job:
      max_duration_s: 14400    # longer tracks (4 h) become error rows (too_long)
      min_duration_s: 0.1      # shorter tracks become error rows (too_short)
      max_file_mb: 2048        # larger files become error rows (too_large), before reading
      max_channels: 16         # more channels become error rows (too_many_channels)
      track_timeout_s: 3600    # a track still running after this becomes timeout error rows
      stream_above_mb: 64      # larger tracks are separated in blocks, in bounded memory
      stream_above_s: 600      # so are tracks longer than this (by their header)
      block_s: 60
      metadata_shards: 8       # the published metadata is at most this many Parquet files
      overwrite: false
      allow_output_in_input: false   # refuse an --output inside a folder the job reads
      extensions: [flac, wav, aiff, aif, ogg, oga, opus, mp3, m4a, m4b, mp4, aac, wma, webm, mka]

Every mistake (unknown key, wrong type, unknown operator, bad operator parameter, an NMF
dictionary or U-Net model that does not exist) raises ``ConfigError`` naming the key, before
any pipeline is built, and where the bad value came from: the flag that set it, else the file
(:mod:`pipelines.config_overrides` applies the flags and keeps that record, a ``Provenance``;
:mod:`pipelines.config_operators` checks each operator entry).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from sepops.config import coerce
from sepops.errors import OperatorConfigError
from sepops.features import FeatureSettings

from .config_operators import OperatorSpec, operator_spec
from .config_overrides import Override, Provenance, apply_overrides
from .errors import ConfigError

__all__ = [
    "AudioSettings",
    "ConfigError",
    "FeatureSettings",
    "JobConfig",
    "JobSettings",
    "OperatorSpec",
    "StftSettings",
    "job_config_from_dict",
    "load_job_config",
]


@dataclass(frozen=True)
class AudioSettings:
    """How stems are written (and whether inputs are resampled or downmixed on decoding)."""

    #: flac and wav are exact; mp3 and opus are lossy previews (Opus at 48 kHz).
    format: Literal["flac", "wav", "mp3", "opus"] = "flac"
    subtype: Literal["PCM_16", "PCM_24", "FLOAT"] | None = None
    sample_rate: int | None = None
    mono: bool = False

    def __post_init__(self):
        if self.format == "flac" and self.subtype == "FLOAT":
            raise ValueError("subtype FLOAT needs format wav (FLAC stores integers only)")
        if self.format in ("mp3", "opus") and self.subtype not in (None, "PCM_16"):
            raise ValueError(f"subtype {self.subtype} applies to flac and wav only; {self.format} has none")
        if self.sample_rate is not None and self.sample_rate < 1000:
            raise ValueError(f"sample_rate must be >= 1000 Hz or null, got {self.sample_rate}")

    @property
    def extension(self) -> str:
        return self.format

    @property
    def encoder_subtype(self) -> str | None:
        """The subtype handed to the encoder (the shipped configs' PCM_16 means nothing to
        the lossy formats, so a job can switch to them with one ``--set audio.format``)."""
        return self.subtype if self.format in ("flac", "wav") else None


@dataclass(frozen=True)
class StftSettings:
    """Job-wide STFT for every operator that has these parameters and does not set them itself.

    Unset values keep each operator's own default. Operators that end up with the same
    settings share one STFT per track.
    """

    n_fft: int | None = None
    hop_length: int | None = None
    window: str | None = None
    #: The rate n_fft and hop_length are counted at (``StftParams.stft_rate``; 22050 by default).
    stft_rate: int | None = None

    def __post_init__(self):
        from sepops.spectral import StftConfig

        if self.n_fft is not None and self.hop_length is not None:
            StftConfig(self.n_fft, self.hop_length, self.window or "hann")

    def as_params(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass(frozen=True)
class JobSettings:
    """Per-track limits and re-run behaviour."""

    #: Longer tracks become error rows (``too_long``); 4 hours: every operator but the
    #: oracles separates long tracks in blocks, in bounded memory (see ``stream_above_*``).
    max_duration_s: float | None = 14400.0
    min_duration_s: float = 0.1
    #: Larger files become error rows (``too_large``) before a byte is read (null: no limit).
    max_file_mb: float | None = 2048.0
    #: Files with more channels become error rows (``too_many_channels``).
    max_channels: int = 16
    #: Tracks larger than this (MB), or longer than ``stream_above_s`` seconds by their
    #: header, are read, separated and written in blocks of ``block_s`` seconds, in bounded
    #: memory, when every operator can work in blocks (all but ibm/irm); null: never.
    stream_above_mb: float | None = 64.0
    stream_above_s: float | None = 600.0
    #: The published metadata is written in at most this many Parquet files (tracks are
    #: spread over them by id): 8 keep each near 100 MB at a million tracks.
    metadata_shards: int = 8
    block_s: float = 60.0
    #: A track (decode and every operator) still running after this many seconds becomes
    #: ``timeout`` error rows, and the worker goes on to the next track (null: no limit).
    track_timeout_s: float | None = 3600.0
    overwrite: bool = False
    #: A job refuses an ``--output`` inside a folder or glob it reads (its stems would be
    #: read back as tracks by the next run) unless this is true.
    allow_output_in_input: bool = False
    #: What a folder ``--input`` picks up: libsndfile's formats and FFmpeg's (sepops.ffmpeg).
    extensions: tuple[str, ...] = (
        "flac", "wav", "aiff", "aif", "ogg", "oga", "opus", "mp3", "m4a", "m4b", "mp4", "aac", "wma", "webm", "mka",
    )

    def __post_init__(self):
        if self.max_duration_s is not None and self.max_duration_s <= 0:
            raise ValueError(f"max_duration_s must be > 0 or null, got {self.max_duration_s}")
        if self.min_duration_s < 0:
            raise ValueError(f"min_duration_s must be >= 0, got {self.min_duration_s}")
        if self.max_file_mb is not None and self.max_file_mb <= 0:
            raise ValueError(f"max_file_mb must be > 0 or null, got {self.max_file_mb}")
        if self.max_channels < 1:
            raise ValueError(f"max_channels must be >= 1, got {self.max_channels}")
        if self.block_s < 1:
            raise ValueError(f"block_s must be >= 1, got {self.block_s}")
        if self.stream_above_mb is not None and self.stream_above_mb < 0:
            raise ValueError(f"stream_above_mb must be >= 0 or null, got {self.stream_above_mb}")
        if not 1 <= self.metadata_shards <= 4096:
            raise ValueError(f"metadata_shards must be in 1..4096, got {self.metadata_shards}")
        if self.stream_above_s is not None and self.stream_above_s < 0:
            raise ValueError(f"stream_above_s must be >= 0 or null, got {self.stream_above_s}")
        if self.track_timeout_s is not None and self.track_timeout_s <= 0:
            raise ValueError(f"track_timeout_s must be > 0 or null, got {self.track_timeout_s}")


@dataclass(frozen=True)
class JobConfig:
    operators: tuple[OperatorSpec, ...]
    audio: AudioSettings = AudioSettings()
    stft: StftSettings = StftSettings()
    job: JobSettings = JobSettings()
    #: Per-stem features (``<output>/features/``); see :class:`sepops.features.FeatureSettings`.
    features: FeatureSettings = field(default_factory=FeatureSettings)
    #: How many operators the config file listed, before ``--operator`` chose among them
    #: (0: no file, or a file without operators). It decides the stem layout.
    config_operators: int = 0

    @property
    def labels(self) -> list[str]:
        return [s.label for s in self.operators]

    @property
    def stems_by_label(self) -> bool:
        """Whether stems go to ``stems/<track_id>/<label>/`` rather than ``stems/<track_id>/``.

        A multi-operator job needs the label folder (two operators may name their stems
        alike). The decision follows the config file, not the ``--operator`` selection, so a
        run of one operator of a multi-operator config finds (and skips) the stems of earlier
        full runs; a job that runs several operators always uses label folders.
        """
        return max(self.config_operators, len(self.operators)) > 1

    @property
    def stem_layout(self) -> str:
        """The layout in words: ``stems/<track_id>/<stem>.<ext>`` or ``.../<label>/<stem>.<ext>``."""
        label = "<label>/" if self.stems_by_label else ""
        return f"stems/<track_id>/{label}<stem>.{self.audio.extension}"

    def to_dict(self) -> dict:
        return {
            "operators": [
                {"operator": s.operator, "label": s.label, "params": s.params} for s in self.operators
            ],
            "audio": dataclasses.asdict(self.audio),
            "stft": dataclasses.asdict(self.stft),
            "job": {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self.job).items()},
            "features": {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self.features).items()},
        }

    def operators_key(self) -> str:
        """Identifies the set of operators to build (the per-process cache key)."""
        return json.dumps([[s.operator, s.label, s.params] for s in self.operators], sort_keys=True)

    def unit_digest(self, spec: OperatorSpec) -> str:
        """Fingerprint of everything that decides one operator's stem files.

        A re-run skips a (track, operator) only when its recorded digest equals this one, so
        changing a parameter or the output format redoes the work without ``--overwrite``.
        """
        facts = {
            "operator": spec.operator,
            "params": spec.params,
            "audio": dataclasses.asdict(self.audio),
        }
        return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:16]


_SECTIONS: dict[str, type] = {
    "audio": AudioSettings, "stft": StftSettings, "job": JobSettings, "features": FeatureSettings,
}
_TOP_LEVEL_KEYS = ("operators", *_SECTIONS)


def _build_section(cls: type, values: Any, section: str, provenance: Provenance) -> Any:
    source = provenance.source
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: '{section}' must be a mapping, got {type(values).__name__}")
    fields = [f.name for f in dataclasses.fields(cls)]
    ConfigError.check_keys(
        values, fields, prefix=section, origin=lambda key: provenance.of(section, key), valid_in=f"keys in '{section}'"
    )
    hints = typing.get_type_hints(cls)
    coerced = {}
    for key, value in values.items():
        try:
            # Same type rules as operator parameters (strings from --set are parsed).
            coerced[key] = coerce(value, hints[key], f"{section}.{key}")
        except OperatorConfigError as exc:
            raise ConfigError(f"{provenance.of(section, key)}: {exc}") from None
    try:
        return cls(**coerced)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{provenance.blame(str(exc), section)}: '{section}': {exc}") from None


def _file_operator_count(raw: dict) -> int:
    entries = raw.get("operators")
    return len(entries) if isinstance(entries, list) else 0


def job_config_from_dict(
    raw: dict | None,
    *,
    operators: list[str] | None = None,
    overrides: list[Override] | None = None,
    source: str = "config",
) -> JobConfig:
    """Validate a parsed YAML mapping plus CLI overrides into a ``JobConfig``."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the file must hold a mapping with {', '.join(_TOP_LEVEL_KEYS)}")
    ConfigError.check_keys(raw, _TOP_LEVEL_KEYS, prefix=None, origin=lambda _: source, valid_in="top-level keys")
    config_operators = _file_operator_count(raw)  # before --operator chooses among them
    raw, provenance = apply_overrides(raw, operators, overrides or [], sections=tuple(_SECTIONS), source=source)
    sections = {name: _build_section(cls, raw.get(name), name, provenance) for name, cls in _SECTIONS.items()}
    if not raw["operators"]:
        raise ConfigError(f"{source}: no operators; add an 'operators' list or pass --operator NAME")
    stft = sections["stft"].as_params()
    specs = tuple(operator_spec(e, i, stft, provenance) for i, e in enumerate(raw["operators"]))
    labels = [s.label for s in specs]
    duplicates = sorted({x for x in labels if labels.count(x) > 1})
    if duplicates:
        raise ConfigError(
            f"{source}: operator label(s) {', '.join(duplicates)} used twice; give each entry a unique 'label'"
        )
    return JobConfig(operators=specs, **sections, config_operators=config_operators)


def load_job_config(
    path: str | None,
    *,
    operators: list[str] | None = None,
    overrides: list[Override] | None = None,
) -> JobConfig:
    """Read a YAML job file (any fsspec URI) and apply ``--operator`` / ``--set`` overrides.

    ``path`` may be ``None`` when ``--operator`` names what to run (all defaults).
    """
    if path is None:
        return job_config_from_dict({}, operators=operators, overrides=overrides, source="command line")
    import fsspec

    try:
        with fsspec.open(path, "rt", encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    return job_config_from_dict(raw, operators=operators, overrides=overrides, source=path)
