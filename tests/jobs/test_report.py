"""`sepflow report` on a real run: two loops of the validation set and one corrupt file,
separated by the hpss job; the page is checked as text and, where Chromium is installed,
in a headless browser (script ran, no failed loads, the numbers in the DOM, a screenshot)."""
from __future__ import annotations

import html.parser
import os
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

from pipelines import cli_report, report
from pipelines.cli import main
from pipelines.tables import read_metadata

ROOT = Path(__file__).resolve().parents[2]
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
    (inputs.parent / "elsewhere").mkdir()
    unnormalised = inputs.parent / "elsewhere" / ".." / inputs.name  # as "../shared/data" from a checkout
    summary = run_job(load_job_config(str(ROOT / "configs" / "hpss.yaml")), [str(unnormalised)], str(out),
                      progress=False)
    assert (summary.tracks_ok, summary.tracks_error) == (2, 1)
    return out, summary


@pytest.fixture(scope="module")
def evaluated_run(run_output, tmp_path_factory, data_dir):
    """A copy of the run's output, evaluated by ``sepflow evaluate`` (hpss against the loops'
    harmonic/percussive stems, and the IRM oracle); its metadata still names the first
    output's stems, and its features table is the run's own."""
    from pipelines.tables import read_evaluation

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
    assert summary_value(text, "runner") == summary.runner_chosen and summary.runner_chosen.startswith("DirectRunner")
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

    # Laid out at 1280 px, every figure is as wide as the content column (the page's script
    # writes each figure's width over the column's once loaded).
    fills = [float(f) for f in body.get("data-figure-fill", "").split()]
    assert len(fills) == 3 and all(0.99 <= f <= 1.01 for f in fills), body.get("data-figure-fill")

    screenshot = tmp_path / "report.png"  # tall enough to show the first track's figure
    shot = _chromium(binary, tmp_path / "profile", f"--screenshot={screenshot}", "--window-size=1280,3200", url)
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


# --- what the page shows: operators named, log frequency, sizes, navigation, paths, -o ----------
def _tracks_part(text: str) -> str:
    return text[text.index('<h2 id="tracks">'):]


def two_operator_run(out) -> report.RunData:
    """The run's loop_1101 rows as if two operators with the same stem names had made them:
    ``unet`` (operator unet) and ``nmf_supervised`` (operator nmf), stems accompaniment/lead."""
    run = report.read_run(str(out))
    rows = [r for r in run.rows_of("loop_1101") if r["status"] == "ok"]
    renamed = {"harmonic": "accompaniment", "percussive": "lead"}
    table = [dict(r, label=label, operator=operator, stem=renamed[r["stem"]])
             for label, operator in (("unet", "unet"), ("nmf_supervised", "nmf")) for r in rows]
    schema = run.metadata.schema
    return report.RunData(run.output, None, pa.Table.from_pylist(table, schema=schema))


def test_each_operator_is_named_above_its_figure(run_output):
    out, _ = run_output
    text = report.build_report(two_operator_run(out), audio=report.AudioOptions("inline", 1.0, None))
    tags = elements(_tracks_part(text))
    headings = [a.get("id") for t, a in tags if t == "h4"]
    assert headings == ["track-loop_1101--nmf_supervised", "track-loop_1101--unet"]
    # Every figure comes after the heading of its own operator, and before the next heading.
    current, seen = None, []
    for tag, attrs in tags:
        if tag == "h4":
            current = attrs["id"].rsplit("--", 1)[1]
        elif tag == "img":
            assert current is not None and attrs["alt"].endswith(f", {current}"), (current, attrs["alt"])
            seen.append(current)
    assert seen == ["nmf_supervised", "unet"]
    # The heading's text names the label, and the operator where it differs.
    assert re.search(r'<h4 id="track-loop_1101--nmf_supervised">nmf_supervised <span class="op">operator nmf</span></h4>',
                     text)
    assert '<h4 id="track-loop_1101--unet">unet</h4>' in text
    # Each operator's players sit in its own section, under its heading.
    for label in ("unet", "nmf_supervised"):
        section = re.search(rf'<section class="operator" data-label="{label}">(.*?)</section>', text, re.DOTALL).group(1)
        assert re.findall(r"<figcaption>(\w+/\w+)", section) == [f"{label}/accompaniment", f"{label}/lead"]


def test_real_page_names_hpss_above_each_track_figure(rendered):
    page, _, _ = rendered
    tags = elements(_tracks_part(page.read_text(encoding="utf-8")))
    order = [(t, a.get("id")) for t, a in tags if t in ("h3", "h4", "img")]
    assert order == [("h3", "track-loop_1101"), ("h4", "track-loop_1101--hpss"), ("img", None),
                     ("h3", "track-loop_1102"), ("h4", "track-loop_1102--hpss"), ("img", None)]


