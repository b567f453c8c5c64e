"""`sepflow report` on a real run: two loops of the validation set and one corrupt file,
separated by the hpss job; the page is checked as text and, where Chromium is installed,
in a headless browser (script ran, no failed loads, the numbers in the DOM, a screenshot)."""
from __future__ import annotations

import html.parser
import re
import shutil
import subprocess
import sys
from pathlib import Path

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines import report
from pipelines.cli import main
from pipelines.metadata import read_metadata

ROOT = Path(__file__).resolve().parents[1]
LOOPS = ("loop_1101", "loop_1102")
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


# --- the run, its evaluation and features -----------------------------------------------------
@pytest.fixture(scope="module")
def run_output(tmp_path_factory, data_dir):
    """A real hpss run of two loops and a corrupt file (its input folder apart from its output)."""
    from pipelines.config import load_job_config
    from pipelines.run import run_job

    inputs = tmp_path_factory.mktemp("report_inputs")
    for loop in LOOPS:
        shutil.copy(data_dir / loop / "mixture.flac", inputs / f"{loop}.flac")
    (inputs / "corrupt.flac").write_bytes(np.random.default_rng(7).bytes(5000))
    out = tmp_path_factory.mktemp("report_run") / "out"
    summary = run_job(load_job_config(str(ROOT / "configs" / "hpss.yaml")), [str(inputs)], str(out), progress=False)
    assert (summary.tracks_ok, summary.tracks_error) == (2, 1)
    return out, summary


@pytest.fixture(scope="module")
def evaluated_run(run_output, tmp_path_factory, data_dir):
    """A copy of the run's output, evaluated by ``sepflow evaluate`` (hpss against the loops'
    harmonic/percussive stems, and the IRM oracle); its metadata still names the first
    output's stems, and its features table is the run's own."""
    from pipelines.evaluate import read_evaluation

    source, summary = run_output
    out = tmp_path_factory.mktemp("report_evaluated") / "out"
    shutil.copytree(source, out)
    code = main(["evaluate", "--estimates", str(out), "--references", str(data_dir / "manifest.json"),
                 "--oracles", "irm", "--no_progress"])
    assert code == 0
    rows = [r for r in read_evaluation(str(out)).to_pylist() if r["status"] == "ok"]
    assert {(r["label"], r["stem"]) for r in rows} == {
        ("hpss", "harmonic"), ("hpss", "percussive"), ("irm", "harmonic"), ("irm", "percussive")
    }
    assert (out / "features").is_dir()  # the run computed its stems' activity segments
    return out, summary, rows


@pytest.fixture(scope="module")
def rendered(evaluated_run, tmp_path_factory):
    """The report of the evaluated run, by the command, in a folder of its own."""
    out, summary, rows = evaluated_run
    page = tmp_path_factory.mktemp("report_page") / "report.html"
    assert main(["report", "--run", str(out), "--out", str(page)]) == 0
    return page, summary, rows


