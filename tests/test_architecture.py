"""The structure promised by docs/architecture.md: operators never import each other, files
stay small, one error root, one resource resolver, and the documented example operator works
through the library and through the catalog job."""
from __future__ import annotations

import ast
import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import sepops
import sepops.registry
from sepops import masks, resources

ROOT = Path(__file__).resolve().parents[1]
SEPOPS = ROOT / "sepops"
PIPELINES = ROOT / "pipelines"
OPERATOR_MODULES = sorted(p.stem for p in (SEPOPS / "operators").glob("*.py") if p.stem != "__init__")


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(absolute module, names taken from it) for every import of a file, at any depth
    (relative imports resolved; ``import x`` takes no names)."""
    package = ".".join(path.relative_to(ROOT).parts[:-1])
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if not node.level:
                found.append((node.module or "", [a.name for a in node.names]))
                continue
            parts = package.split(".")
            prefix = ".".join(parts[: len(parts) - (node.level - 1)])
            module = f"{prefix}.{node.module}" if node.module else prefix
            found.append((module, [a.name for a in node.names]))
            if not node.module:  # "from . import x" imports the module x
                found += [(f"{module}.{a.name}", []) for a in node.names]
    return found


def _imported_modules(path: Path) -> set[str]:
    """Absolute names of the modules a file imports (relative imports resolved)."""
    return {module for module, _ in _imports(path)}


def test_no_operator_imports_another_operator():
    for name in OPERATOR_MODULES:
        imported = _imported_modules(SEPOPS / "operators" / f"{name}.py")
        others = {f"sepops.operators.{o}" for o in OPERATOR_MODULES if o != name}
        assert not imported & others, f"sepops/operators/{name}.py imports {sorted(imported & others)}"
    # The grep of the issue, literally: no "from .repet" / "from .hpss" ... in sepops/operators/.
    pattern = re.compile(r"^\s*from \.(" + "|".join(OPERATOR_MODULES) + r")\b", re.MULTILINE)
    for path in (SEPOPS / "operators").glob("*.py"):
        if path.name != "__init__.py":
            assert not pattern.search(path.read_text()), path


def test_no_sepops_file_over_500_lines():
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in SEPOPS.rglob("*.py")}
    assert max(sizes.values()) <= 500, sorted(sizes.items(), key=lambda kv: -kv[1])[:3]


def test_sepops_never_imports_pipelines_or_beam():
    for path in SEPOPS.rglob("*.py"):
        imported = _imported_modules(path)
        assert not any(m.split(".")[0] in ("pipelines", "apache_beam") for m in imported), path


def test_one_error_root():
    for exc in (sepops.AudioError, sepops.OperatorConfigError, sepops.ResourceNotFoundError, sepops.CheckpointError):
        assert issubclass(exc, sepops.SepopsError)
    # Config errors stay ValueErrors, as before the root existed.
    assert issubclass(sepops.OperatorConfigError, ValueError)
    assert issubclass(sepops.ResourceNotFoundError, sepops.OperatorConfigError)


@pytest.mark.parametrize("kind", sorted(resources.KINDS))
def test_resources_resolve_by_name_and_path_with_one_error(kind, tmp_path):
    names = resources.shipped(kind)
    assert set(names) >= {"loops_accompaniment_lead", "chorales_satb"}
    path = resources.resolve(kind, names[0])
    assert Path(path).exists()
    assert resources.resolve(kind, path) == path  # a path resolves to itself
    with pytest.raises(sepops.ResourceNotFoundError) as err:
        resources.resolve(kind, "no_such_resource")
    assert "no_such_resource" in str(err.value) and all(n in str(err.value) for n in names)
    with pytest.raises(sepops.ResourceNotFoundError):
        resources.resolve(kind, str(tmp_path / "missing"))
    with pytest.raises(sepops.ResourceNotFoundError):
        resources.resolve(kind, "memory://sepflow-tests/missing")


def test_dictionaries_resolve_from_any_fsspec_uri_models_from_local_folders():
    import fsspec

    data = Path(resources.resolve("nmf_dictionary", "chorales_satb")).read_bytes()
    with fsspec.open("memory://sepflow-tests/satb.npz", "wb") as f:
        f.write(data)
    assert resources.resolve("nmf_dictionary", "memory://sepflow-tests/satb.npz") == "memory://sepflow-tests/satb.npz"
    assert sepops.get_operator("nmf", dictionary="memory://sepflow-tests/satb.npz").stem_names == [
        "soprano", "alto", "tenor", "bass"]
    with pytest.raises(sepops.ResourceNotFoundError, match="local folder"):
        resources.resolve("unet_model", "memory://sepflow-tests/model")


@pytest.mark.parametrize(("operator", "param"), [("nmf", "dictionary"), ("unet", "model")])
def test_a_missing_resource_is_a_config_error_naming_the_parameter(operator, param):
    cls = sepops.registry.operator_class(operator)
    with pytest.raises(sepops.OperatorConfigError) as err:
        cls.make_config(**{param: "nope"})
    message = str(err.value)
    assert f"parameter '{param}'" in message and "'nope' not found" in message
    assert "loops_accompaniment_lead" in message and "chorales_satb" in message
    with pytest.raises(sepops.ResourceNotFoundError):
        sepops.get_operator(operator, **{param: "nope"})


def test_literal_values_are_checked_once_by_the_config_coercion():
    with pytest.raises(sepops.OperatorConfigError, match=r"'mask'.*not one of \['soft', 'binary'\]"):
        sepops.get_operator("repet", mask="ratio")
    with pytest.raises(sepops.OperatorConfigError, match="n_fft"):
        sepops.get_operator("hpss", n_fft=8)  # the STFT check, declared once in StftParams


def test_ratio_mask_pair_is_the_soft_mask_of_two_sources(rng):
    a = rng.random((3, 70, 50), dtype=np.float32)
    b = rng.random((3, 70, 50), dtype=np.float32)
    a[0, :5] = 0.0
    b[0, :3] = 0.0  # bins 0..2 of channel 0: both silent
    eps = masks.MASK_EPS
    for power in (0.5, 0.7, 1.0, 2.0):
        for margin in (1.0, 2.0):
            got = masks.ratio_mask_pair(a, b, power, b_scale=margin)
            want = (a + eps) ** power / ((a + eps) ** power + (margin * b + eps) ** power)
            np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-7)
            np.testing.assert_allclose(got[0, :3], 0.5, rtol=1e-6)  # the tie rule: silent bins are shared
            assert np.all(got[0, 3:5] < 0.01)  # a = 0 < b: all but a trace ((ε / b)^p) to b
    out = a.copy()
    np.testing.assert_array_equal(masks.ratio_mask_pair(out, b, 2.0, out=out), masks.ratio_mask_pair(a, b, 2.0))


def test_margin_masks_sum_to_one_and_need_the_margin(rng):
    h, p = rng.random((2, 40, 30), dtype=np.float32)
    for kind in ("soft", "binary"):
        m_h, m_p, m_r = masks.masks([h, p], kind, 2.0, margin=2.0, residual=True)
        np.testing.assert_allclose(m_h + m_p + m_r, 1.0, atol=1e-6)
        if kind == "binary":
            assert np.array_equal(m_h == 1, h > 2 * p) and np.array_equal(m_p == 1, p > 2 * h)



# --- pipelines: the rules docs/architecture.md states for it --------------------------------
def _pipelines_modules() -> dict[str, Path]:
    return {f"pipelines.{p.stem}": p for p in sorted(PIPELINES.glob("*.py")) if p.stem != "__init__"}


def test_no_pipelines_file_over_400_lines():
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in PIPELINES.glob("*.py")}
    assert max(sizes.values()) <= 400, sorted(sizes.items(), key=lambda kv: -kv[1])[:3]


def test_no_pipelines_function_over_60_lines():
    long = []
    for path in PIPELINES.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 60:
                long.append(f"{path.name}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert not long, long


@pytest.mark.parametrize("package", [SEPOPS, PIPELINES], ids=lambda p: p.name)
def test_no_module_imports_another_modules_private_names(package):
    private = []
    for path in package.rglob("*.py"):
        for module, names in _imports(path):
            if module.split(".")[0] in ("sepops", "pipelines"):
                private += [f"{path.relative_to(ROOT)}: from {module} import {n}" for n in names if n.startswith("_") and not n.startswith("__")]
    assert not private, private


def test_no_import_loop_inside_pipelines():
    modules = _pipelines_modules()
    graph = {name: {m for m in _imported_modules(path) if m in modules and m != name} for name, path in modules.items()}

    def loop_from(start: str) -> list[str] | None:
        stack = [(start, [start])]
        while stack:
            node, trail = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    return [*trail, start]
                if nxt not in trail:
                    stack.append((nxt, [*trail, nxt]))
        return None

    loops = [trail for name in sorted(graph) if (trail := loop_from(name))]
    assert not loops, loops[0]


#: The catalog job's per-track work and the tables run and are tested without Beam.
BEAM_FREE = ["decode", "records", "sink", "tables", "track", "units", "io", "config", "errors", "references",
             "scoring", "evaluation_summary"]


def test_the_track_work_never_imports_beam():
    modules = _pipelines_modules()
    for name in BEAM_FREE:
        seen, todo = set(), [f"pipelines.{name}"]
        while todo:
            module = todo.pop()
            if module in seen:
                continue
            seen.add(module)
            imported = _imported_modules(modules[module])
            assert not any(m.split(".")[0] == "apache_beam" for m in imported), f"{name} imports Beam through {module}"
            todo += [m for m in imported if m in modules]


def test_one_usage_error_root_in_pipelines():
    from pipelines import errors

    roots = []
    for path in PIPELINES.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(getattr(b, "id", "") == "ValueError" for b in node.bases):
                roots.append(f"{path.name}: {node.name}")
    assert roots == ["errors.py: UsageError"], roots
    for name in ("ConfigError", "InputError", "BeamOptionError", "ReportError"):
        assert issubclass(getattr(errors, name), errors.UsageError)


# --- the example operator of docs/architecture.md -------------------------------------------
def _example_operator_module() -> types.ModuleType:
    text = (ROOT / "docs" / "architecture.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", text, re.DOTALL) if "class BandSplitOperator" in b)
    module = types.ModuleType("band_split_example")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(block, "docs/architecture.md", "exec"), module.__dict__)  # noqa: S102 - our own docs
    return module


@pytest.fixture
def band_split():
    module = _example_operator_module()
    yield module
    sepops.registry._REGISTRY.pop("band_split", None)
    sys.modules.pop(module.__name__, None)


def test_the_documented_example_operator_is_short_and_separates(band_split):
    text = (ROOT / "docs" / "architecture.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", text, re.DOTALL) if "class BandSplitOperator" in b)
    assert len([line for line in block.splitlines() if line.strip()]) <= 32
    assert "band_split" in sepops.list_operators()
    sr = 22050
    t = np.arange(2 * sr) / sr
    low, high = 0.5 * np.sin(2 * np.pi * 60 * t), 0.3 * np.sin(2 * np.pi * 3000 * t)
    mix = np.stack([low + high, 0.5 * low + high]).astype(np.float32)
    op = sepops.get_operator("band_split", cutoff_hz=300)
    stems = op.separate(mix, sr)
    assert list(stems) == ["low", "high"]
    np.testing.assert_allclose(stems["low"] + stems["high"], mix, atol=1e-5)
    ref_low = np.stack([low, 0.5 * low])
    err = stems["low"] - ref_low
    assert 10 * np.log10(np.sum(ref_low**2) / np.sum(err**2)) > 20  # SDR of the low tone, dB
    with pytest.raises(sepops.OperatorConfigError, match="cutoff_hz"):
        sepops.get_operator("band_split", cutoff_hz=-1)
    with pytest.raises(sepops.OperatorConfigError, match="mask"):
        sepops.get_operator("band_split", mask="ratio")


def test_the_documented_example_operator_runs_in_the_catalog_job(band_split, tmp_path):
    from pipelines.config import job_config_from_dict
    from pipelines.run import run_job
    from pipelines.tables import read_metadata

    job = job_config_from_dict({"operators": [{"operator": "band_split", "params": {"cutoff_hz": 150}}]})
    summary = run_job(job, [str(ROOT / "examples" / "loop_mono.flac")], str(tmp_path / "out"), progress=False)
    assert (summary.units_ok, summary.units_error) == (1, 0)
    rows = read_metadata(str(tmp_path / "out")).to_pylist()
    assert sorted(r["stem"] for r in rows) == ["high", "low"] and all(r["status"] == "ok" for r in rows)
    assert all(Path(r["stem_uri"]).is_file() for r in rows)


def test_the_documented_block_context_makes_the_example_stream_exactly(band_split, tmp_path):
    import soundfile as sf

    from sepops.blocks import separate_blocks
    from sepops.stream import open_stream

    text = (ROOT / "docs" / "architecture.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", text, re.DOTALL) if "class StreamingBandSplit" in b)
    exec(compile(block, "docs/architecture.md", "exec"), band_split.__dict__)  # noqa: S102 - our own docs
    op = band_split.StreamingBandSplitOperator(cutoff_hz=300)
    assert op.works_in_blocks and not band_split.BandSplitOperator().works_in_blocks
    audio = np.random.default_rng(0).standard_normal((2, 5 * 22050)).astype(np.float32)
    sf.write(str(tmp_path / "x.wav"), audio.T, 22050, subtype="FLOAT")
    with open_stream(str(tmp_path / "x.wav")) as stream:
        parts = list(separate_blocks(op, stream, block_s=1.0))
    assert len(parts) >= 5
    for name, stem in op.separate(audio, 22050).items():
        np.testing.assert_allclose(np.concatenate([p[1][name] for p in parts], axis=1), stem, atol=1e-6)
