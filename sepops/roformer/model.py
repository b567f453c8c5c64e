"""Band-Split RoFormer (Lu et al. 2023) and Mel-Band RoFormer (Wang et al. 2023), inference only.

Written for sepflow, with the module tree of the de-facto training code
(ZFTurbo/Music-Source-Separation-Training, ``models/bs_roformer``) so that its checkpoints
load with ``load_state_dict(strict=True)``: every ``state_dict()`` key and shape is the
same for the same YAML ``model:`` section. Where the training code has a dropout or an
einops layer inside an ``nn.Sequential`` this code has an ``nn.Identity``: it holds no
weights but keeps the indices of the layers after it (``to_out.0.weight``).

The network, for audio ``(batch, channels, samples)``:

1. STFT of each channel; real and imaginary parts of every bin of a band (all channels)
   are one vector; :class:`BandSplit` projects each band to ``dim`` features. The bands are
   contiguous (``freqs_per_bands``, BS-RoFormer) or the bins under each of ``num_bands``
   triangular mel filters, which overlap (Mel-Band RoFormer).
2. ``depth`` times: a transformer along time (per band), then one along the bands (per
   frame), each with rotary position embeddings (:class:`RotaryEmbedding`), optionally
   preceded by a linear-attention transformer over all (frame, band) tokens.
3. One :class:`MaskEstimator` per stem turns the features back into a complex mask per bin;
   on the mel variant, bins under several bands get the mean of their masks.
4. The mixture STFT times each mask, inverse STFT (DC zeroed when ``zero_dc``).
"""
from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

__all__ = ["DEFAULT_FREQS_PER_BANDS", "BSRoformer", "MelBandRoformer", "RotaryEmbedding"]

#: BS-RoFormer's default band split of the 1025 bins of a 2048-point STFT.
DEFAULT_FREQS_PER_BANDS = (
    (2,) * 24 + (4,) * 12 + (12,) * 8 + (24,) * 8 + (48,) * 8 + (128, 129)
)


