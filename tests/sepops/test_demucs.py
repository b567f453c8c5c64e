"""The ``demucs`` operator against the ``demucs`` package itself, on random-weight models
written by the tests in every layout it accepts."""
from __future__ import annotations

import random
import subprocess
import sys

import numpy as np
import pytest
import torch

from sepops import OperatorConfigError, get_operator
from sepops.blocks import separate_blocks
from sepops.stream import AudioStream
from tests.sepops.demucs_files import (
    SOURCES,
    mixture_signal,
    small_htdemucs,
    write_bag,
    write_safetensors,
    write_th,
)

pytest.importorskip("demucs")


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def reference(model, mix: np.ndarray, **kwargs) -> np.ndarray:
    """demucs.apply.apply_model on (channels, n) -> (sources, channels, n)."""
    from demucs.apply import apply_model

    kwargs = {"shifts": 0, "split": True, "overlap": 0.25, **kwargs}
    with torch.no_grad():
        return apply_model(model, torch.from_numpy(mix)[None], **kwargs)[0].numpy()


def assert_same(stems: dict, ref: np.ndarray, names: list[str]):
    peak = np.abs(ref).max()
    assert peak > 1e-3, "the random model gives silence: the comparison would prove nothing"
    assert list(stems) == names
    worst = max(np.abs(stems[n] - ref[i]).max() for i, n in enumerate(names))
    assert worst <= 1e-4 * peak, f"max |sepflow - apply_model| = {worst:.3g}, peak {peak:.3g}"


@pytest.fixture(scope="module")
def mix():
    return mixture_signal(3.0)


def test_single_th_file_equals_apply_model(tmp_path, mix):
    model = small_htdemucs(0)
    path = write_th(model, tmp_path, "abcd1234")
    op = get_operator("demucs", repo=str(path), device="cpu")
    assert op.stem_names == SOURCES
    assert_same(op.separate(mix, 44100), reference(model, mix), SOURCES)


def test_repo_folder_with_a_bag_equals_the_packages_own_loader(tmp_path, mix):
    from demucs.pretrained import get_model

    for seed, sig in ((1, "aaaa0001"), (2, "bbbb0002")):
        write_th(small_htdemucs(seed), tmp_path, sig)
    write_bag(tmp_path, "mybag", ["aaaa0001", "bbbb0002"], weights=[[1, 0.5, 1, 1], [1, 1, 0.25, 1]])
    theirs = get_model("mybag", repo=tmp_path)  # demucs's own --repo loader (it unpickles: our file)
    op = get_operator("demucs", repo=str(tmp_path), name="mybag", device="cpu")
    assert_same(op.separate(mix, 44100), reference(theirs, mix), SOURCES)
    # The folder's only bag is the default, and a single signature loads alone.
    assert get_operator("demucs", repo=str(tmp_path), device="cpu").stem_names == SOURCES
    one = get_operator("demucs", repo=str(tmp_path), name="bbbb0002", device="cpu")
    assert_same(one.separate(mix, 44100), reference(get_model("bbbb0002", repo=tmp_path), mix), SOURCES)


def test_safetensors_layout_equals_the_packages_own_loader(tmp_path, mix):
    from demucs.apply import BagOfModels
    from demucs.hf import load_safetensors_model

    six = ["drums", "bass", "other", "vocals", "guitar", "piano"]
    model = small_htdemucs(3, sources=six)
    path = write_safetensors(model, tmp_path / "5c90dfd2.safetensors")
    write_bag(tmp_path, "htdemucs_6s", ["5c90dfd2"])
    theirs = BagOfModels([load_safetensors_model(path)])
    op = get_operator("demucs", repo=str(tmp_path), name="htdemucs_6s", device="cpu")
    assert op.stem_names == six
    assert_same(op.separate(mix, 44100), reference(theirs, mix), six)
    single = get_operator("demucs", repo=str(path), device="cpu", overlap=0.5)
    assert_same(single.separate(mix, 44100), reference(model, mix, overlap=0.5), six)


def test_shifts_and_two_stems_follow_the_cli(tmp_path, mix):
    model = small_htdemucs(4)
    path = write_th(model, tmp_path, "cccc0003")
    random.seed(0)
    ref = reference(model, mix, shifts=2)
    op = get_operator("demucs", repo=str(path), device="cpu", shifts=2, two_stems="vocals")
    stems = op.separate(mix, 44100)
    assert list(stems) == ["vocals", "no_vocals"]
    assert_same({"vocals": stems["vocals"]}, ref[3:4], ["vocals"])
    np.testing.assert_allclose(stems["no_vocals"], ref[:3].sum(0), atol=1e-4 * np.abs(ref).max())
    # Seeded shifts: a re-run gives the same stems.
    np.testing.assert_array_equal(op.separate(mix, 44100)["vocals"], stems["vocals"])


def _stream(audio: np.ndarray, sr: int, piece: int = 10000) -> AudioStream:
    blocks = (audio[:, i : i + piece] for i in range(0, audio.shape[1], piece))
    return AudioStream("memory", sr, audio.shape[0], audio.shape[1], blocks)


