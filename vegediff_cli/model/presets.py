"""Model configurations: frozen dataclasses with a comment per field, and named size presets.

A weights file stores its `ModelConfig` as JSON (see weights.py), so a checkpoint always
rebuilds the network it was trained as.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..config import CONTEXT_FRAMES, HORIZON_FRAMES, METEO_CHANNELS


@dataclass(frozen=True)
class VAEConfig:
    """Vegetation VAE: (4, 128, 128) BGRN reflectance <-> (4, 16, 16) latent (paper Sec. III-B)."""

    in_channels: int = 4  # B02, B03, B04, B8A
    latent_channels: int = 4  # channels of the latent
    base_channels: int = 32  # width of the first level; paper preset: 128
    channel_mults: tuple[int, ...] = (1, 2, 2, 4)  # width multiplier per level; 3 downsamplings -> 1/8
    blocks_per_level: int = 1  # residual blocks per level
    # Per-band standardisation of reflectance before the encoder (set from the training data).
    band_mean: tuple[float, ...] = (0.06, 0.09, 0.10, 0.28)
    band_std: tuple[float, ...] = (0.04, 0.05, 0.07, 0.10)
    # Latent normalisation so diffusion works on unit-variance latents (LDM's scale factor).
    latent_mean: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0)
    latent_std: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0)

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.channel_mults) - 1)


@dataclass(frozen=True)
class VegeNetConfig:
    """DiT-style denoiser with spatial and temporal attention (paper Sec. III-C)."""

    latent_channels: int = 4  # channels of the VAE latent
    patch_size: int = 2  # latent pixels per token side; 16 x 16 latent -> 8 x 8 tokens
    hidden: int = 128  # token width; paper preset: 768
    depth: int = 4  # transformer blocks (each: spatial attn, temporal attn, MLP); paper: 12
    heads: int = 4  # attention heads; paper: 12
    mlp_ratio: float = 4.0  # MLP width / hidden
    context_frames: int = CONTEXT_FRAMES  # clean frames given to the model
    horizon: int = HORIZON_FRAMES  # noised frames to predict
    meteo_channels: int = METEO_CHANNELS  # 8 E-OBS variables x (mean, min, max) per frame
    static_channels: int = 5  # cop_dem, nasa_dem, alos_dem, esawc_lc, geom_cls
    static_patch: int = 16  # pixels per static token side (= patch_size x VAE downsampling)
    # Predict the future as a residual from the last (gap-filled) context latent instead of
    # the latent itself. Off in the paper; on for the small preset trained on scarce data,
    # where it makes "no change" (persistence) the easy default (see MODEL_CARD.md).
    residual: bool = False
    # Context tokens attend only to context (and the static token), never to the noised
    # future. Their stream then depends on neither the noise level nor the member, so sampling
    # computes it once per chip and reuses it for every step and member (1/3 less work per
    # step on CPU). Off in the paper (full temporal attention).
    causal_context: bool = False
    # Date features per frame (model/inputs.py `date_features`: sin and cos of the day of year,
    # latitude / 90) embedded and added to the adaLN condition, never dropped: the model can tell
    # spring green-up from autumn senescence. 0: none, as in the paper (and older weights files).
    date_channels: int = 0
    # How the meteorology enters: "absolute" (each frame's standardised values, as in the paper),
    # "context_anomaly" (each frame minus the mean of the context frames: the weather's change from
    # the context, not the site's climate, which seven conditioned training sequences cannot teach),
    # "absolute_and_anomaly" (both, 48 inputs: the change as well as the level) or "none" (never
    # read: the null token in every frame; an ablation).
    meteorology: str = "absolute"
    # MLP activation: "gelu_tanh" (DiT's tanh approximation; older weights files) or "gelu" (exact
    # erf GELU: the same function family, 12-15 % faster on CPUs).
    mlp_activation: str = "gelu_tanh"

    @property
    def frames(self) -> int:
        return self.context_frames + self.horizon

    @property
    def meteo_inputs(self) -> int:
        """Width of what the meteorology embedding reads: the channels, twice for absolute_and_anomaly."""
        return self.meteo_channels * (2 if self.meteorology == "absolute_and_anomaly" else 1)


@dataclass(frozen=True)
class DiffusionConfig:
    """Training-time diffusion settings (paper Sec. III-D)."""

    train_steps: int = 1000  # DDPM discrete timesteps
    beta_start: float = 0.00085  # "scaled linear" betas as in latent diffusion
    beta_end: float = 0.012
    min_snr_gamma: float = 5.0  # Min-SNR-gamma loss weighting (Hang et al. 2023)
    cond_dropout: float = 0.1  # probability of dropping meteorology and static layers (CFG)
    # Training noise is eps + train_context_mix x mean(context latents), the offset sampling starts
    # from (paper Sec. III-D), so training and sampling see the same noise distribution. None:
    # trained without it (older weights files: sampling then uses SamplerSettings.context_mix).
    train_context_mix: float | None = None
    # Extra probability of dropping the meteorology alone in training (static layers kept): the
    # denoiser must forecast from context, dates and site without the weather in that share of
    # windows, so the weather refines the forecast instead of identifying the site. 0: never (the
    # paper; older weights files). Sampling never drops it.
    meteo_dropout: float = 0.0


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a VegeDiff model."""

    name: str = "small"
    vae: VAEConfig = field(default_factory=VAEConfig)
    vegenet: VegeNetConfig = field(default_factory=VegeNetConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    # Denoisers of one `vegenet` config trained apart (other training seeds), sampled in turn: member m
    # uses denoiser m mod `denoisers`, so an ensemble spans the run-to-run spread of training (a "deep
    # ensemble"; MODEL_CARD.md). 1: one denoiser, as in the paper (and older weights files).
    denoisers: int = 1

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        def build(kind, values):
            names = {f.name for f in dataclasses.fields(kind)}
            clean = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in names}
            return kind(**clean)

        return cls(
            name=data.get("name", "custom"),
            vae=build(VAEConfig, data.get("vae", {})),
            vegenet=build(VegeNetConfig, data.get("vegenet", {})),
            diffusion=build(DiffusionConfig, data.get("diffusion", {})),
            denoisers=data.get("denoisers", 1),
        )


