"""pipelines: the Beam jobs that run sepops operators over folders and buckets of tracks.

No separation logic lives here: this package only wires :mod:`sepops` into Apache Beam. Three
jobs share one shape (docs/architecture.md): a driver around a linear chain of transforms, and
the work of one element in a Beam-free module.

``sepflow run``, the catalog job
  - :mod:`~pipelines.run`         the graph and its driver, the run's summary
  - :mod:`~pipelines.run_files`   what a run stages: shards, summary, input reports; publishing
  - :mod:`~pipelines.transforms`  ``MatchCatalog``, ``SeparateCatalog``, ``WriteMetadata``, ``WriteShards``
  - :mod:`~pipelines.io`          matching inputs (globs, folders, manifests) and naming tracks
  - :mod:`~pipelines.track_ids`   the ids an output holds, so that they never move
  - :mod:`~pipelines.track`       one track: skip, decode once or stream, separate, record (no Beam)
  - :mod:`~pipelines.decode`      reading a track whole or in blocks, with the job's limits
  - :mod:`~pipelines.sink`        one write path for a unit's stems, features and levels
  - :mod:`~pipelines.units`       a unit in storage: complete, commit, fail, time limit
  - :mod:`~pipelines.records`     a unit's rows and where it keeps them
``sepflow evaluate``
  - :mod:`~pipelines.evaluate`    the graph and its driver
  - :mod:`~pipelines.references`  reference stems: folders, manifests, pairing
  - :mod:`~pipelines.scoring`     one reference track's scores and oracles (no Beam)
  - :mod:`~pipelines.evaluation_summary`  the summary table and its JSON record
``sepflow report``
  - :mod:`~pipelines.report`      a self-contained HTML page about a run (``report_data``,
    ``report_figures``, ``report_sections``, ``report_html``; no Beam)
Shared
  - :mod:`~pipelines.tables`      every published table: schema, folder, shards, publishing, reading
  - :mod:`~pipelines.driver`      job ids, runners, progress, running a pipeline, clean-up
  - :mod:`~pipelines.config`      YAML job files, ``--operator`` and ``--set`` (``config_operators``,
    ``config_overrides``: operator entries, overrides and where each value came from)
  - :mod:`~pipelines.options`     ``SepflowOptions``, the Beam options sepflow adds
  - :mod:`~pipelines.errors`      ``UsageError``, the root of the user's mistakes, and exit codes
  - :mod:`~pipelines.cli`         the ``sepflow`` command (``cli_run``, ``cli_evaluate``,
    ``cli_report``, ``cli_operators``, ``cli_common``)
  - :mod:`~pipelines.sdk_worker`  the multi-process runner's worker, without its start-up chatter
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