@pytest.mark.parametrize("sr", [44100, 48000])
def test_streamed_blocks_equal_the_whole_track(tmp_path, sr):
    path = write_th(small_htdemucs(5), tmp_path, "dddd0004")
    op = get_operator("demucs", repo=str(path), device="cpu")
    audio = mixture_signal(9.0, sr=sr, seed=7)
    whole = op.separate(audio, sr)
    pieces = list(separate_blocks(op, _stream(audio, sr), block_s=2.0))
    assert len(pieces) >= 3
    streamed = {n: np.concatenate([p[n] for _, p in pieces], axis=1) for n in op.stem_names}
    peak = max(np.abs(s).max() for s in whole.values())
    worst = max(np.abs(streamed[n] - whole[n]).max() for n in whole)
    # At 44.1 kHz the chunks are the same samples; at 48 kHz the resampler's block edges
    # lie a chunk away from the kept samples.
    assert worst <= (1e-5 if sr == 44100 else 1e-4) * peak, f"streamed vs whole: {worst:.3g} (peak {peak:.3g})"


@pytest.mark.parametrize("channels", [1, 3])
def test_any_channel_count_through_the_stereo_model(tmp_path, channels):
    path = write_th(small_htdemucs(6), tmp_path, "eeee0005")
    op = get_operator("demucs", repo=str(path), device="cpu")
    audio = mixture_signal(2.0, sr=22050, channels=channels)
    stems = op.separate(audio, 22050)
    assert all(s.shape == audio.shape and s.dtype == np.float32 for s in stems.values())
    if channels == 1:
        stereo = op.separate(np.repeat(audio, 2, axis=0), 22050)
        np.testing.assert_allclose(stems["vocals"][0], stereo["vocals"].mean(0), atol=1e-6)


def test_config_mistakes_name_the_parameter(tmp_path):
    path = write_th(small_htdemucs(7), tmp_path, "ffff0006")
    cases = [
        ({}, "parameter 'repo'", "downloads nothing"),
        ({"repo": str(tmp_path / "missing")}, "parameter 'repo'", "no such file"),
        ({"repo": str(tmp_path), "name": "htdemucs_ft"}, "parameter 'name'", "ffff0006"),
        ({"repo": str(path), "two_stems": "guitar"}, "parameter 'two_stems'", "drums, bass, other, vocals"),
        ({"repo": str(path), "segment": 5.0}, "parameter 'segment'", "1.00 s"),
    ]
    for params, key, detail in cases:
        with pytest.raises(OperatorConfigError) as info:
            get_operator("demucs", device="cpu", **params)
        message = str(info.value)
        assert key in message and detail in message and "\n" not in message, message


def test_checksum_and_foreign_files_are_refused(tmp_path):
    path = write_th(small_htdemucs(8), tmp_path, "abab0007")
    bad = path.with_name("abab0007-00000000.th")
    path.rename(bad)
    with pytest.raises(OperatorConfigError, match="checksum mismatch"):
        get_operator("demucs", repo=str(bad))
    junk = tmp_path / "junk.th"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(OperatorConfigError, match="not a readable PyTorch checkpoint"):
        get_operator("demucs", repo=str(junk))


class _Exploit:
    """Unpickling this runs a command that creates a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (subprocess.call, (["touch", str(self.marker)],))


def test_a_checkpoint_that_would_run_code_is_refused_and_the_code_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "htdemucs.th"
    model = small_htdemucs(9)
    package = {"klass": type(model), "args": [], "kwargs": {}, "state": {"x": _Exploit(marker)}}
    torch.save(package, evil)
    assert not marker.exists()
    with pytest.raises(OperatorConfigError) as info:
        get_operator("demucs", repo=str(evil))
    message = str(info.value)
    assert "refused: it asks for" in message and "call" in message and "\n" not in message, message
    assert not marker.exists(), "unpickling ran the checkpoint's code"
    # The same file through the command line: one line, exit 2, the code never runs.
    out = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "run", "--runner=DirectRunner", "--operator", "demucs",
         "--set", f"demucs.repo={evil}", "-i", str(tmp_path), "-o", str(tmp_path / "out")],
        check=False, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 2, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "refused" in out.stderr, out.stderr
    assert not marker.exists()


def test_safetensors_naming_a_foreign_class_is_refused(tmp_path):
    model = small_htdemucs(10)
    path = write_safetensors(model, tmp_path / "x.safetensors", klass="os.system")
    with pytest.raises(OperatorConfigError, match="class 'os.system'"):
        get_operator("demucs", repo=str(path))


def test_a_published_bag_name_finds_its_model_files_without_the_yaml(tmp_path, mix):
    # htdemucs_6s is one model, 5c90dfd2, in the demucs package's own remote/htdemucs_6s.yaml.
    six = ["drums", "bass", "other", "vocals", "guitar", "piano"]
    model = small_htdemucs(12, sources=six)
    write_th(model, tmp_path, "5c90dfd2")
    write_th(small_htdemucs(13), tmp_path, "00000001")  # another model: no default any more
    op = get_operator("demucs", repo=str(tmp_path), name="htdemucs_6s", device="cpu")
    assert_same(op.separate(mix, 44100), reference(model, mix), six)
    with pytest.raises(OperatorConfigError, match="'name'.*htdemucs_ft is the demucs bag of f7e0c4bc.*there: 00000001, 5c90dfd2"):
        get_operator("demucs", repo=str(tmp_path), name="htdemucs_ft")


def test_one_malloc_arena_reaches_the_worker_processes_a_job_starts():
    """The catalog job's workers (the multi-process runner's, Dask's) inherit the setting."""
    import subprocess
    import sys

    code = (
        "import os, subprocess, sys; os.environ.pop('MALLOC_ARENA_MAX', None)\n"
        "from sepops.pretrained import one_malloc_arena, trim_heap\n"
        "one_malloc_arena(); trim_heap()\n"
        "child = subprocess.run([sys.executable, '-c', 'import os; print(os.environ[\"MALLOC_ARENA_MAX\"])'],"
        " capture_output=True, text=True)\n"
        "print(child.stdout.strip())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1"