class RMSNorm(nn.Module):
    """``x / |x| * sqrt(dim) * gamma`` over the last axis."""

    def __init__(self, dim: int):
        super().__init__()
        self.scale = dim**0.5
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return F.normalize(x, dim=-1) * self.scale * self.gamma


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (Su et al. 2021) with interleaved pairs, as
    rotary_embedding_torch's ``RotaryEmbedding(dim)`` defaults: feature pairs ``(2i, 2i+1)``
    are rotated by ``position * theta**(-2i/dim)``.

    ``freqs`` is a (non-trained) parameter because the checkpoints hold it.
    """

    def __init__(self, dim: int, theta: float = 10000.0):
        super().__init__()
        freqs = 1.0 / theta ** (torch.arange(0, dim, 2)[: dim // 2].float() / dim)
        self.freqs = nn.Parameter(freqs, requires_grad=False)

    def rotate(self, t):
        """``t`` (..., n, d) rotated by position along its second to last axis."""
        n = t.shape[-2]
        # Positions in t's dtype, then angles and the rotation in float32, as the reference
        # does (it turns autocast off there), and the result back in t's dtype.
        pos = torch.arange(n, device=t.device, dtype=t.dtype).float()
        angles = (pos[:, None] * self.freqs.float()).repeat_interleave(2, dim=-1)  # (n, d)
        x = t.float()
        pairs = x.unflatten(-1, (-1, 2))
        rotated = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
        return (x * angles.cos() + rotated * angles.sin()).to(t.dtype)


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        inner = int(dim * mult)
        self.net = nn.Sequential(
            RMSNorm(dim), nn.Linear(dim, inner), nn.GELU(), nn.Identity(), nn.Linear(inner, dim), nn.Identity()
        )

    def forward(self, x):
        return self.net(x)


class Attention(nn.Module):
    """Multi-head self-attention with rotary positions and a sigmoid gate per head."""

    def __init__(self, dim: int, heads: int, dim_head: int, rotary: RotaryEmbedding):
        super().__init__()
        self.heads = heads
        inner = heads * dim_head
        self.rotary_embed = rotary  # shared by all layers of one axis, as in the checkpoints
        self.norm = RMSNorm(dim)
        self.to_qkv = nn.Linear(dim, inner * 3, bias=False)
        self.to_gates = nn.Linear(dim, heads)
        self.to_out = nn.Sequential(nn.Linear(inner, dim, bias=False), nn.Identity())

    def forward(self, x):
        """x: (batch, n, dim) -> (batch, n, dim)."""
        x = self.norm(x)
        q, k, v = rearrange(self.to_qkv(x), "b n (qkv h d) -> qkv b h n d", qkv=3, h=self.heads)
        q, k = self.rotary_embed.rotate(q), self.rotary_embed.rotate(k)
        out = F.scaled_dot_product_attention(q, k, v)
        out = out * rearrange(self.to_gates(x), "b n h -> b h n 1").sigmoid()
        return self.to_out(rearrange(out, "b h n d -> b n (h d)"))


class LinearAttention(nn.Module):
    """Cross-covariance attention (El-Nouby et al. 2021): softmax over feature channels of
    L2-normalised queries and keys, so the cost is linear in the number of tokens."""

    def __init__(self, dim: int, heads: int, dim_head: int, scale: float = 8.0):
        super().__init__()
        self.heads, self.scale = heads, scale
        inner = heads * dim_head
        self.norm = RMSNorm(dim)
        self.to_qkv = nn.Sequential(nn.Linear(dim, inner * 3, bias=False))
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.to_out = nn.Sequential(nn.Identity(), nn.Linear(inner, dim, bias=False))

    def forward(self, x):
        """x: (batch, n, dim) -> (batch, n, dim)."""
        x = self.norm(x)
        q, k, v = rearrange(self.to_qkv(x), "b n (qkv h d) -> qkv b h d n", qkv=3, h=self.heads)
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        q = q * self.temperature.exp()
        # Tokens are the last axis here: the (d x d) attention mixes feature channels.
        out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        return self.to_out[1](rearrange(out, "b h d n -> b n (h d)"))


class Transformer(nn.Module):
    """``depth`` pre-norm residual (attention, feed-forward) layers, then an optional norm."""

    def __init__(self, dim: int, depth: int, heads: int, dim_head: int, *, rotary: RotaryEmbedding | None,
                 linear: bool = False, norm_output: bool = True):
        super().__init__()
        self.layers = nn.ModuleList()
        for _ in range(depth):
            attn = LinearAttention(dim, heads, dim_head) if linear else Attention(dim, heads, dim_head, rotary)
            self.layers.append(nn.ModuleList([attn, FeedForward(dim)]))
        self.norm = RMSNorm(dim) if norm_output else nn.Identity()

    def forward(self, x):
        for attn, ff in self.layers:
            x = attn(x) + x
            x = ff(x) + x
        return self.norm(x)


class BandSplit(nn.Module):
    """(batch, frames, sum(band_dims)) -> (batch, frames, bands, dim): a norm and a linear
    projection per band."""

    def __init__(self, dim: int, band_dims: tuple[int, ...]):
        super().__init__()
        self.band_dims = tuple(band_dims)
        self.to_features = nn.ModuleList(nn.Sequential(RMSNorm(d), nn.Linear(d, dim)) for d in band_dims)

    def forward(self, x):
        parts = x.split(self.band_dims, dim=-1)
        return torch.stack([f(p) for p, f in zip(parts, self.to_features)], dim=-2)


def _mlp(dim_in: int, dim_out: int, hidden: int, n_hidden: int) -> nn.Sequential:
    """Linear layers with tanh between them; ``n_hidden`` hidden layers of width ``hidden``."""
    dims = (dim_in, *(hidden,) * n_hidden, dim_out)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(dims)):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2:
            layers.append(nn.Tanh())
    return nn.Sequential(*layers)


class MaskEstimator(nn.Module):
    """(batch, frames, bands, dim) -> (batch, frames, sum(band_dims)): an MLP and a GLU per
    band."""

    def __init__(self, dim: int, band_dims: tuple[int, ...], n_hidden: int, expansion: int):
        super().__init__()
        self.to_freqs = nn.ModuleList(
            nn.Sequential(_mlp(dim, d * 2, dim * expansion, n_hidden), nn.GLU(dim=-1)) for d in band_dims
        )

    def forward(self, x):
        return torch.cat([f(b) for b, f in zip(x.unbind(dim=-2), self.to_freqs)], dim=-1)


class _Roformer(nn.Module):
    """What both variants share; subclasses say how bins become bands and masks become bins."""

    def __init__(self, dim: int, *, depth: int, stereo: bool = False, num_stems: int = 1,
                 time_transformer_depth: int = 2, freq_transformer_depth: int = 2,
                 linear_transformer_depth: int = 0, dim_head: int = 64, heads: int = 8,
                 stft_n_fft: int = 2048, stft_hop_length: int = 512, stft_win_length: int = 2048,
                 stft_normalized: bool = False, zero_dc: bool = True, mlp_expansion_factor: int = 4,
                 skip_connection: bool = False, norm_output: bool, final_norm: bool):
        super().__init__()
        self.audio_channels = 2 if stereo else 1
        self.num_stems = num_stems
        self.skip_connection = skip_connection
        self.zero_dc = zero_dc
        self.stft_kwargs = {"n_fft": stft_n_fft, "hop_length": stft_hop_length, "win_length": stft_win_length,
                            "normalized": stft_normalized}
        self.register_buffer("window", torch.hann_window(stft_win_length), persistent=False)
        time_rotary, freq_rotary = RotaryEmbedding(dim_head), RotaryEmbedding(dim_head)
        common = {"dim": dim, "heads": heads, "dim_head": dim_head, "norm_output": norm_output}
        self.layers = nn.ModuleList()
        for _ in range(depth):
            blocks = []
            if linear_transformer_depth > 0:
                blocks.append(Transformer(depth=linear_transformer_depth, rotary=None, linear=True, **common))
            blocks.append(Transformer(depth=time_transformer_depth, rotary=time_rotary, **common))
            blocks.append(Transformer(depth=freq_transformer_depth, rotary=freq_rotary, **common))
            self.layers.append(nn.ModuleList(blocks))
        if final_norm:
            self.final_norm = RMSNorm(dim)
        self.n_freqs = stft_n_fft // 2 + 1

    def _heads(self, dim: int, band_bins: list[int], mask_estimator_depth: int, n_hidden: int,
               mlp_expansion_factor: int) -> None:
        band_dims = tuple(2 * f * self.audio_channels for f in band_bins)
        self.band_split = BandSplit(dim, band_dims)
        self.mask_estimators = nn.ModuleList(
            MaskEstimator(dim, band_dims, n_hidden, mlp_expansion_factor) for _ in range(self.num_stems)
        )

    def _features(self, spec):
        """(batch, bins * channels, frames, 2) -> (batch, frames, band inputs)."""
        raise NotImplementedError

    def _masked(self, spec, masks):
        """Mixture ``spec`` (batch, 1, bins * channels, frames) complex times ``masks``
        (batch, stems, band inputs / 2, frames) complex."""
        raise NotImplementedError

    def _out_length(self, n: int) -> int | None:
        return n

    def forward(self, audio):
        """audio (batch, channels, samples) -> stems (batch, stems, channels, samples')."""
        b, s, n = audio.shape
        if s != self.audio_channels:
            raise ValueError(f"the model takes {self.audio_channels} channel(s), got {s}")
        spec = torch.stft(audio.reshape(b * s, n), **self.stft_kwargs, window=self.window, return_complex=True)
        spec = torch.view_as_real(spec)  # (b*s, f, t, 2)
        spec = rearrange(spec, "(b s) f t c -> b (f s) t c", b=b)  # channels interleaved per bin
        x = self.band_split(self._features(spec))  # (b, t, bands, d)
        x = self._transform(x)
        masks = torch.stack([est(x) for est in self.mask_estimators], dim=1)  # (b, n, t, (f c))
        masks = rearrange(masks.float(), "b n t (f c) -> b n f t c", c=2)
        out = self._masked(torch.view_as_complex(spec.contiguous())[:, None], torch.view_as_complex(masks.contiguous()))
        out = rearrange(out, "b n (f s) t -> (b n s) f t", s=s)
        if self.zero_dc:
            out = out.index_fill(1, torch.tensor(0, device=out.device), 0.0)
        y = torch.istft(out, **self.stft_kwargs, window=self.window, return_complex=False,
                        length=self._out_length(n))
        return rearrange(y, "(b n s) t -> b n s t", b=b, s=s)

    def _transform(self, x):
        """The axial transformers: (b, t, bands, d) -> same."""
        store = []
        for i, blocks in enumerate(self.layers):
            if len(blocks) == 3:
                linear, time_t, freq_t = blocks
                b, t, f, d = x.shape
                x = linear(x.reshape(b, t * f, d)).reshape(b, t, f, d)
            else:
                time_t, freq_t = blocks
            if self.skip_connection:
                for earlier in store:
                    x = x + earlier
            b, t, f, d = x.shape
            x = time_t(x.transpose(1, 2).reshape(b * f, t, d)).reshape(b, f, t, d).transpose(1, 2)
            x = freq_t(x.reshape(b * t, f, d)).reshape(b, t, f, d)
            if self.skip_connection:
                store.append(x)
        return self.final_norm(x) if hasattr(self, "final_norm") else x


class BSRoformer(_Roformer):
    """Band-Split RoFormer: contiguous bands of ``freqs_per_bands`` bins (summing to
    ``stft_n_fft // 2 + 1``), a final norm, mask MLPs of ``mask_estimator_depth`` layers."""

    def __init__(self, dim: int, *, freqs_per_bands: tuple[int, ...] = DEFAULT_FREQS_PER_BANDS,
                 mask_estimator_depth: int = 2, mlp_expansion_factor: int = 4, **kwargs):
        super().__init__(dim, mlp_expansion_factor=mlp_expansion_factor, norm_output=False, final_norm=True, **kwargs)
        freqs_per_bands = tuple(int(f) for f in freqs_per_bands)
        if len(freqs_per_bands) < 2 or sum(freqs_per_bands) != self.n_freqs:
            raise ValueError(
                f"freqs_per_bands must list at least two bands whose bins sum to {self.n_freqs} "
                f"(stft_n_fft // 2 + 1), got {len(freqs_per_bands)} bands of {sum(freqs_per_bands)} bins"
            )
        self._heads(dim, list(freqs_per_bands), mask_estimator_depth, mask_estimator_depth - 1, mlp_expansion_factor)

    def _features(self, spec):
        return rearrange(spec, "b f t c -> b t (f c)")

    def _masked(self, spec, masks):
        return spec * masks


class MelBandRoformer(_Roformer):
    """Mel-Band RoFormer: ``num_bands`` overlapping bands, the bins under each of librosa's
    Slaney mel filters at ``sample_rate``; masks of a bin under several bands are averaged.
    Mask MLPs have ``mask_estimator_depth`` hidden layers; each transformer ends in a norm."""

    def __init__(self, dim: int, *, num_bands: int = 60, sample_rate: int = 44100,
                 mask_estimator_depth: int = 1, mlp_expansion_factor: int = 4,
                 match_input_audio_length: bool = False, **kwargs):
        super().__init__(dim, mlp_expansion_factor=mlp_expansion_factor, norm_output=True, final_norm=False, **kwargs)
        self.match_input_audio_length = match_input_audio_length
        self.hop = self.stft_kwargs["hop_length"]
        member = mel_band_membership(sample_rate, self.stft_kwargs["n_fft"], num_bands)  # (bands, bins)
        bins = torch.arange(self.n_freqs).expand(num_bands, -1)[member]  # bins of band 0, then band 1 ...
        c = self.audio_channels
        # Rows of the (bins * channels) spectrogram: bin f of channel s is row f * c + s.
        index = (bins[:, None] * c + torch.arange(c)).reshape(-1)
        self.register_buffer("freq_indices", index, persistent=False)
        per_row = member.sum(0).repeat_interleave(c).float()  # how many bands hold each row
        self.register_buffer("bands_per_row", per_row, persistent=False)
        self._heads(dim, member.sum(1).tolist(), mask_estimator_depth, mask_estimator_depth, mlp_expansion_factor)

    def _features(self, spec):
        return rearrange(spec[:, self.freq_indices], "b f t c -> b t (f c)")

    def _masked(self, spec, masks):
        b, n, _, t = masks.shape
        summed = torch.zeros(b, n, spec.shape[2], t, 2, device=masks.device)
        summed.index_add_(2, self.freq_indices, torch.view_as_real(masks))
        mean = torch.view_as_complex(summed) / self.bands_per_row.clamp(min=1e-8)[:, None]
        return spec * mean

    def _out_length(self, n: int) -> int | None:
        # The training code's default gives the istft's natural length (whole hops).
        return n if self.match_input_audio_length else None


def mel_band_membership(sample_rate: int, n_fft: int, num_bands: int) -> torch.Tensor:
    """(num_bands, n_fft // 2 + 1) bool: the bins where each of librosa's (Slaney) mel
    filters is non-zero, with the first bin in the first band and the last in the last (the
    filters leave them out; the mel variant needs every bin in some band)."""
    from librosa.filters import mel

    fb = torch.from_numpy(mel(sr=sample_rate, n_fft=n_fft, n_mels=num_bands))
    fb[0, 0] = 1.0
    fb[-1, -1] = 1.0
    member = fb > 0
    if not bool(member.any(dim=0).all()):
        raise ValueError(f"{num_bands} mel bands at n_fft {n_fft} leave some STFT bins in no band; use fewer bands")
    return member
