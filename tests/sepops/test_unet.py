"""The U-Net: network shapes, training, checkpoints, chunked inference, shipped models, ONNX."""
from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
import torch

from sepops import get_operator
from sepops.metrics import bss_eval, mean_sdr
from sepops.spectral import StftConfig, stft
from sepops.unet.model import (
    CheckpointError,
    SeparationUNet,
    load_checkpoint,
    save_checkpoint,
)
from sepops.unet.separator import frames_stft, shipped_models
from tests.conftest import load_piece, pieces

pytestmark = pytest.mark.usefixtures("torch_one_thread")


TINY = {
    "stems": ["a", "b"],
    "sample_rate": 22050,
    "stft": {"n_fft": 1024, "hop_length": 256, "window": "hann"},
    "bins": 128,
    "network": {"width": 0.25, "shared": True, "dropout": 0.5},
    "inference": {"segment_frames": 128, "overlap_frames": 32},
}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """An untrained tiny model folder whose batch-norm statistics make its masks vary."""
    torch.manual_seed(0)
    model = SeparationUNet(2, width=0.25)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    path = tmp_path_factory.mktemp("tiny")
    save_checkpoint(path, model, TINY)
    return path


def test_shapes_and_masks_in_unit_interval():
    for shared, log_input in ((True, False), (False, True)):
        model = SeparationUNet(3, width=0.125, shared=shared, log_input=log_input).eval()
        x = torch.rand(2, 1, 128, 192) * 10
        with torch.inference_mode():
            m = model(x)
        assert m.shape == (2, 3, 128, 192)
        assert float(m.min()) >= 0.0 and float(m.max()) <= 1.0


