"""Beam's SDK worker process (the multi-process DirectRunner's), without its start-up chatter.

Beam starts each worker as ``python -m apache_beam.runners.worker.sdk_worker_main``, which
logs some twenty INFO lines (channels created, handlers, "harness starting") and two
warnings that mean nothing here (no GCP client libraries; no staged files) to stderr, per
worker, per run. ``pipelines.run.make_runner`` starts workers through this module instead: the
same ``main``, with a filter on the worker's stderr and on the log records it ships to the
runner that keeps warnings and errors and drops that noise, unless ``sepflow run -v`` set
``SEPFLOW_VERBOSE``.
"""
from __future__ import annotations

import logging
import os
import sys

__all__ = ["QuietWorkerLogs", "main"]


class QuietWorkerLogs(logging.Filter):
    """Drop a worker's INFO records and its known meaningless warnings (all of them with ``-v``)."""

    NOISE = ("semi_persistent_directory", "apitools not found", "Pipeline_options")

    def filter(self, record: logging.LogRecord) -> bool:
        if os.environ.get("SEPFLOW_VERBOSE"):
            return True
        if record.levelno < logging.WARNING:
            return False
        message = record.getMessage()
        return not any(noise in message for noise in self.NOISE)


def main(argv: list[str]) -> None:
    quiet = QuietWorkerLogs()
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(quiet)
    from apache_beam.runners.worker import sdk_worker_main

    # create_harness adds the handler that ships records to the runner: filter it too.
    create_harness = sdk_worker_main.create_harness

    def quiet_harness(environment, dry_run=False):
        harness = create_harness(environment, dry_run=dry_run)
        for handler in logging.getLogger().handlers:
            if quiet not in handler.filters:
                handler.addFilter(quiet)
        return harness

    sdk_worker_main.create_harness = quiet_harness
    sdk_worker_main.main(argv)


if __name__ == "__main__":
    main(sys.argv)
