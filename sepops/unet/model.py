"""The spectrogram U-Net of Jansson et al. (ISMIR 2017), as used by Spleeter, in torch.

Encoder: six 5x5 stride-2 convolutions (16, 32, 64, 128, 256, 512 filters, times ``width``),
each followed by batch norm and leaky ReLU (slope 0.2). Decoder: six 5x5 stride-2 transposed
convolutions (256, 128, 64, 32, 16 filters, then one per mask) with ReLU and batch norm,
dropout 0.5 on the first three, skip connections to the encoder, and a final 4x4 dilated
convolution with a sigmoid that gives a mask in [0, 1] per stem.

``shared=False`` builds one U-Net per stem (Spleeter's layout); ``shared=True`` builds one
U-Net whose last layers output all the stems' masks (a CPU-friendly variant: the encoder
is computed once). Channels of the audio are processed independently (as batch items), so
one model serves mono and stereo.

``python -m sepops.unet.model --stems a,b --width 0.5`` prints the parameter count and the
cost of one forward pass.
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError

__all__ = [
    "DOWNSAMPLING",
    "ENCODER_FILTERS",
    "CheckpointError",
    "SeparationUNet",
    "UNet",
    "build_model",
    "load_checkpoint",
    "save_checkpoint",
]

#: ``config.json["format"]`` of a U-Net checkpoint folder.
FORMAT = "sepflow-unet/1"

ENCODER_FILTERS = (16, 32, 64, 128, 256, 512)
#: Input frequency and time sizes must be multiples of this (six stride-2 layers).
DOWNSAMPLING = 2 ** len(ENCODER_FILTERS)


def _scaled(filters: int, width: float) -> int:
    return max(1, round(filters * width))


class UNet(nn.Module):
    """One U-Net mapping a magnitude spectrogram to ``n_masks`` sigmoid masks.

    Parameters
    ----------
    n_masks : int
        Output masks (1 in Spleeter's one-network-per-stem layout).
    width : float
        Multiplier of every layer's filter count (1.0 is the paper's network).
    dropout : float
        Dropout on the first three decoder layers (0.5 in the paper).
    log_input : bool
        Feed ``log(1 + magnitude)`` instead of the magnitude (compresses its range; the
        mask is still applied to the linear magnitude).
    """

    def __init__(self, n_masks: int = 1, width: float = 1.0, dropout: float = 0.5, log_input: bool = False):
        super().__init__()
        self.log_input = log_input
        enc = [_scaled(f, width) for f in ENCODER_FILTERS]
        self.encoder = nn.ModuleList()
        c_in = 1
        for c in enc:
            self.encoder.append(
                nn.Sequential(
                    nn.Conv2d(c_in, c, 5, stride=2, padding=2),
                    nn.BatchNorm2d(c),
                    nn.LeakyReLU(0.2),
                )
            )
            c_in = c
        # Decoder layer i upsamples and is concatenated with encoder layer 4 - i.
        dec = enc[-2::-1] + [n_masks]  # 256, 128, 64, 32, 16, n_masks (times width)
        self.decoder = nn.ModuleList()
        for i, c in enumerate(dec):
            layers = [
                nn.ConvTranspose2d(c_in, c, 5, stride=2, padding=2, output_padding=1),
                nn.ReLU(),
                nn.BatchNorm2d(c),
            ]
            if i < 3 and dropout > 0:
                layers.append(nn.Dropout(dropout))
            self.decoder.append(nn.Sequential(*layers))
            c_in = c * 2 if i < len(dec) - 1 else c
        # Effective kernel 7: padding 3 keeps the size (explicit, as ONNX Runtime lacks "same" with dilation).
        self.mask = nn.Conv2d(n_masks, n_masks, 4, dilation=2, padding=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Masks from magnitudes.

        Parameters
        ----------
        x : torch.Tensor, shape (batch, 1, bins, frames)
            ``bins`` and ``frames`` multiples of 64.

        Returns
        -------
        torch.Tensor, shape (batch, n_masks, bins, frames), values in [0, 1]
        """
        if self.log_input:
            x = torch.log1p(x)
        skips = []
        for layer in self.encoder:
            x = layer(x)
            skips.append(x)
        skips.pop()  # the bottleneck is not concatenated with itself
        for i, layer in enumerate(self.decoder):
            x = layer(x)
            if skips:
                x = torch.cat([x, skips.pop()], dim=1)
        return torch.sigmoid(self.mask(x))


