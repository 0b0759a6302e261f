"""Tiny, complete diffusers pipelines with random weights, for offline tests.

These builders assemble *real* ``FluxPipeline`` / ``StableDiffusionPipeline`` objects -- every
component (scheduler, VAE, both text encoders and their tokenizers, transformer / UNet) is the
genuine diffusers or transformers class -- but with a few thousand parameters each, random
(seeded) weights and tokenizers built locally. Nothing is downloaded, so they work without network
access, and a 2-step 64x64 generation takes well under 0.1 s on one CPU thread.

They are public helpers: use them to test your own code paths (batching, dtypes, schedules, image
sizes, offloading hooks) before pointing the same code at a multi-gigabyte checkpoint. The outputs
are noise, of course; only shapes, conventions and numerics are meaningful.

Shapes follow the real models where conventions depend on them:

* the VAE has four resolution levels, so ``pipe.vae_scale_factor == 8`` like FLUX.1 and SD 1.x/2.x
  (pixel size = latent size x 8; FLUX additionally packs 2x2 latent patches, so FLUX image sides
  must be multiples of 16);
* FLUX latents have 16 channels and the FLUX VAE's ``scaling_factor`` / ``shift_factor``
  (0.3611 / 0.1159); SD latents have 4 channels and ``scaling_factor`` 0.18215;
* the schedulers carry the real checkpoints' configs (FLUX.1-dev dynamic shifting, FLUX.1-schnell
  static shift 1, SD's scaled-linear betas with DDIM "leading" spacing and ``steps_offset=1``).

Example::

    import torch
    from coupled_sde.backends.hf.tiny import tiny_flux_pipeline

    torch.set_num_threads(1)  # much faster for tiny models on small machines
    pipe = tiny_flux_pipeline(seed=0)
    image = pipe("a cat", height=64, width=64, num_inference_steps=2, output_type="pt").images

diffusers and transformers are imported lazily, inside the functions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from diffusers import FluxPipeline, StableDiffusionPipeline
    from transformers import CLIPTokenizer, PreTrainedTokenizerFast

__all__ = ["tiny_flux_pipeline", "tiny_sd_pipeline"]

#: Width of every tiny text encoder (CLIP hidden size, T5 ``d_model``).
_TEXT_DIM = 32
#: Vocabulary size of the tiny text encoders (larger than either tokenizer's vocabulary).
_VOCAB_SIZE = 1024
#: CLIP's context length; diffusers pads CLIP prompts to ``tokenizer.model_max_length``.
_CLIP_MAX_LENGTH = 77

#: Words known to the tiny T5 tokenizer (anything else maps to ``<unk>``). A handful of common
#: editing-prompt words, so that different test prompts give different token ids.
_T5_WORDS = (
    "a an the of and with in on at photo painting picture image drawing sketch cat dog bird horse "
    "car tree house man woman child red green blue yellow black white small big old young sitting "
    "standing running wearing hat glasses table grass sky sea beach city forest night day"
).split()


def _tiny_clip_tokenizer() -> CLIPTokenizer:
    """The tiny byte-level BPE CLIP tokenizer (:func:`coupled_sde._tiny_text.tiny_clip_tokenizer`) with a few merges."""
    from coupled_sde._tiny_text import tiny_clip_tokenizer

    merges = (("c", "a"), ("ca", "t</w>"), ("d", "o"), ("do", "g</w>"), ("t", "h"), ("th", "e</w>"))
    return tiny_clip_tokenizer(merges, _CLIP_MAX_LENGTH)


def _tiny_t5_tokenizer() -> PreTrainedTokenizerFast:
    """A lower-casing whitespace WordLevel tokenizer standing in for T5's SentencePiece one.

    Like T5 it appends ``</s>`` to every sequence and pads with ``<pad>`` (id 0); unknown words
    map to ``<unk>``.
    """
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "</s>", "<unk>"]
    vocab = {token: i for i, token in enumerate([*specials, *_T5_WORDS])}
    backend = Tokenizer(WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", vocab["</s>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", model_max_length=512
    )


def _clip_encoder(
    tokenizer: CLIPTokenizer, hidden: int = _TEXT_DIM, projection: int | None = None, layers: int = 1
) -> torch.nn.Module:
    """A small CLIP text encoder whose pooled output is read at the tokenizer's EOS token.

    ``projection`` given -> ``CLIPTextModelWithProjection`` (SDXL's and SD3's second / both
    encoders); ``layers = 2`` for the pipelines that read ``hidden_states[-2]``.
    """
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=_VOCAB_SIZE,
        hidden_size=hidden,
        intermediate_size=37,
        num_hidden_layers=layers,
        num_attention_heads=4,
        max_position_embeddings=_CLIP_MAX_LENGTH,
        projection_dim=projection or hidden,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = CLIPTextModelWithProjection(config) if projection else CLIPTextModel(config)
    return model.eval()


def _t5_encoder(width: int = _TEXT_DIM) -> torch.nn.Module:
    """A one-layer ``T5EncoderModel`` of width ``width``."""
    from transformers import T5Config, T5EncoderModel

    config = T5Config(
        vocab_size=_VOCAB_SIZE,
        d_model=width,
        d_kv=8,
        d_ff=37,
        num_layers=1,
        num_heads=4,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=32,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    return T5EncoderModel(config).eval()


#: The tiny VAEs' layout: four levels (``vae_scale_factor`` 8), 8 channels per level, 64x64 samples.
_VAE_LEVELS = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (8, 8, 8, 8),
    "layers_per_block": 1,
    "norm_num_groups": 4,
    "sample_size": 64,
}


def _kl_vae(
    latent_channels: int, scaling_factor: float, shift_factor: float | None, quant_conv: bool, **options: object
) -> torch.nn.Module:
    """An ``AutoencoderKL`` with the tiny layout; FLUX's and SD3's VAEs have no quant convolutions, SD's have them."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        **_VAE_LEVELS,
        latent_channels=latent_channels,
        scaling_factor=scaling_factor,
        shift_factor=shift_factor,
        use_quant_conv=quant_conv,
        use_post_quant_conv=quant_conv,
        **options,
    ).eval()