def test_tiny_model_overfits_one_batch():
    torch.manual_seed(0)
    # Stem 0: horizontal lines (tones); stem 1: vertical lines (clicks); both randomly scaled.
    tone = torch.zeros(64, 64)
    tone[[5, 10, 15, 20, 40]] = 3.0
    click = torch.zeros(64, 64)
    click[:, [8, 24, 40, 56]] = 2.0
    stems = torch.stack([torch.stack([tone, click])] * 2) * torch.rand(2, 1, 64, 64) + 0.01
    mix = stems.sum(1, keepdim=True)
    model = SeparationUNet(2, width=0.25, dropout=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        loss = torch.nn.functional.l1_loss(model(mix) * mix, stems)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 10, (losses[0], losses[-1])


def test_checkpoint_round_trip(tiny_dir):
    model, config = load_checkpoint(tiny_dir)
    assert config["stems"] == ["a", "b"] and not model.training
    ref = SeparationUNet(2, width=0.25)
    ref.load_state_dict(model.state_dict())


def test_pickled_checkpoint_is_refused(tiny_dir, tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (tmp_path / "config.json").write_text((tiny_dir / "config.json").read_text())
    # A torch.save archive (zip of pickles) and a bare pickle, both named model.safetensors.
    for writer in (lambda f: torch.save({"x": Payload()}, f), lambda f: pickle.dump(Payload(), f)):
        with open(tmp_path / "model.safetensors", "wb") as f:
            writer(f)
        with pytest.raises(CheckpointError, match="pickle|safetensors"):
            load_checkpoint(tmp_path)
        with pytest.raises(CheckpointError):
            get_operator("unet", model=str(tmp_path))
    assert not marker.exists()


def test_frames_stft_matches_whole_stft(rng):
    x = rng.standard_normal((2, 5000)).astype(np.float32)
    cfg = StftConfig(512, 128)
    whole = stft(x, 512, 128)
    n_total = whole.shape[-1]
    part = frames_stft(x, -7, 20, n_total, cfg)
    assert np.allclose(part[..., 7:], whole[..., :20], atol=1e-5) and not part[..., :7].any()
    tail = frames_stft(x, n_total - 10, n_total + 5, n_total, cfg)
    assert np.allclose(tail[..., :10], whole[..., -10:], atol=1e-5) and not tail[..., 10:].any()


def test_chunked_equals_whole_signal_without_seams(tiny_dir, rng):
    sr = 22050
    t = np.arange(60 * sr) / sr
    x = (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 0.5 * t))
         + 0.1 * rng.standard_normal(t.size)).astype(np.float32)[None]
    whole = get_operator("unet", model=str(tiny_dir), chunk_seconds=0).separate(x, sr)
    chunked_op = get_operator("unet", model=str(tiny_dir), chunk_seconds=7, batch_size=3)
    chunked = chunked_op.separate(x, sr)
    sep = chunked_op.separator
    hop = sep.stft_config.hop_length
    chunk_frames = round(7 * sr / hop / (sep.segment - sep.overlap)) * (sep.segment - sep.overlap)
    borders = np.arange(chunk_frames, x.shape[1] // hop, chunk_frames) * hop
    assert len(borders) >= 5
    for name in ("a", "b"):
        w, c = whole[name], chunked[name]
        assert w.shape == x.shape
        assert np.linalg.norm(c - w) <= 1e-4 * np.linalg.norm(w)
        # No seam: around every chunk border the chunked output matches the whole-signal one.
        for s in borders:
            seg = slice(s - 256, s + 256)
            assert np.abs(c[:, seg] - w[:, seg]).max() <= 1e-4 * np.abs(w).max()
    assert np.allclose(sum(chunked.values()), x, atol=1e-4)  # soft masks sum to one


def test_any_length_rate_and_channels_and_deterministic(tiny_dir, rng):
    op = get_operator("unet", model=str(tiny_dir))
    for shape, sr in [((2, 44100 * 3 + 17), 44100), ((1, 1000), 22050), ((2, 3), 16000)]:
        x = (0.1 * rng.standard_normal(shape)).astype(np.float32)
        out = op.separate(x, sr)
        assert list(out) == ["a", "b"] and all(v.shape == x.shape for v in out.values())
    x = (0.1 * rng.standard_normal((2, 30000))).astype(np.float32)
    a, b = op.separate(x, 22050), op.separate(x, 22050)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    wiener = get_operator("unet", model=str(tiny_dir), wiener_iterations=1).separate(x, 22050)
    assert wiener["a"].shape == x.shape and np.isfinite(wiener["a"]).all()


def test_onnx_round_trip(tiny_dir, tmp_path):
    pytest.importorskip("onnxruntime")
    from sepops.unet.export import check_onnx, export_onnx

    path = export_onnx(str(tiny_dir), tmp_path / "tiny.onnx")
    assert json.loads((tmp_path / "tiny.onnx.json").read_text())["stems"] == ["a", "b"]
    assert check_onnx(str(tiny_dir), path, frames=192, batch=2) < 1e-4


def test_training_cli_on_musdb_style_folder(tmp_path, rng):
    import soundfile as sf

    from sepops.unet import train

    sr = 8000
    for k in range(5):
        d = tmp_path / "data" / f"track{k}"
        d.mkdir(parents=True)
        t = np.arange(2 * sr) / sr
        sf.write(d / "bass.wav", 0.3 * np.sin(2 * np.pi * (60 + 10 * k) * t), sr)
        sf.write(d / "other.wav", 0.1 * rng.standard_normal((t.size, 2)), sr)
    out = tmp_path / "model"
    args = ["--data", str(tmp_path / "data"), "--stems", "bass,other", "--out", str(out), "--steps", "4",
            "--steps-per-epoch", "2", "--batch-size", "2", "--width", "0.125", "--patch-frames", "64",
            "--sample-rate", str(sr), "--n-fft", "256", "--hop", "64", "--bins", "128", "--valid-pieces", "1",
            "--threads", "1", "--quiet"]
    train.main(args)
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log if "epoch" in r] == [1, 2]
    train.main([*args, "--steps", "6", "--resume"])
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log if "epoch" in r] == [1, 2, 3]
    config = json.loads((out / "config.json").read_text())
    assert config["training"]["command"].startswith("sepflow train unet --data")
    op = get_operator("unet", model=str(out))
    assert op.stem_names == ["bass", "other"]


@pytest.mark.parametrize("name", shipped_models())
def test_shipped_model_reproduces_recorded_sdr(name, data_dir, manifest):
    op = get_operator("unet", model=name, device="cpu")
    record = json.loads((op.path / "config.json").read_text())["validation"]
    subset = record["subset"]
    scores = []
    for piece in pieces(manifest, subset)[: record["quick_pieces"]]:
        mix, sr, refs = load_piece(data_dir, piece)
        scores.append(mean_sdr(bss_eval(refs, op.separate(mix, sr)), op.stem_names))
    assert abs(float(np.mean(scores)) - record["quick_sdr"]) < 0.2
    assert (op.path / "model.safetensors").stat().st_size <= 15e6