_SMALL = ModelConfig(
    name="small",
    vae=VAEConfig(base_channels=16, channel_mults=(1, 2, 4, 4), blocks_per_level=1),
    vegenet=VegeNetConfig(hidden=128, depth=4, heads=4, residual=True, causal_context=True, date_channels=3,
                          mlp_activation="gelu"),
    diffusion=DiffusionConfig(train_context_mix=0.1),
)

PRESETS: dict[str, ModelConfig] = {
    # DiT-B/2 denoiser and a 128-channel VAE, as in the paper; for GPUs.
    "paper": ModelConfig(
        name="paper",
        vae=VAEConfig(base_channels=128, channel_mults=(1, 2, 4, 4), blocks_per_level=2),
        vegenet=VegeNetConfig(hidden=768, depth=12, heads=12, residual=False),
    ),
    # Trains and samples on a laptop CPU; the shipped weights use it.
    "small": _SMALL,
    # The small preset's recipe with a 4x larger denoiser (7.9 M parameters, 4.4x the FLOPs), trained on
    # a GPU (scripts/train_gpu.py) on the small preset's VAE; compared with it in MODEL_CARD.md.
    "base": dataclasses.replace(_SMALL, name="base",
                                vegenet=dataclasses.replace(_SMALL.vegenet, hidden=192, depth=8, heads=6)),
    # For unit tests: seconds per step.
    "tiny": ModelConfig(
        name="tiny",
        vae=VAEConfig(base_channels=8, channel_mults=(1, 1, 2, 2), blocks_per_level=1),
        vegenet=VegeNetConfig(hidden=32, depth=2, heads=2, residual=True, causal_context=True),
    ),
}


def preset(name: str) -> ModelConfig:
    from ..errors import UsageError

    if name not in PRESETS:
        raise UsageError(f"unknown model preset '{name}'", fix=f"choose one of {', '.join(PRESETS)}")
    return PRESETS[name]
