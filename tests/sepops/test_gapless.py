"""Sample-accurate timing: every format's decoded audio lines up with the lossless source to
within 1 ms and has its duration (encoder delay and padding trimmed as gapless players do:
MP4 edit lists and iTunSMPB, the LAME header of MP3, Opus pre-skip), whole or streamed."""
from __future__ import annotations

import io

import av
import numpy as np
import pytest

from sepops import load_audio
from sepops.audio import resample
from sepops.stream import open_stream
from tests.sepops.test_formats import CASES

SR = 44100
SECONDS = 3.0
ONE_MS = SR // 1000


def click_track() -> np.ndarray:
    """(2, 3 s) of silence with short noise clicks at 0.5, 1.3 and 2.2 s."""
    rng = np.random.default_rng(0)
    x = np.zeros((2, int(SECONDS * SR)), np.float32)
    for t in (0.5, 1.3, 2.2):
        i = int(t * SR)
        x[:, i:i + 200] = 0.5 * rng.standard_normal(200) * np.hanning(200)
    return x


def _lag(decoded: np.ndarray, sr: int, ref: np.ndarray) -> int:
    """Samples (at 44.1 kHz) by which ``decoded`` is late against ``ref``."""
    y = resample(decoded, sr, SR)
    n = min(y.shape[1], ref.shape[1])
    corr = np.correlate(y[0, :n], ref[0, :n], "full")
    return int(np.argmax(corr)) - (n - 1)


def _itunes_aac(x: np.ndarray) -> bytes:
    """AAC in MP4 as iTunes-era encoders write it: no edit list, an ``iTunSMPB`` tag."""
    from mutagen.mp4 import MP4, MP4FreeForm

    buf = io.BytesIO()
    with av.open(buf, "w", format="ipod") as out:
        stream = out.add_stream("aac", rate=SR, layout="stereo")
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(x), format="fltp", layout="stereo")
        frame.sample_rate = SR
        for packet in [*stream.encode(frame), *stream.encode(None)]:  # no timestamps: no edit list
            out.mux(packet)
    data = buf.getvalue()
    decoded = sum(f.samples for f in av.open(io.BytesIO(data)).decode(audio=0))
    priming, length = 1024, x.shape[1]
    smpb = f" 00000000 {priming:08X} {decoded - priming - length:08X} {length:016X}" + " 00000000" * 8
    tagged = io.BytesIO(data)
    mp4 = MP4(tagged)
    mp4["----:com.apple.iTunes:iTunSMPB"] = [MP4FreeForm(smpb.encode())]
    tagged.seek(0)
    mp4.save(tagged)
    return tagged.getvalue()


FORMATS = {
    "aac.m4a (edit list)": lambda x: CASES["aac.m4a"][0](x, SR),
    "aac.mp4 (edit list)": lambda x: CASES["aac.mp4"][0](x, SR),
    "aac.m4a (iTunSMPB)": _itunes_aac,
    "alac.m4a": lambda x: CASES["alac.m4a"][0](x, SR),
    "lame.mp3": lambda x: CASES["lame.mp3"][0](x, SR),
    "opus.opus (48 kHz)": lambda x: CASES["opus.opus"][0](x, SR),
    "opus.webm (48 kHz)": lambda x: CASES["opus.webm"][0](x, SR),
    "vorbis.ogg": lambda x: CASES["vorbis.ogg"][0](x, SR),
    "flac.flac": lambda x: CASES["flac.flac"][0](x, SR),
    "pcm.wav (48 kHz)": lambda x: CASES["pcm24.wav"][0](resample(x, SR, 48000), 48000),
}


@pytest.fixture(scope="module")
def clicks():
    return click_track()


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_decoded_audio_lines_up_with_the_source(name, clicks, tmp_path):
    path = tmp_path / ("track." + name.split(" ")[0].rsplit(".", 1)[1])
    path.write_bytes(FORMATS[name](clicks))
    audio, sr = load_audio(str(path))
    assert abs(_lag(audio, sr, clicks)) <= ONE_MS, name
    assert abs(audio.shape[1] / sr - SECONDS) <= 0.001, (name, audio.shape[1] / sr)
    with open_stream(str(path)) as stream:  # the long-track path reads the same samples
        blocks = []
        while (block := stream.read(SR // 3)).shape[1]:
            blocks.append(block)
    streamed = np.concatenate(blocks, axis=1)
    assert streamed.shape == audio.shape and np.allclose(streamed, audio, atol=1e-6), name


def test_formats_without_gapless_information_keep_their_offset(clicks, tmp_path):
    """Raw ADTS AAC carries no delay information (players start it 1024 samples late too);
    documented in docs/pipeline.md, measured here so that the documentation stays true."""
    path = tmp_path / "raw.aac"
    path.write_bytes(CASES["raw.aac"][0](clicks, SR))
    audio, sr = load_audio(str(path))
    assert _lag(audio, sr, clicks) == 1024
