"""``SepflowOptions``: the catalog job's own flags, as Beam pipeline options.

The same definitions serve ``sepflow run`` (argparse) and ``PipelineOptions(...).view_as(
SepflowOptions)``; every other flag on the command line is a Beam pipeline option
(``--runner``, ``--direct_num_workers``, ``--dask_client_address``, ``--project`` ...).
"""
from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions

__all__ = ["SepflowOptions"]


class SepflowOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument(
            "--config",
            default=None,
            help="YAML job file (operators, stft, audio, job, features), e.g. configs/hpss.yaml",
        )
        parser.add_argument(
            "-i",
            "--input",
            dest="inputs",
            action="append",
            default=None,
            help="tracks to separate: a glob (quote it; '**' recurses), a folder, a file, or a "
            "manifest .csv/.parquet with a 'uri' column; any fsspec URI (s3://, gs://). Repeatable.",
        )
        parser.add_argument(
            "-o",
            "--output",
            default=None,
            help="where stems/, metadata/, features/ and dead_letter/ go (a folder or an s3:// / gs:// prefix)",
        )
        parser.add_argument(
            "--operator",
            dest="operators",
            action="append",
            default=None,
            help="run only this operator (a label of the config, or any registered operator with its "
            "default parameters). Repeatable.",
        )
        parser.add_argument(
            "--set",
            dest="overrides",
            action="append",
            default=None,
            metavar="KEY=VALUE",
            help="override one config value: audio.format=wav, job.max_duration_s=600, "
            "stft.n_fft=4096, or <operator label>.<param>=<value> (hpss.kernel_size=31). Repeatable.",
        )
        parser.add_argument(
            "--format",
            dest="audio_format",
            choices=("flac", "wav", "mp3", "opus"),
            default=None,
            help="stem file format (audio.format): flac and wav are exact, mp3 and opus lossy previews "
            "(default: the config's, flac)",
        )
        parser.add_argument(
            "--bit-depth",
            dest="bit_depth",
            choices=("16", "24", "32"),
            default=None,
            help="bits per sample of flac/wav stems (audio.subtype: 16 and 24 integer, 32 float, wav only; "
            "default 16)",
        )
        parser.add_argument(
            "--overwrite",
            action="store_true",
            default=False,
            help="redo tracks whose outputs are already complete (default: skip them)",
        )
        parser.add_argument(
            "--no_progress",
            dest="progress",
            action="store_false",
            default=True,
            help="do not print the live progress line on stderr",
        )