class SeparationUNet(nn.Module):
    """Masks for every stem: one U-Net per stem, or one shared U-Net with a mask per stem.

    Parameters
    ----------
    n_stems : int
    width : float
        Filter multiplier (see :class:`UNet`).
    shared : bool
        One network for all stems (cheaper) instead of one per stem.
    dropout : float
    """

    def __init__(self, n_stems: int, width: float = 1.0, shared: bool = True, dropout: float = 0.5,
                 log_input: bool = False):
        super().__init__()
        self.n_stems = n_stems
        self.shared = shared
        if shared:
            self.nets = nn.ModuleList([UNet(n_stems, width, dropout, log_input)])
        else:
            self.nets = nn.ModuleList([UNet(1, width, dropout, log_input) for _ in range(n_stems)])

    def forward(self, mag: torch.Tensor) -> torch.Tensor:
        """Masks from mixture magnitudes.

        Parameters
        ----------
        mag : torch.Tensor, shape (batch, 1, bins, frames)

        Returns
        -------
        torch.Tensor, shape (batch, n_stems, bins, frames), values in [0, 1]
        """
        return torch.cat([net(mag) for net in self.nets], dim=1)


def build_model(config: dict[str, Any]) -> SeparationUNet:
    """The (untrained) network described by a checkpoint's ``config.json``."""
    net = config["network"]
    return SeparationUNet(
        len(config["stems"]), width=net["width"], shared=net["shared"], dropout=net.get("dropout", 0.5),
        log_input=net.get("log_input", False),
    )


def save_checkpoint(directory: str | Path, model: nn.Module, config: dict[str, Any]) -> None:
    """Write ``model.safetensors`` (float32 weights) and ``config.json`` into ``directory``.

    ``config`` holds ``stems``, ``sample_rate``, ``stft`` (n_fft, hop_length, window),
    ``bins``, ``network`` (width, shared, dropout) and free-form training facts.
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()}
    tmp = directory / ".model.safetensors.tmp"
    save_file(state, str(tmp), metadata={"format": FORMAT})
    tmp.replace(directory / "model.safetensors")
    (directory / "config.json").write_text(json.dumps({"format": FORMAT, **config}, indent=2) + "\n")


def load_checkpoint(directory: str | Path, device: str = "cpu") -> tuple[SeparationUNet, dict[str, Any]]:
    """Load a model folder written by :func:`save_checkpoint`, in eval mode.

    Only safetensors weights are read: a pickled file (``torch.save`` output, ``.pt``,
    ``.ckpt``) is refused and never unpickled.

    Raises
    ------
    CheckpointError
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = Path(directory)
    cfg_path, weights = directory / "config.json", directory / "model.safetensors"
    if not cfg_path.is_file() or not weights.is_file():
        raise CheckpointError(f"{directory}: a U-Net model folder needs config.json and model.safetensors")
    try:
        config = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{cfg_path}: not valid JSON ({exc})") from exc
    if config.get("format") != FORMAT:
        raise CheckpointError(f"{cfg_path}: format {config.get('format')!r}, expected {FORMAT!r}")
    # A safetensors file is an 8-byte little-endian header length, then a JSON header.
    with open(weights, "rb") as f:
        head = f.read(9)
    size = weights.stat().st_size
    if len(head) < 9 or head[8:9] != b"{" or int.from_bytes(head[:8], "little") > size - 8:
        kind = "a pickled (torch.save) checkpoint" if head[:1] == b"\x80" or head[:2] == b"PK" else "not safetensors"
        raise CheckpointError(f"{weights}: {kind}; only safetensors files are loaded, never unpickled")
    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{weights}: not a valid safetensors file ({exc})") from exc
    model = build_model(config)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{weights}: weights do not match config.json ({exc})") from exc
    return model.to(device).eval(), config


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stems", default="accompaniment,lead", help="comma-separated stem names")
    parser.add_argument("--width", type=float, default=1.0, help="filter multiplier")
    parser.add_argument("--separate-nets", action="store_true", help="one U-Net per stem")
    parser.add_argument("--bins", type=int, default=512)
    parser.add_argument("--frames", type=int, default=256)


def main(argv: Sequence[str] | None = None) -> None:
    """Print the size and the CPU time of one forward pass of a network."""
    import time

    parser = argparse.ArgumentParser(prog="python -m sepops.unet.model", description=main.__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    n = len(args.stems.split(","))
    model = SeparationUNet(n, args.width, shared=not args.separate_nets).eval()
    x = torch.rand(1, 1, args.bins, args.frames)
    with torch.inference_mode():
        model(x)
        t = time.perf_counter()
        model(x)
        dt = time.perf_counter() - t
    print(f"{count_parameters(model):,} parameters; forward of {tuple(x.shape)}: {dt * 1e3:.1f} ms "
          f"on {torch.get_num_threads()} threads")


if __name__ == "__main__":
    main()
