"""Every classic operator beside an independent implementation, in one run.

    python -m benchmarks.classic_operators            # all: hpss, repet, nmf, ica
    python -m benchmarks.classic_operators hpss ica   # some

Each section is one ``benchmarks/bench_<op>.py``: SDR (BSS Eval v3) on the validation set and
x real time on 30 s of 44.1 kHz stereo at one thread, ours and the reference measured in
the same process, one after the other. Figures only; nothing here asserts on time.
"""
from __future__ import annotations

import os

# One thread for every library, set before any of them starts its thread pool.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"

import importlib
import platform
import sys
import time

from benchmarks.common import print_table

SECTIONS = {
    "hpss": "HPSS vs librosa.decompose.hpss (percussive/harmonic of the 6 loops)",
    "repet": "REPET and REPET-SIM vs a compact reference REPET and librosa's REPET-SIM example (accompaniment/lead)",
    "nmf": "NMF vs scikit-learn NMF (KL, multiplicative updates)",
    "ica": "FastICA vs scikit-learn FastICA (stereo loops)",
}


def main(argv=None) -> None:
    names = (argv if argv is not None else sys.argv[1:]) or list(SECTIONS)
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        raise SystemExit(f"unknown section(s) {unknown}; choose from {list(SECTIONS)}")
    print(f"# classic operators: {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    for name in names:
        t = time.perf_counter()
        rows = importlib.import_module(f"benchmarks.bench_{name}").run()
        print_table(rows, f"{SECTIONS[name]}  ({time.perf_counter() - t:.0f} s)")


if __name__ == "__main__":
    main()
