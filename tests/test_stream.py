"""Streams of blocks: reading a file a block at a time, writing a stem as it is made, and
separating block by block with the result of a whole-signal separation."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import sepops
from sepops import AudioError, load_audio
from sepops.blocks import separate_blocks
from sepops.stream import open_stream, open_writer

from .test_formats import encode_av

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def loop():
    audio, sr = load_audio(str(ROOT / "examples" / "loop_stereo.flac"))
    return np.ascontiguousarray(np.tile(audio, (1, 3))), sr


@pytest.mark.parametrize("kind", ["flac", "m4a"])
def test_a_stream_reads_what_load_audio_decodes(loop, tmp_path, kind):
    audio, sr = loop
    path = tmp_path / f"x.{kind}"
    if kind == "flac":
        sf.write(str(path), audio.T, sr, subtype="PCM_24")
    else:
        path.write_bytes(encode_av(audio, sr, "ipod", "aac", bit_rate=128_000))
    whole, _ = load_audio(str(path))
    with open_stream(str(path)) as stream:
        assert (stream.sr, stream.channels) == (sr, 2)
        blocks = []
        while (block := stream.read(10_007)).shape[1]:
            blocks.append(block)
    assert all(b.shape[1] == 10_007 for b in blocks[:-1])
    np.testing.assert_array_equal(np.concatenate(blocks, axis=1), whole)
    with pytest.raises(AudioError) as err, open_stream(str(path), max_duration_s=1.0):
        pass
    assert err.value.kind == "too_long"


def test_a_stem_written_in_blocks_appears_whole_or_not_at_all(loop, tmp_path):
    audio, sr = loop
    out = tmp_path / "stems" / "a.flac"
    with open_writer(str(out), sr, 2) as writer:
        for s in range(0, audio.shape[1], 9000):
            writer.write(audio[:, s : s + 9000])
    back, _ = load_audio(str(out))
    np.testing.assert_allclose(back, audio, atol=2.0**-15 + 1e-7)
    failed = tmp_path / "stems" / "b.flac"
    with pytest.raises(RuntimeError), open_writer(str(failed), sr, 2) as writer:
        writer.write(audio[:, :1000])
        raise RuntimeError("the separation failed half way")
    assert not failed.exists() and sorted(p.name for p in out.parent.iterdir()) == ["a.flac"]
    # An object store gets the finished file in one request.
    with open_writer("memory://sepflow-stream/a.wav", sr, 2, format="wav", subtype="FLOAT") as writer:
        writer.write(audio)
    np.testing.assert_array_equal(load_audio("memory://sepflow-stream/a.wav")[0], audio)


@pytest.mark.parametrize("params", [{}, {"harmonic_stride": 1}, {"residual": True, "mask": "binary"},
                                    {"n_fft": 4096, "hop_length": 1024, "channels": "independent"}])
def test_hpss_in_blocks_equals_the_whole_signal(loop, tmp_path, params):
    audio, sr = loop
    op = sepops.get_operator("hpss", **params)
    whole = op.separate(audio, sr)
    path = tmp_path / "x.wav"
    sf.write(str(path), audio.T, sr, subtype="FLOAT")
    with open_stream(str(path)) as stream:
        parts = list(separate_blocks(op, stream, block_s=5.3))
    assert len(parts) > 3 and parts[0][0] == 0
    for name, stem in whole.items():
        got = np.concatenate([p[1][name] for p in parts], axis=1)
        np.testing.assert_allclose(got, stem, atol=1e-6)  # no seams: float rounding only


def test_operators_with_a_global_model_refuse_blocks(loop, tmp_path):
    audio, sr = loop
    path = tmp_path / "x.wav"
    sf.write(str(path), audio.T, sr)
    for name in ("repet", "nmf", "ica"):
        op = sepops.get_operator(name)
        assert op.block_context(sr) is None
        with open_stream(str(path)) as stream, pytest.raises(ValueError, match="whole track"):
            next(separate_blocks(op, stream))


def test_the_unet_in_blocks_equals_the_whole_signal(loop, tmp_path):
    audio, sr = loop
    op = sepops.get_operator("unet", device="cpu")
    context, align = op.block_context(sr)
    assert context % align == 0 and align % 2 == 0  # 44.1 kHz onto the 22.05 kHz model's window grid
    whole = op.separate(audio, sr)
    path = tmp_path / "x.wav"
    sf.write(str(path), audio.T, sr, subtype="FLOAT")
    with open_stream(str(path)) as stream:
        parts = list(separate_blocks(op, stream, block_s=3.0))
    assert len(parts) > 2
    for name, stem in whole.items():
        np.testing.assert_allclose(np.concatenate([p[1][name] for p in parts], axis=1), stem, atol=2e-6)