# --- the page as text -------------------------------------------------------------------------
class _Elements(html.parser.HTMLParser):
    """Every start tag's name and attributes."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def elements(text: str) -> list[tuple[str, dict]]:
    parser = _Elements()
    parser.feed(text)
    return parser.tags


def summary_value(text: str, key: str) -> str:
    match = re.search(rf'<tr data-key="{key}"><th>[^<]*</th><td>([^<]*)</td>', text)
    assert match, f"no summary row {key}"
    return match.group(1)


def sdr_means(rows: list[dict]) -> dict[tuple[str, str], str]:
    """The SDR means the page must show, per (label, stem), as it prints them."""
    by_key: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        by_key.setdefault((r["label"], r["stem"]), []).append(r["sdr"])
    return {k: f"{np.mean(v):.2f}" for k, v in by_key.items()}


def test_report_is_one_self_contained_file(rendered):
    page, _, _ = rendered
    assert [p.name for p in page.parent.iterdir()] == ["report.html"]
    text = page.read_text(encoding="utf-8")
    assert "http://" not in text and "https://" not in text
    tags = elements(text)
    assert not [a for t, a in tags if t == "link" or (t == "script" and "src" in a)]
    images = [a["src"] for t, a in tags if t == "img"]
    assert len(images) == 1 + 2 and all(src.startswith("data:image/png;base64,") for src in images)  # box plot, 2 tracks
    players = [a["src"] for t, a in tags if t == "audio"]
    assert len(players) == 2 * 3  # mixture and two stems per track
    for src in players:  # local run, local page: relative links that resolve
        assert not src.startswith(("/", "data:")) and (page.parent / src).resolve().is_file(), src
    assert len(text) < 3_000_000


def test_report_shows_the_summary_errors_and_sdr(rendered):
    page, summary, rows = rendered
    text = page.read_text(encoding="utf-8")
    assert (summary_value(text, "tracks_ok"), summary_value(text, "tracks_error")) == ("2", "1")
    assert summary_value(text, "audio_h") == f"{summary.audio_s / 3600:.3f} h ({summary.audio_s:.1f} s)"
    assert summary_value(text, "real_time") == f"{summary.audio_s / summary.wall_s:.1f}× real time"
    assert 'data-errors-total="1"' in text
    assert re.search(r"<td>corrupt</td><td>hpss</td><td>[a-z_]+</td><td>[^<]+</td>", text)
    for (label, stem), mean in sdr_means(rows).items():
        oracle = " <em>(oracle)</em>" if label == "irm" else ""
        assert re.search(rf'<tr( class="oracle")?><td>{label}</td><td>{stem}{re.escape(oracle)}</td><td class="num">2</td>'
                         rf'<td class="num">{mean}</td>', text), (label, stem, mean)
    assert '<tr class="oracle"><td>irm</td>' in text
    assert "activity segments shaded" in text and "no features table" not in text


def test_report_without_evaluation_or_features_says_so(run_output, tmp_path, capsys):
    out, _ = run_output
    page = tmp_path / "report.html"
    assert main(["report", "--run", str(out), "--out", str(page), "--tracks", "1"]) == 0
    text = page.read_text(encoding="utf-8")
    if not (out / "features").exists():
        assert "no features table" in text
    assert "no evaluation: run sepflow evaluate" in text
    assert text.count("<h3 ") == 1 and summary_value(text, "tracks_ok") == "2"


def test_chosen_tracks_are_deterministic_and_track_selects(run_output, tmp_path):
    out, _ = run_output
    table = report.read_run(str(out)).metadata
    reversed_table = table.take(list(reversed(range(table.num_rows))))
    assert report.choose_tracks(table, 5) == report.choose_tracks(reversed_table, 5)
    assert set(report.choose_tracks(table, 5)) == set(LOOPS)  # the corrupt track has nothing to draw
    page = tmp_path / "one.html"
    assert main(["report", "--run", str(out), "--out", str(page), "--track", "loop_1102"]) == 0
    assert re.findall(r'<h3 id="track-([^"]+)"', page.read_text(encoding="utf-8")) == ["loop_1102"]


def test_error_only_run(tmp_path):
    from pipelines.config import load_job_config
    from pipelines.run import run_job

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "noise.flac").write_bytes(np.random.default_rng(3).bytes(3000))
    run_job(load_job_config(str(ROOT / "configs" / "hpss.yaml")), [str(tmp_path / "in")], str(tmp_path / "out"), progress=False)
    assert main(["report", "--run", str(tmp_path / "out"), "--out", str(tmp_path / "r.html")]) == 0
    text = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert (summary_value(text, "tracks_ok"), summary_value(text, "tracks_error")) == ("0", "1")
    assert "No track has stems to show" in text and "<img" not in text


def test_remote_output_gets_inline_audio(evaluated_run, tmp_path):
    """An output on a remote filesystem (memory:// here, s3:// alike): read through fsspec,
    audio inline as FLAC excerpts."""
    out, _, _ = evaluated_run
    fs = fsspec.filesystem("memory")
    remote = "memory://report-test/out"
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        fs.pipe(f"{remote}/{path.relative_to(out).as_posix()}", path.read_bytes())
    # The metadata then names remote stems and sources, as a run on s3 would.
    table = read_metadata(str(out))
    moved = {c: pa.array([None if u is None else f"memory://report-test/{Path(u).name}-{i}" for i, u in enumerate(table[c].to_pylist())])
             for c in ("stem_uri", "source_uri")}
    for c, uris in moved.items():
        for local, uri in zip(table[c].to_pylist(), uris.to_pylist()):
            if local is not None:
                fs.pipe(uri, Path(local).read_bytes())
        table = table.set_column(table.schema.get_field_index(c), table.schema.field(c), uris)
    for name in fs.ls(f"{remote}/metadata", detail=False):
        fs.rm(name)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    fs.pipe(f"{remote}/metadata/stems-x-part-00000.parquet", sink.getvalue().to_pybytes())
    try:
        page = tmp_path / "remote.html"
        assert main(["report", "--run", remote, "--out", str(page), "--excerpt-s", "2"]) == 0
    finally:
        fs.rm("/report-test", recursive=True)
    text = page.read_text(encoding="utf-8")
    players = [a["src"] for t, a in elements(text) if t == "audio"]
    assert len(players) == 6 and all(src.startswith("data:audio/flac;base64,") for src in players)
    assert summary_value(text, "tracks_ok") == "2" and "irm" in text


@pytest.mark.parametrize(
    "argv, cause",
    [
        (["--run", "{tmp}", "--out", "{tmp}/r.html"], "is not a sepflow output"),
        (["--run", "{tmp}/nothing", "--out", "{tmp}/r.html"], "does not exist"),
        (["--run", "{out}", "--out", "{tmp}/r.html", "--track", "nope"], "--track nope is not in the run's metadata"),
        (["--run", "{out}", "--out", "{tmp}/r.html", "--evaluation", "{tmp}"], "holds no Parquet table"),
        (["--run", "{out}"], "missing --out"),
    ],
    ids=["not-an-output", "missing-run", "unknown-track", "no-evaluation-table", "no-out"],
)
def test_usage_errors_are_one_line(argv, cause, run_output, tmp_path, capsys):
    out, _ = run_output
    code = main(["report"] + [a.format(tmp=tmp_path, out=out) for a in argv])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("sepflow report: ") and cause in err, err
    assert not (tmp_path / "r.html").exists()


# --- the page in a browser --------------------------------------------------------------------
def chromium_binary() -> str | None:
    return next((found for name in CHROMIUM_NAMES if (found := shutil.which(name))), None)


def _chromium(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    command = [binary, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
               "--enable-logging=stderr", "--v=0", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def test_report_renders_in_headless_chromium(rendered, tmp_path):
    binary = chromium_binary()
    if binary is None:
        pytest.skip("headless Chromium not installed: apt-get install chromium")
    page, _, rows = rendered
    url = page.resolve().as_uri()
    dom = _chromium(binary, tmp_path / "profile", "--virtual-time-budget=5000", "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line]
    assert not console, console
    (body,) = [a for t, a in elements(dom.stdout) if t == "body"]
    assert body.get("data-rendered") == "1" and body.get("data-errors") == "", body
    assert (summary_value(dom.stdout, "tracks_ok"), summary_value(dom.stdout, "tracks_error")) == ("2", "1")
    for mean in sdr_means(rows).values():
        assert f'<td class="num">{mean}</td>' in dom.stdout

    screenshot = tmp_path / "report.png"
    shot = _chromium(binary, tmp_path / "profile", f"--screenshot={screenshot}", "--window-size=1280,2000", url)
    assert shot.returncode == 0, shot.stderr[-2000:]
    assert screenshot.stat().st_size > 10_000 and screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    print(f"report {page}\nscreenshot {screenshot}")


def test_report_does_not_import_beam(run_output, tmp_path):
    """Rendering a report (not only its --help) leaves Apache Beam unimported."""
    out, _ = run_output
    code = (
        "import sys\nfrom pipelines.cli import main\n"
        f"code = main(['report', '--run', {str(out)!r}, '--out', {str(tmp_path / 'r.html')!r}, '--tracks', '1'])\n"
        "print('exit', code, 'beam', 'apache_beam' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert done.stdout.strip().splitlines()[-1] == "exit 0 beam False", done.stderr
