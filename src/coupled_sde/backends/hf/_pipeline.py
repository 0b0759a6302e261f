"""What every backbone over a diffusers pipeline shares: loading, image sizes, the denoiser and the VAE.

A backbone declares its pipeline classes (``pipelines``, the first is what :meth:`from_pretrained`
loads), its denoiser component (``denoiser_name``) and why image sides have the multiple they have
(``size_reason``); this base derives ``vae_scale_factor``, ``latent_channels``, ``latent_shape`` and,
for VAEs normalised as ``(z - shift_factor) * scaling_factor`` (SD, SD3, FLUX.1), the image codec.
Backbones whose state differs (packed or patchified latents, per-channel statistics) override
those pieces only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from coupled_sde.backends.hf._common import Generators, check_image_size, dtype_kwargs, execution_device, vae_decode, vae_encode
from coupled_sde.backends.registry import BackboneInfo

__all__ = ["PipelineBackbone"]


class PipelineBackbone(BackboneInfo):
    """Base of the diffusers backbones: the pipeline ``pipe`` and what follows from its config."""

    pipe: Any
    #: The pipeline component that predicts (``"transformer"`` or ``"unet"``).
    denoiser_name = "transformer"
    #: Completes "the VAE downsamples by N" in the message for image sizes the model can't take.
    size_reason = ""
    #: Constructor keywords :meth:`from_pretrained` takes (the rest go to the pipeline's ``from_pretrained``).
    init_options: tuple[str, ...] = ("default_guidance",)
    #: Defaults for the pipeline's ``from_pretrained`` keywords (Stable Diffusion drops the safety checker).
    load_defaults: Mapping[str, Any] = {}

    @classmethod
    def from_pretrained(
        cls,
        model_id_or_path: str,
        *,
        torch_dtype: torch.dtype | None = None,
        device: str | torch.device | None = None,
        **kwargs: Any,
    ) -> Any:
        """Load a checkpoint of the backbone's pipeline class ``pipelines[0]`` (hub id or local folder) and wrap it.

        ``torch_dtype`` is the models' dtype (the class's ``dtype`` by default; the SDE state stays
        float32, and a float16 VAE whose config sets ``force_upcast`` runs in float32). ``device``
        moves the pipeline there (or leave it ``None`` and call ``backbone.pipe.enable_model_cpu_offload()``).
        The keywords in ``init_options`` (``default_guidance``, ``max_sequence_length``, ...) go to
        the constructor, the others to the pipeline's ``from_pretrained`` (``revision``, ``variant``,
        ``vae=...``, ``text_encoder_3=None``, ...).
        """
        import diffusers

        options = {key: kwargs.pop(key) for key in cls.init_options if key in kwargs}
        pipeline_class = getattr(diffusers, cls.pipelines[0])
        kwargs = {**cls.load_defaults, **kwargs}
        pipe = pipeline_class.from_pretrained(model_id_or_path, **dtype_kwargs(torch_dtype or cls.dtype), **kwargs)
        if device is not None:
            pipe.to(device)
        return cls(pipe, **options)

    # -- shapes ---------------------------------------------------------------------------------

    @property
    def vae_scale_factor(self) -> int:
        """Image pixels per VAE latent pixel (8 for every supported model)."""
        return int(self.pipe.vae_scale_factor)

    @property
    def denoiser(self) -> torch.nn.Module:
        """The transformer or UNet."""
        return getattr(self.pipe, self.denoiser_name)

    @property
    def latent_channels(self) -> int:
        """Channels of the state: the denoiser's ``in_channels``."""
        return int(self.denoiser.config.in_channels)

    @property
    def state_downsampling(self) -> int:
        """Image pixels per state pixel: ``vae_scale_factor`` (FLUX.2's patchified state: ``image_multiple``)."""
        return self.vae_scale_factor

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """The state's shape ``(C, h, w)`` for an ``height x width`` image; ``ValueError`` for sizes the model can't take."""
        check_image_size(height, width, self.image_multiple, f"the VAE downsamples by {self.vae_scale_factor}{self.size_reason}")
        step = self.state_downsampling
        return self.latent_channels, height // step, width // step

    def model_device(self) -> torch.device:
        """Where the denoiser's inputs go (looked up once per edit: diffusers walks every module to find it)."""
        return execution_device(self.pipe, self.denoiser)

    @staticmethod
    def check_state(x: torch.Tensor) -> None:
        """The state of K members of a batch: ``(K, B, C, h, w)``."""
        if x.ndim != 5:
            raise ValueError(f"x must have shape (K, B, C, h, w), got {tuple(x.shape)}")

    # -- images (VAEs normalised as (z - shift_factor) * scaling_factor) -------------------------

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor, generator: Generators = None) -> torch.Tensor:
        """Images ``(B, 3, H, W)`` in [-1, 1] to normalised float32 latents ``(B, C, H/8, W/8)``.

        A posterior *sample* (``latent_dist.sample``, as the sync-SDE reference), normalised as
        ``(z - shift_factor) * scaling_factor``. Pass one generator per image for per-sample seeds.
        Sides must be multiples of ``image_multiple``; otherwise a ``ValueError`` names the nearest
        valid size (diffusers would silently resize).
        """
        self.latent_shape(images.shape[-2], images.shape[-1])
        vae = self.pipe.vae
        return vae_encode(vae, images, generator, execution_device(self.pipe, vae), *self._vae_normalisation()).to(images.device)

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents ``(B, C, h, w)`` to float32 images ``(B, 3, 8h, 8w)`` clamped to [-1, 1]."""
        vae = self.pipe.vae
        return vae_decode(vae, latents, execution_device(self.pipe, vae), *self._vae_normalisation()).to(latents.device)

    def _vae_normalisation(self) -> tuple[float, float]:
        """``(scaling_factor, shift_factor)`` of the VAE config (shift 0 when the config has none)."""
        config = self.pipe.vae.config
        return float(config.scaling_factor), float(config.get("shift_factor") or 0.0)