def tones(sr: int, seconds: float, *hz: float) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return np.stack([sum(0.3 * np.sin(2 * np.pi * f * t) for f in hz)] * 2).astype(np.float32)


def test_spectrograms_have_a_log_frequency_axis_in_hz():
    from pipelines import report_figures as figures

    sr = 44100
    stems = {"low": tones(sr, 3.0, 110.0), "high": tones(sr, 3.0, 3520.0)}
    fig = figures.draw_track(tones(sr, 3.0, 110.0, 3520.0), sr, stems, sr, None)
    edges = figures.log_frequency_edges(sr)
    centres = np.sqrt(edges[:-1] * edges[1:])
    spectrogram_axes = [ax for ax in fig.axes if ax.get_title(loc="left").endswith((": spectrogram", ": mask"))]
    assert len(spectrogram_axes) == 5  # mixture, two stems' spectrograms, two masks
    for ax in spectrogram_axes:
        assert "Hz" in ax.get_ylabel()
        labels = [t.get_text() for t in ax.get_yticklabels()]
        assert labels == ["50", "100", "200", "500", "1k", "2k", "5k", "10k", "20k"], labels
        np.testing.assert_allclose(ax.get_yticks(), np.log10([50, 100, 200, 500, 1e3, 2e3, 5e3, 1e4, 2e4]))
        bottom, top = ax.get_ylim()
        assert (10 ** bottom, 10 ** top) == pytest.approx((figures.FMIN_HZ, sr / 2))
    for stem, hz in (("low", 110.0), ("high", 3520.0)):
        (ax,) = [a for a in spectrogram_axes if a.get_title(loc="left") == f"{stem}: spectrogram"]
        image = ax.get_images()[0].get_array()
        peak = centres[int(np.argmax(np.asarray(image).mean(axis=1)))]
        assert peak == pytest.approx(hz, rel=0.06), (stem, peak)
    # Each octave gets the same height: 110 Hz sits a fifth of the way up, not in the bottom 0.5 %
    # that a linear 0-22 kHz axis gives it.
    height = np.log10(sr / 2) - np.log10(figures.FMIN_HZ)
    assert (np.log10(110) - np.log10(figures.FMIN_HZ)) / height > 0.19