#: The tiny SD / SDXL UNets' layout: two levels on a 4-channel 8x8 latent, cross attention in the inner one.
_UNET_LEVELS = {
    "sample_size": 8,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
    "block_out_channels": (16, 32),
    "layers_per_block": 1,
    "norm_num_groups": 8,
}


def _sd_scheduler(prediction_type: str) -> object:
    """A ``DDIMScheduler`` with SD's (and SDXL's) config: scaled-linear betas 0.00085..0.012,
    ``set_alpha_to_one=False``, ``steps_offset=1``, "leading" spacing; ``"epsilon"`` or ``"v_prediction"``."""
    from diffusers import DDIMScheduler

    if prediction_type not in ("epsilon", "v_prediction"):
        raise ValueError(f"prediction_type must be 'epsilon' or 'v_prediction', got {prediction_type!r}")
    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        timestep_spacing="leading",
        prediction_type=prediction_type,
    )


def tiny_flux_pipeline(seed: int = 0, guidance_embeds: bool = True, single_layers: int = 1) -> FluxPipeline:
    """Build a complete tiny ``FluxPipeline`` with random weights, offline.

    Args:
        seed: seeds every component's random initialisation; the same seed gives bitwise the same
            weights. The global torch RNG state is left untouched (``torch.random.fork_rng``).
        guidance_embeds: ``True`` gives a FLUX.1-dev-like model (a guidance-distilled transformer
            with a guidance embedding, dynamic-shifting scheduler config of FLUX.1-dev);
            ``False`` gives a FLUX.1-schnell-like one (no guidance embedding; scheduler with a
            static shift of 1, i.e. ``sigmas = linspace(1, 1/N, N)``).
        single_layers: single-stream blocks of the transformer (FLUX.1 has 38; attention sharing
            selects among them).

    Returns:
        A float32 ``FluxPipeline`` on the CPU: 16-channel latents, ``vae_scale_factor`` 8
        (image sides must be multiples of 16 because of FLUX's 2x2 packing), a one-block
        double-stream + ``single_layers``-block single-stream transformer, CLIP and T5 text encoders of width 32.
        Prompts are padded to ``max_sequence_length`` T5 tokens by the pipeline (512 by default);
        pass a smaller ``max_sequence_length`` to the pipeline for speed.
    """
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    if guidance_embeds:  # FLUX.1-dev's scheduler/scheduler_config.json
        scheduler = FlowMatchEulerDiscreteScheduler(
            num_train_timesteps=1000,
            shift=3.0,
            use_dynamic_shifting=True,
            base_shift=0.5,
            max_shift=1.15,
            base_image_seq_len=256,
            max_image_seq_len=4096,
        )
    else:  # FLUX.1-schnell's
        scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=False)

    tokenizer = _tiny_clip_tokenizer()
    tokenizer_2 = _tiny_t5_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = FluxTransformer2DModel(
            patch_size=1,
            in_channels=64,  # 16 latent channels x 2x2 packing
            num_layers=1,
            num_single_layers=single_layers,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=_TEXT_DIM,
            pooled_projection_dim=_TEXT_DIM,
            guidance_embeds=guidance_embeds,
            axes_dims_rope=(4, 4, 8),
        ).eval()
        vae = _kl_vae(16, 0.3611, 0.1159, quant_conv=False)
        text_encoder = _clip_encoder(tokenizer)
        text_encoder_2 = _t5_encoder()
    return FluxPipeline(
        scheduler=scheduler,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
        transformer=transformer,
    )


def tiny_sd_pipeline(seed: int = 0, prediction_type: str = "epsilon") -> StableDiffusionPipeline:
    """Build a complete tiny ``StableDiffusionPipeline`` (SD 1.x/2.x layout) with random weights, offline.

    Args:
        seed: seeds every component's random initialisation; the same seed gives bitwise the same
            weights. The global torch RNG state is left untouched (``torch.random.fork_rng``).
        prediction_type: the scheduler's ``prediction_type``: ``"epsilon"`` (SD 1.x, SD 2.x base)
            or ``"v_prediction"`` (SD 2.x 768-v).

    Returns:
        A float32 ``StableDiffusionPipeline`` on the CPU without safety checker: 4-channel latents,
        ``vae_scale_factor`` 8 (image sides must be multiples of 8; 64x64 gives an 8x8 latent), a
        two-level cross-attention UNet, a CLIP text encoder of width 32, and a ``DDIMScheduler``
        with SD's config (scaled-linear betas 0.00085..0.012, ``set_alpha_to_one=False``,
        ``steps_offset=1``, "leading" timestep spacing).
    """
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    scheduler = _sd_scheduler(prediction_type)
    tokenizer = _tiny_clip_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**_UNET_LEVELS, attention_head_dim=8, cross_attention_dim=_TEXT_DIM).eval()
        vae = _kl_vae(4, 0.18215, None, quant_conv=True)
        text_encoder = _clip_encoder(tokenizer)
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker=False,
    )
