"""The Operator registry: names, parameter validation, and the oracle operators."""
from __future__ import annotations

import numpy as np
import pytest

import sepops
from sepops import OperatorConfigError, get_operator, list_operators
from sepops.metrics import bss_eval, mean_sdr, trivial_estimate
from tests.conftest import load_piece, pieces


def test_list_and_unknown_operator():
    names = list_operators()
    assert {"ibm", "irm"} <= set(names)
    with pytest.raises(OperatorConfigError) as err:
        get_operator("no_such_op")
    assert "valid operators" in str(err.value) and "irm" in str(err.value)


def test_unknown_and_mistyped_parameters_name_the_key():
    with pytest.raises(OperatorConfigError, match=r"unknown parameter\(s\) nfft.*valid parameters: .*n_fft"):
        get_operator("irm", nfft=1024)
    with pytest.raises(OperatorConfigError, match="'n_fft'.*integer"):
        get_operator("irm", n_fft="big")
    with pytest.raises(OperatorConfigError, match="power"):
        get_operator("irm", power=-1)


def test_string_values_are_coerced_as_from_a_command_line():
    op = get_operator("irm", n_fft="1024", hop_length="256", power="2", stems="a,b")
    assert (op.config.n_fft, op.config.hop_length, op.config.power, op.config.stems) == (1024, 256, 2.0, ("a", "b"))
    assert '"n_fft": 1024' in op.params_json()


def test_every_registered_operator_has_a_documented_config():
    for name in list_operators():
        cls = sepops.registry.operator_class(name)
        assert cls.__doc__ and cls.Config.__dataclass_fields__


def test_oracles_need_references():
    with pytest.raises(ValueError, match="references"):
        get_operator("irm").separate(np.zeros((1, 1000), np.float32), 22050)


def test_oracle_masks_are_the_ceiling(data_dir, manifest):
    piece = pieces(manifest, "loops")[0]
    mix, sr, refs = load_piece(data_dir, piece)
    irm = get_operator("irm").separate(mix, sr, references=refs)
    ibm = get_operator("ibm").separate(mix, sr, references=refs)
    np.testing.assert_allclose(sum(irm.values()), mix, atol=1e-4)
    triv = mean_sdr(bss_eval(refs, trivial_estimate(mix, refs)))
    # measured on loop_1101: IRM 18.0 dB, IBM 15.7 dB, trivial 0.0 dB
    assert mean_sdr(bss_eval(refs, irm)) > triv + 15
    assert mean_sdr(bss_eval(refs, ibm)) > triv + 12


def test_metrics_match_mir_eval(data_dir, manifest):
    import mir_eval

    piece = pieces(manifest, "chorales")[0]
    mix, sr, refs = load_piece(data_dir, piece)
    n = 3 * sr
    refs = {k: v[:, :n] for k, v in refs.items()}
    est = get_operator("irm").separate(mix[:, :n], sr, references=refs)
    ours = bss_eval(refs, est)
    r = np.stack([refs[s][0] for s in refs]).astype(np.float64)
    e = np.stack([est[s][0] for s in refs]).astype(np.float64)
    sdr, sir, sar, _ = mir_eval.separation.bss_eval_sources(r, e, compute_permutation=False)
    np.testing.assert_allclose([ours[s].sdr for s in refs], sdr, atol=1e-6)
    np.testing.assert_allclose([ours[s].sir for s in refs], sir, atol=1e-6)
    np.testing.assert_allclose([ours[s].sar for s in refs], sar, atol=1e-6)


def test_metrics_work_whatever_torch_threads(data_dir, manifest):
    """torch 2.13's batched solve breaks with several threads; bss_eval must not."""
    import torch

    piece = pieces(manifest, "loops")[0]
    mix, sr, refs = load_piece(data_dir, piece)
    n = 2 * sr
    refs = {k: v[:, :n] for k, v in refs.items()}
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        scores = bss_eval(refs, trivial_estimate(mix[:, :n], refs))
    finally:
        torch.set_num_threads(before)
    assert all(np.isfinite(s.sdr) for s in scores.values())
