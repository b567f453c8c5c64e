"""Export a trained U-Net to ONNX (``sepflow export-onnx MODEL --out model.onnx``).

The ONNX graph is the network only: ``magnitude`` (batch, 1, bins, frames), float32 ->
``masks`` (batch, stems, bins, frames) in [0, 1]; batch and frames are dynamic (frames a
multiple of 64). The STFT settings, bins and stem names a server needs to build the input
and apply the masks are written beside it as ``<out>.json`` (the model's config.json), and
the same facts are stored in the ONNX file's metadata. After exporting, the graph is run
with onnxruntime on random input and compared with torch.
"""
from __future__ import annotations

import argparse
import json
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["check_onnx", "export_onnx", "main", "run"]


def export_onnx(model: str, out: str | Path, *, opset: int = 17) -> Path:
    """Write the network of ``model`` (shipped name or folder) as ONNX; returns the file.

    Parameters
    ----------
    model : str
        Shipped model name (``loops_accompaniment_lead``) or a model folder.
    out : str or Path
        The ``.onnx`` file to write; its config goes to ``<out>.json``.
    """
    import onnx
    import torch

    from .model import load_checkpoint
    from .separator import model_path

    net, config = load_checkpoint(model_path(model), device="cpu")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    example = torch.rand(1, 1, config["bins"], 128)
    dynamic = {0: "batch", 3: "frames"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        # The TorchScript exporter needs no extra packages (the dynamo one needs onnxscript).
        torch.onnx.export(
            net, (example,), str(out), input_names=["magnitude"], output_names=["masks"],
            dynamic_axes={"magnitude": dynamic, "masks": dynamic}, opset_version=opset, dynamo=False,
        )
    proto = onnx.load(str(out))
    for key in ("stems", "sample_rate", "stft", "bins"):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, json.dumps(config[key])
    onnx.checker.check_model(proto)
    onnx.save(proto, str(out))
    Path(str(out) + ".json").write_text(json.dumps(config, indent=2) + "\n")
    return out


def check_onnx(model: str, onnx_file: str | Path, *, frames: int = 192, batch: int = 2, seed: int = 0) -> float:
    """Largest absolute difference between onnxruntime and torch masks on random magnitudes."""
    import onnxruntime as ort
    import torch

    from .model import load_checkpoint
    from .separator import model_path

    net, config = load_checkpoint(model_path(model), device="cpu")
    rng = np.random.default_rng(seed)
    x = (rng.random((batch, 1, config["bins"], frames)) * 5).astype(np.float32)
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    got = session.run(["masks"], {"magnitude": x})[0]
    with torch.inference_mode():
        want = net(torch.from_numpy(x)).numpy()
    return float(np.abs(got - want).max())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``sepflow export-onnx``."""
    parser.add_argument("model", help="shipped model name or model folder")
    parser.add_argument("--out", required=True, help="ONNX file to write")
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument("--tolerance", type=float, default=1e-4, help="max |onnx - torch| accepted")


def main(argv: Sequence[str] | None = None) -> int:
    """Export a U-Net to ONNX and check it against torch."""
    parser = argparse.ArgumentParser(prog="sepflow export-onnx", description=main.__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Run ``sepflow export-onnx`` from parsed arguments; returns the exit status."""
    path = export_onnx(args.model, args.out, opset=args.opset)
    err = check_onnx(args.model, path)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB) and {path}.json; "
          f"max |onnxruntime - torch| = {err:.2e}")
    if err > args.tolerance:
        print(f"error: above the tolerance {args.tolerance:g}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
