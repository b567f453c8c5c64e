"""pipelines: the Beam catalog job that runs sepops operators over folders and buckets of tracks.

No separation logic lives here: this package only wires :mod:`sepops` into Apache Beam.

- :mod:`pipelines.config`     YAML job files, ``--operator`` and ``--set`` overrides, validation
- :mod:`pipelines.options`    ``SepflowOptions``, the job's command-line flags
- :mod:`pipelines.io`         matching inputs (globs, folders, manifests) and making track ids
- :mod:`pipelines.track_ids`  the ids an output holds, so that they never move
- :mod:`pipelines.unit`       one (track, operator): skip check, decode, separate, write (no Beam)
- :mod:`pipelines.transforms` ``MatchCatalog``, ``SeparateCatalog``, ``WriteMetadata`` and their DoFns
- :mod:`pipelines.metadata`   the Parquet schema, per-unit parts, metadata shards, summary
- :mod:`pipelines.features`   the features table (per-stem features of ``sepops.features``)
- :mod:`pipelines.run`        building and running the pipeline, progress and summary
- :mod:`pipelines.evaluate`   ``sepflow evaluate``: scores against reference stems, a Beam job
- :mod:`pipelines.report`     ``sepflow report``: a self-contained HTML page about a run
  (``report_data``, ``report_figures``, ``report_sections``, ``report_html``)
- :mod:`pipelines.sdk_worker` the multi-process runner's worker, without its start-up chatter
- :mod:`pipelines.cli`        the ``sepflow`` command
"""
import os
import tempfile

# Every process that unpickles a pipeline DoFn imports this package first: worker
# subprocesses of the multi-process DirectRunner, Dask workers, Dataflow workers. librosa's
# numba functions need a writable cache, and site-packages often is not one.
os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(tempfile.gettempdir(), "sepflow-numba-cache"))


def sepflow_version() -> str:
    try:
        from importlib.metadata import version

        return version("sepflow")
    except Exception:  # noqa: BLE001 - not installed as a distribution (plain checkout)
        from sepops import __version__

        return __version__