def test_log_frequency_bands_average_and_interpolate_the_bins():
    from pipelines import report_figures as figures

    sr, n_fft = 44100, 2048
    edges = figures.log_frequency_edges(sr)
    flat = figures.to_log_frequency(np.ones((n_fft // 2 + 1, 4)), sr, n_fft, edges)
    np.testing.assert_allclose(flat, 1.0)
    ramp = np.repeat((np.arange(n_fft // 2 + 1) * sr / n_fft)[:, None], 2, axis=1)  # magnitude = frequency
    bands = figures.to_log_frequency(ramp, sr, n_fft, edges)[:, 0]
    centres = np.sqrt(edges[:-1] * edges[1:])
    np.testing.assert_allclose(bands, centres, rtol=0.03)  # narrow bands interpolate, wide ones average


def _png_size(data_uri: str) -> tuple[int, int]:
    import base64

    raw = base64.b64decode(data_uri.split(",", 1)[1])
    return int.from_bytes(raw[16:20], "big"), int.from_bytes(raw[20:24], "big")


def test_figures_fill_the_content_column_with_readable_text(rendered):
    import matplotlib.text
    import pandas as pd

    from pipelines import report_figures as figures
    from pipelines import report_html

    page, _, rows = rendered
    text = page.read_text(encoding="utf-8")
    assert f"max-width: {report_html.CONTENT_PX}px" in text and "figure.plot img { display: block; width: 100%; }" in text
    images = [a["src"] for t, a in elements(text) if t == "img"]
    assert [_png_size(src)[0] for src in images] == [report_html.CONTENT_PX] * 3
    sr = 22050
    drawn = [figures.draw_track(tones(sr, 2.0, 220.0), sr, {"a": tones(sr, 2.0, 220.0)}, sr, {"a": [(0.5, 1.0)]}),
             figures.draw_sdr_box_plot(pd.DataFrame(rows))]
    for fig in drawn:
        with figures._style():
            fig.canvas.draw()  # lays out every tick label
        assert fig.get_size_inches()[0] * fig.dpi == pytest.approx(report_html.CONTENT_PX)
        sizes = [t.get_fontsize() for t in fig.findobj(matplotlib.text.Text) if t.get_text() and t.get_visible()]
        assert sizes and min(sizes) >= 10, sorted(set(sizes))  # 10 pt at 100 dpi: 14 px, the page's text is 15 px


def test_page_has_a_table_of_contents_and_collapsible_tracks(rendered):
    import urllib.parse

    page, _, _ = rendered
    text = page.read_text(encoding="utf-8")
    tags = elements(text)
    ids = [a["id"] for _, a in tags if "id" in a]
    assert len(ids) == len(set(ids))
    nav = text[text.index('<nav id="contents"'):text.index("</nav>")]
    links = [urllib.parse.unquote(a["href"][1:]) for t, a in elements(nav) if t == "a"]
    assert links == ["summary", "errors", "evaluation", "tracks", "track-loop_1101", "track-loop_1101--hpss",
                     "track-loop_1102", "track-loop_1102--hpss"]
    assert set(links) <= set(ids)  # every entry leads somewhere
    assert text.index('<nav id="contents"') < text.index('<h2 id="summary">')
    tracks = [a for t, a in tags if t == "details"]
    assert [a.get("data-track") for a in tracks] == ["loop_1101", "loop_1102"]
    assert all(a.get("class") == "track" and "open" in a for a in tracks)
    assert len(re.findall(r'<details[^>]*><summary><h3 id="track-', text)) == 2


def test_anchors_of_awkward_track_ids_are_ids_and_links():
    from pipelines import report_html

    for track_id in ("Artist/Album/01 Intro", "a b", "a_b", "x#y?z"):
        anchor = report_html.track_anchor(track_id)
        assert not re.search(r"\s", anchor)
        assert report_html.href(anchor).startswith("#") and " " not in report_html.href(anchor)
    assert report_html.track_anchor("a b") != report_html.track_anchor("a_b")
    nav = report_html.contents([("Artist/Album/01 Intro", ["unet"])])
    assert len(re.findall(r'href="#[^"\s]+"', nav)) == 6


def test_paths_are_shown_normalised(run_output, tmp_path):
    """The run's input was given as ``<tmp>/elsewhere/../report_inputs0``, the report's --run as
    ``<tmp>/x/../out``, and its output with -o: the page shows every path normalised."""
    out, _ = run_output
    run = report.read_run(str(out))
    source = {r["track_id"]: r["source_uri"] for r in run.metadata.to_pylist()}
    assert "/../" in source["loop_1101"] and "/../" in run.record["inputs"][0]  # as given to the run
    (out.parent / "x").mkdir(exist_ok=True)
    page = tmp_path / "page.html"
    assert main(["report", "--run", str(out.parent / "x" / ".." / out.name), "-o", str(page)]) == 0
    text = page.read_text(encoding="utf-8")
    assert "/../" not in text and "/./" not in text
    assert f"Output <code>{out}</code>" in text
    for track_id in LOOPS:
        assert f"<p>Source <code>{os.path.normpath(source[track_id])}</code>.</p>" in text
    assert summary_value(text, "inputs") == os.path.normpath(run.record["inputs"][0])


def test_display_of_paths_and_messages():
    from pipelines.report_html import display_text, display_uri

    assert display_uri("/a/sepflow/../shared/data/x.flac") == "/a/shared/data/x.flac"
    assert display_uri("out/./stems/../stems/t.flac") == "out/stems/t.flac"
    assert display_uri("s3://bucket/run/../stems/t.flac") == "s3://bucket/stems/t.flac"
    assert display_uri("memory://report-test/out") == "memory://report-test/out"
    message = "cannot decode '/a/sepflow/../shared/x.m4a' (from s3://b/c/./d.flac): Invalid data"
    assert display_text(message) == "cannot decode '/a/shared/x.m4a' (from s3://b/c/d.flac): Invalid data"
    assert display_text("SDR 1/2 of ../x and 3.5 dB") == "SDR 1/2 of ../x and 3.5 dB"  # nothing to normalise


def test_report_takes_o_and_out_and_its_help_names_no_machine_path(capsys):
    import argparse

    parser = argparse.ArgumentParser(prog="sepflow report")
    cli_report.add_arguments(parser)
    assert parser.parse_args(["--run", "out/", "-o", "r.html"]).out == "r.html"
    assert parser.parse_args(["--run", "out/", "--out", "r.html"]).out == "r.html"
    with pytest.raises(SystemExit) as done:
        main(["report", "--help"])
    assert done.value.code == 0
    help_text = capsys.readouterr().out
    assert "-o FILE, --out FILE" in help_text
    examples = help_text[help_text.index("examples"):].split("\n\n")[0].splitlines()[1:]
    assert len(examples) == 4 and all(line.strip().startswith("sepflow ") for line in examples), examples
    words = [w for line in examples for w in line.split()]
    assert [w for w in words if w.startswith(("/", "~"))] == []  # relative paths and URLs only
    assert all(not re.search(r"(^|\s)/(work|home|tmp|Users|root)\b", doc)
               for doc in (help_text, report.__doc__))
