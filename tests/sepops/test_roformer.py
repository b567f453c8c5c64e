"""The ``roformer`` operator against golden outputs of the reference implementation
(ZFTurbo/Music-Source-Separation-Training, written by scripts/make_roformer_goldens.py):
one chunk through the network, the chunked ``demix``, safe YAML reading, checkpoints that do
not fit their YAML, exact block-by-block separation, other rates and channel counts, and the
published configs' network sizes."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

import sepops
from sepops import OperatorConfigError, get_operator
from sepops.blocks import separate_blocks
from sepops.errors import CheckpointError
from sepops.pretrained import load_yaml
from sepops.stream import AudioStream

pytestmark = pytest.mark.usefixtures("torch_one_thread")

DATA = Path(__file__).resolve().parents[1] / "data" / "roformer"
MODELS = ["bs_roformer_tiny", "mel_band_roformer_tiny"]


@pytest.fixture(scope="module")
def mix() -> np.ndarray:
    return np.load(DATA / "input.npy").astype(np.float32)


@pytest.fixture(scope="module", params=MODELS)
def golden(request):
    name = request.param
    op = get_operator("roformer", checkpoint=str(DATA / f"{name}.ckpt"), device="cpu")
    return name, op, np.load(DATA / f"{name}_expected.npz")


def sdr(ref: np.ndarray, est: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(ref**2) / np.sum((ref - est) ** 2)))


def test_one_chunk_matches_the_reference_network(golden, mix):
    import torch

    name, op, expected = golden
    with torch.inference_mode():
        out = op.model(torch.from_numpy(mix[None, :, : op.spec.chunk_size]))[0].numpy()
    ref = expected["one_chunk"]
    assert out.shape == ref.shape
    err = np.abs(out - ref).max() / np.abs(ref).max()
    assert err <= 1e-4, f"{name}: max |diff| {err:.2e} of the peak"


def test_chunked_inference_matches_the_reference_demix(golden, mix):
    name, op, expected = golden
    stems = op.separate(mix, 44100)
    assert list(stems) == op.stem_names
    assert [str(k) for k in expected["stems"]] == list(op.spec.model_stems)
    got = np.stack([stems[k] for k in op.spec.model_stems])
    ref = expected["demix"].astype(np.float32)  # float16 storage: about 74 dB
    figure = sdr(ref, got)
    assert figure >= 40, f"{name}: SDR {figure:.1f} dB against the reference demix"
    assert np.abs(got - ref).max() <= 2e-3 * np.abs(ref).max()
    if op.spec.complement:  # the target and the rest of the mixture
        assert op.stem_names == ["vocals", "other"]
        np.testing.assert_allclose(stems["vocals"] + stems["other"], mix, atol=1e-6)


def test_the_yaml_reads_python_tuples_and_refuses_other_unsafe_tags(tmp_path):
    raw = load_yaml(DATA / "bs_roformer_tiny.yaml")
    assert raw["model"]["freqs_per_bands"] == (2, 2, 4, 4, 8, 8, 16, 16, 32, 32, 133)
    bad = tmp_path / "bad.yaml"
    bad.write_text((DATA / "bs_roformer_tiny.yaml").read_text() + "evil: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(CheckpointError, match="not a usable YAML"):
        load_yaml(bad)
    with pytest.raises(OperatorConfigError, match="^operator 'roformer' parameter 'config': .*not a usable YAML"):
        get_operator("roformer", checkpoint=str(DATA / "bs_roformer_tiny.ckpt"), config=str(bad))


def test_a_checkpoint_that_does_not_match_its_yaml_is_refused(tmp_path):
    text = (DATA / "bs_roformer_tiny.yaml").read_text()
    yaml2 = tmp_path / "two.yaml"
    yaml2.write_text(text.replace("num_stems: 1", "num_stems: 2").replace("target_instrument: vocals", "target_instrument: null"))
    with pytest.raises(OperatorConfigError) as err:
        get_operator("roformer", checkpoint=str(DATA / "bs_roformer_tiny.ckpt"), config=str(yaml2))
    message = str(err.value)
    assert message.startswith("operator 'roformer' parameter 'checkpoint':")
    assert "does not match the YAML" in message and "missing keys such as mask_estimators.1" in message
    assert "num_stems 2 in the YAML" in message
    # The other network's checkpoint: keys of the other shape and unexpected ones.
    with pytest.raises(OperatorConfigError, match="parameter 'checkpoint'.*unexpected keys"):
        get_operator("roformer", checkpoint=str(DATA / "mel_band_roformer_tiny.ckpt"),
                     config=str(DATA / "bs_roformer_tiny.yaml"))


def test_parameters_are_checked_before_a_job_starts(tmp_path):
    cls = sepops.registry.operator_class("roformer")
    with pytest.raises(OperatorConfigError, match="^operator 'roformer' parameter 'checkpoint': give the path"):
        cls.make_config()
    with pytest.raises(OperatorConfigError, match="parameter 'checkpoint'.*no such file"):
        cls.make_config(checkpoint=str(tmp_path / "nope.ckpt"))
    shutil.copy(DATA / "bs_roformer_tiny.ckpt", tmp_path / "m.ckpt")  # no YAML beside it
    with pytest.raises(OperatorConfigError, match="parameter 'config'.*m.yaml: no such file"):
        cls.make_config(checkpoint=str(tmp_path / "m.ckpt"))
    with pytest.raises(OperatorConfigError, match="batch_size"):
        cls.make_config(checkpoint=str(DATA / "bs_roformer_tiny.ckpt"), batch_size=-1)
    unknown = tmp_path / "u.yaml"
    unknown.write_text((DATA / "bs_roformer_tiny.yaml").read_text().replace(
        "  skip_connection: true", "  skip_connection: true\n  use_pope: true"))
    with pytest.raises(OperatorConfigError, match="parameter 'config'.*PoPE"):
        cls.make_config(checkpoint=str(DATA / "bs_roformer_tiny.ckpt"), config=str(unknown))


def test_wrapped_safetensors_and_remote_checkpoints_load(tmp_path, monkeypatch, mix):
    import fsspec
    import torch
    from safetensors.torch import save_file

    state = torch.load(DATA / "bs_roformer_tiny.ckpt", weights_only=True)
    reference = get_operator("roformer", checkpoint=str(DATA / "bs_roformer_tiny.ckpt"), device="cpu")
    x = mix[:, :12000]
    want = reference.separate(x, 44100)["vocals"]
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, tmp_path / "w.pth")
    save_file({k: v.clone() for k, v in state.items()}, str(tmp_path / "s.safetensors"))
    for name in ("w.pth", "s.safetensors"):
        op = get_operator("roformer", checkpoint=str(tmp_path / name), config=str(DATA / "bs_roformer_tiny.yaml"), device="cpu")
        np.testing.assert_array_equal(op.separate(x, 44100)["vocals"], want)
    monkeypatch.setenv("SEPFLOW_MODEL_CACHE", str(tmp_path / "cache"))
    for suffix in (".ckpt", ".yaml"):
        with fsspec.open(f"memory://roformer-tests/tiny{suffix}", "wb") as f:
            f.write((DATA / f"bs_roformer_tiny{suffix}").read_bytes())
    op = get_operator("roformer", checkpoint="memory://roformer-tests/tiny.ckpt", device="cpu", batch_size=1)
    assert op.spec.batch_size == 1 and op.stem_names == ["vocals", "other"]


def _stream(x: np.ndarray, sr: int) -> AudioStream:
    pieces = (x[:, i : i + 7000] for i in range(0, x.shape[1], 7000))
    return AudioStream("memory", sr, x.shape[0], x.shape[1], pieces)


@pytest.mark.parametrize(("name", "sr", "params"), [
    ("bs_roformer_tiny", 44100, {}),
    ("bs_roformer_tiny", 44100, {"num_overlap": 3, "batch_size": 2}),  # border not a multiple of the step
    ("mel_band_roformer_tiny", 44100, {}),
    # At 48 kHz blocks must start where the grid maps to whole input samples: a chunk of
    # 8820 = 60 * 147 model samples makes that every 19,200 input samples.
    ("bs_roformer_tiny", 48000, {"chunk_size": 8820}),
])
def test_blocks_of_a_stream_equal_the_whole_signal(name, sr, params):
    op = get_operator("roformer", checkpoint=str(DATA / f"{name}.ckpt"), device="cpu", **params)
    rng = np.random.default_rng(5)
    n = int(2.7 * sr)
    t = np.arange(n) / sr
    x = (0.2 * rng.standard_normal((2, n)) + 0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    whole = op.separate(x, sr)
    parts = list(separate_blocks(op, _stream(x, sr), block_s=0.3))
    assert len(parts) >= 5
    peak = max(np.abs(s).max() for s in whole.values())
    for stem, s in whole.items():
        got = np.concatenate([p[1][stem] for p in parts], axis=1)
        err = np.abs(got - s).max() / peak
        # Measured: 0 (bit-identical) at 44.1 kHz; about 1e-7 of the peak at 48 kHz, where the
        # resampler's output on a block differs from the whole signal's at float precision.
        assert err <= (0 if sr == 44100 else 1e-6), f"{stem}: {err:.2e} of the peak"


def test_other_rates_and_channel_counts(mix):
    op = get_operator("roformer", checkpoint=str(DATA / "bs_roformer_tiny.ckpt"), device="cpu")
    x = mix[:, :15000]
    from sepops.audio import resample

    x48 = resample(x, 44100, 48000)
    stems = op.separate(x48, 48000)
    assert all(s.shape == x48.shape and s.dtype == np.float32 for s in stems.values())
    np.testing.assert_allclose(stems["vocals"] + stems["other"], x48, atol=1e-6)
    # The separation at the model's rate, resampled back (and cut to the input's length).
    at_model_rate = op.separate(resample(x48, 48000, 44100), 44100)["vocals"]
    np.testing.assert_array_equal(stems["vocals"], resample(at_model_rate, 44100, 48000)[:, : x48.shape[1]])
    # Mono: the channel doubled through the stereo model, the two outputs averaged.
    mono = op.separate(x[:1], 44100)
    assert mono["vocals"].shape == (1, x.shape[1])
    doubled = op.separate(np.repeat(x[:1], 2, axis=0), 44100)["vocals"]
    np.testing.assert_allclose(mono["vocals"][0], doubled.mean(axis=0), atol=1e-7)
    # Three channels: the first pair as stereo, the third as mono.
    three = op.separate(np.concatenate([x, x[:1]]), 44100)["vocals"]
    np.testing.assert_array_equal(three[:2], op.separate(x, 44100)["vocals"])
    np.testing.assert_allclose(three[2], mono["vocals"][0], atol=1e-7)


@pytest.mark.parametrize(("config", "kind", "params", "chunk", "batch"), [
    # Parameter counts of the reference classes built from the same sections.
    ("model_bs_roformer_ep_317_sdr_12.9755.yaml", "bs_roformer", 159_758_092, 352800, 4),
    ("model_mel_band_roformer_ep_3005_sdr_11.4360.yaml", "mel_band_roformer", 251_869_636, 352800, 4),
    ("config_vocals_mel_band_roformer_kj.yaml", "mel_band_roformer", 228_202_852, 352800, 4),
])
def test_the_published_configs_build_their_networks(config, kind, params, chunk, batch):
    import torch

    from sepops.roformer import block_context, build_model, read_spec
    from sepops.roformer.inference import Grid

    spec = read_spec(DATA / "published" / config)
    assert (spec.kind, spec.sample_rate, spec.chunk_size, spec.num_overlap, spec.batch_size) == (
        kind, 44100, chunk, 2, batch)
    assert spec.stem_names == ["vocals", "other"] and spec.stereo
    with torch.device("meta"):  # shapes only: no memory, no time
        model = build_model(spec)
    assert sum(p.numel() for p in model.parameters()) == params
    # Blocks of such a model start every 16 s and need 12 s each side (16 s once rounded up).
    grid = Grid(spec.chunk_size, spec.num_overlap, spec.batch_size)
    assert (grid.align, block_context(grid)) == (705600, 529200)


def test_the_operator_is_listed_with_documented_parameters():
    from pipelines.cli_operators import parameter_docs

    cls = sepops.registry.operator_class("roformer")
    docs = parameter_docs(cls.Config)
    assert set(docs) == {"checkpoint", "config", "device", "threads", "batch_size", "num_overlap", "chunk_size"}
    assert "roformer" in sepops.list_operators()
