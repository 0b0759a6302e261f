"""Tiny, complete SD3, SDXL, FLUX.2 (dev, Klein) and Qwen-Image pipelines with random weights, offline.

Like :mod:`coupled_sde.backends.hf.tiny`, every component is the genuine diffusers or
transformers class (schedulers with the real checkpoints' configs, VAEs, every text encoder and its
tokenizer, the transformer / UNet), with a few thousand parameters, seeded random weights and
tokenizers built locally -- nothing is downloaded. They exist to test code paths (batching,
conventions, dtypes, offloading) before pointing the same code at a real checkpoint; the outputs are
noise.

What each builder mirrors of the real model:

* :func:`tiny_sd3_pipeline` -- ``StableDiffusion3Pipeline``: two ``CLIPTextModelWithProjection``
  encoders and a ``T5EncoderModel`` (CLIP hidden states zero-padded to the T5 width and
  concatenated along the sequence, pooled projections concatenated), 16 latent channels with SD3's
  VAE ``scaling_factor`` / ``shift_factor`` (1.5305 / 0.0609), 2x2 patches, static shift 3.
* :func:`tiny_sdxl_pipeline` -- ``StableDiffusionXLPipeline``: ``CLIPTextModel`` +
  ``CLIPTextModelWithProjection``, a UNet with ``addition_embed_type="text_time"`` (pooled text
  embedding and the six added time ids), SDXL's ``scaling_factor`` 0.13025, scaled-linear betas
  with "leading" spacing and ``steps_offset=1`` (a ``DDIMScheduler``, so that the pipeline's own
  loop is the DDIM chain the VP methods use); ``"epsilon"`` or ``"v_prediction"``.
* :func:`tiny_flux2_pipeline` -- ``Flux2Pipeline`` (FLUX.2 dev): a ``Mistral3ForConditionalGeneration``
  text encoder (Mistral text model + Pixtral vision tower) behind a tokenizer with a chat template, hidden states of layers (10, 20, 30) stacked as the pipeline reads them, an
  ``AutoencoderKLFlux2`` (latents patchified 2x2 and batch-norm normalised), guidance embedding.
* :func:`tiny_flux2_klein_pipeline` -- ``Flux2KleinPipeline``: a ``Qwen3ForCausalLM`` text encoder
  with a Qwen2 byte-level BPE tokenizer and a chat template, layers (9, 18, 27), no guidance
  embedding; ``distilled=True`` sets ``is_distilled`` (the few-step Klein checkpoints).
* :func:`tiny_qwen_image_pipeline` -- ``QwenImagePipeline``: a ``Qwen2_5_VLForConditionalGeneration``
  text encoder with a Qwen2 tokenizer, ``AutoencoderKLQwenImage`` (a video VAE used on one frame,
  per-channel ``latents_mean`` / ``latents_std``), 2x2 packed tokens, dynamic shift.

The text models are deep enough (31 / 28 layers, width 16) that the pipelines' default hidden-state
layers exist, so the pipelines run with their default arguments. diffusers and transformers are
imported inside the functions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from coupled_sde._tiny_text import byte_symbols
from coupled_sde.backends.hf.tiny import (
    _T5_WORDS,
    _UNET_LEVELS,
    _VAE_LEVELS,
    _VOCAB_SIZE,
    _clip_encoder,
    _kl_vae,
    _sd_scheduler,
    _t5_encoder,
    _tiny_clip_tokenizer,
    _tiny_t5_tokenizer,
)

if TYPE_CHECKING:
    from diffusers import (
        Flux2KleinPipeline,
        Flux2Pipeline,
        QwenImagePipeline,
        StableDiffusion3Pipeline,
        StableDiffusionXLPipeline,
    )

__all__ = [
    "tiny_flux2_klein_pipeline",
    "tiny_flux2_pipeline",
    "tiny_qwen_image_pipeline",
    "tiny_sd3_pipeline",
    "tiny_sdxl_pipeline",
]

# -- SD3 ----------------------------------------------------------------------------------------


def tiny_sd3_pipeline(seed: int = 0, layers: int = 1) -> StableDiffusion3Pipeline:
    """A complete tiny ``StableDiffusion3Pipeline`` (SD3 / SD3.5 layout), float32, CPU, offline.

    Two CLIP encoders of width 16 (projection 16 each, so the pooled projection has 32 values),
    a T5 encoder of width 32 (= ``joint_attention_dim``), a ``layers``-block (default one) ``SD3Transformer2DModel``
    with 2x2 patches on a 16-channel latent, and ``FlowMatchEulerDiscreteScheduler(shift=3.0)``
    (SD3 medium's and SD3.5's config). Image sides must be multiples of 16. ``seed`` seeds every
    weight; the global RNG is left alone.
    """
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    tokenizer, tokenizer_2, tokenizer_3 = _tiny_clip_tokenizer(), _tiny_clip_tokenizer(), _tiny_t5_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = SD3Transformer2DModel(
            sample_size=8,
            patch_size=2,
            in_channels=16,
            num_layers=layers,
            attention_head_dim=8,
            num_attention_heads=4,
            joint_attention_dim=32,
            caption_projection_dim=32,
            pooled_projection_dim=32,
            out_channels=16,
            pos_embed_max_size=32,
        ).eval()
        vae = _kl_vae(16, 1.5305, 0.0609, quant_conv=False)
        text_encoder = _clip_encoder(tokenizer, 16, 16, layers=2)  # the pipelines read hidden_states[-2]
        text_encoder_2 = _clip_encoder(tokenizer_2, 16, 16, layers=2)
        text_encoder_3 = _t5_encoder(32)
    return StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
        text_encoder_3=text_encoder_3,
        tokenizer_3=tokenizer_3,
    )


# -- SDXL ---------------------------------------------------------------------------------------


def tiny_sdxl_pipeline(seed: int = 0, prediction_type: str = "epsilon") -> StableDiffusionXLPipeline:
    """A complete tiny ``StableDiffusionXLPipeline``, float32, CPU, offline.

    ``CLIPTextModel`` (width 16) + ``CLIPTextModelWithProjection`` (width 16, projection 16): cross
    attention on their concatenated hidden states (32), ``text_time`` added conditioning on the
    pooled projection and the six time ids (``projection_class_embeddings_input_dim = 6 * 8 + 16``).
    4-channel latents, ``vae_scale_factor`` 8, SDXL's ``scaling_factor`` 0.13025 (``force_upcast``).
    The scheduler is a ``DDIMScheduler`` with SDXL's betas and spacing; ``prediction_type`` is
    ``"epsilon"`` (SDXL base) or ``"v_prediction"``.
    """
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel

    scheduler = _sd_scheduler(prediction_type)
    tokenizer, tokenizer_2 = _tiny_clip_tokenizer(), _tiny_clip_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            **_UNET_LEVELS,
            attention_head_dim=(2, 4),
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=8,
            transformer_layers_per_block=(1, 2),
            projection_class_embeddings_input_dim=6 * 8 + 16,
            cross_attention_dim=32,
        ).eval()
        vae = _kl_vae(4, 0.13025, None, quant_conv=True, force_upcast=True)
        text_encoder = _clip_encoder(tokenizer, 16, None, layers=2)
        text_encoder_2 = _clip_encoder(tokenizer_2, 16, 16, layers=2)
    return StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=unet,
        scheduler=scheduler,
    )


# -- Qwen2 BPE tokenizer (Klein, Qwen-Image) ----------------------------------------------------

_QWEN_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>")

#: A Qwen3-style chat template: what ``Flux2KleinPipeline`` renders (``enable_thinking=False``
#: adds an empty think block, as Qwen3's own template does).
_QWEN3_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}{% endif %}"
)


#: Pieces the tiny Qwen tokenizer knows whole: those of Qwen-Image's prompt template, so that its
#: system prefix is 34 tokens as with the real tokenizer (the pipeline drops exactly that many), and
#: common prompt words. Everything else falls back to byte-level BPE.
_QWEN_PIECES = (
    "system user assistant Describe image by detailing color shape size texture quantity text spatial "
    "relationships objects background " + " ".join(_T5_WORDS)
).split()


def _tiny_qwen_tokenizer(chat_template: str | None = None) -> Any:
    """A byte-level BPE ``Qwen2Tokenizer`` (256 byte symbols, a few merges) with the ChatML special
    tokens and :data:`_QWEN_PIECES` as whole added tokens (with and without a leading space)."""
    from tokenizers import AddedToken
    from transformers import Qwen2Tokenizer

    symbols = byte_symbols()
    merges = [("a", "t"), ("c", "at"), ("d", "o"), ("do", "g")]
    vocab_list = [*symbols, *("".join(pair) for pair in merges)]
    vocab = {token: i for i, token in enumerate(dict.fromkeys(vocab_list))}
    for special in _QWEN_SPECIALS:
        vocab[special] = len(vocab)
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=merges)
    tokenizer.add_special_tokens({"additional_special_tokens": list(_QWEN_SPECIALS[1:])})
    pieces = [*_QWEN_PIECES, *(" " + p for p in _QWEN_PIECES), "\n", ",", ":"]
    tokenizer.add_tokens([AddedToken(p, normalized=False, special=False) for p in dict.fromkeys(pieces)])
    tokenizer.model_max_length = 1024
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    return tokenizer


def _flux2_vae(latent_channels: int) -> torch.nn.Module:
    """An ``AutoencoderKLFlux2`` with four levels and random (seeded) batch-norm statistics."""
    from diffusers import AutoencoderKLFlux2

    vae = AutoencoderKLFlux2(
        **_VAE_LEVELS, latent_channels=latent_channels, use_quant_conv=False, use_post_quant_conv=False
    ).eval()
    # untrained running statistics are 0 / 1; random ones make the normalisation visible to tests
    vae.bn.running_mean.copy_(0.1 * torch.randn_like(vae.bn.running_mean))
    vae.bn.running_var.copy_(0.5 + torch.rand_like(vae.bn.running_var))
    return vae


def _flux2_transformer(latent_channels: int, text_dim: int, guidance_embeds: bool) -> torch.nn.Module:
    from diffusers import Flux2Transformer2DModel

    return Flux2Transformer2DModel(
        patch_size=1,
        in_channels=4 * latent_channels,  # 2x2 patchified latent
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=text_dim,
        timestep_guidance_channels=256,
        axes_dims_rope=(4, 4, 4, 4),
        guidance_embeds=guidance_embeds,
    ).eval()


def _flux2_scheduler() -> Any:
    """FLUX.2's scheduler config: dynamic (empirical-mu) shifting."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000,
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )


# -- FLUX.2 dev ---------------------------------------------------------------------------------

#: A Mistral-style chat template over content lists, as ``Flux2Pipeline`` sends them.
_MISTRAL_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'system' %}[SYSTEM_PROMPT]{% for c in message['content'] %}{{ c['text'] }}{% endfor %}"
    "[/SYSTEM_PROMPT]{% else %}[INST]{% for c in message['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}"
    "{% else %}[IMG]{% endif %}{% endfor %}[/INST]{% endif %}{% endfor %}"
)


def _tiny_mistral_tokenizer() -> Any:
    """A WordLevel fast tokenizer with Mistral's control tokens and a chat template over content lists.

    It stands in for the ``PixtralProcessor`` of the real checkpoint: for text prompts the
    processor's ``apply_chat_template`` renders the template and calls its tokenizer, which is what
    this tokenizer's own ``apply_chat_template`` does. (A real ``PixtralProcessor`` cannot be built
    here: transformers 5.23 requires torchvision for it, and torchvision does not work with this
    CPU torch build.)
    """
    from tokenizers import Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "[IMG]", "<s>", "</s>", "<pad>", "[INST]", "[/INST]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]"]
    vocab = {token: i for i, token in enumerate([*specials, *_T5_WORDS])}
    backend = Tokenizer(WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        additional_special_tokens=specials[5:],
        model_max_length=1024,
    )
    tokenizer.chat_template = _MISTRAL_CHAT_TEMPLATE
    return tokenizer


def tiny_flux2_pipeline(seed: int = 0) -> Flux2Pipeline:
    """A complete tiny ``Flux2Pipeline`` (FLUX.2 dev layout), float32, CPU, offline.

    Text: ``Mistral3ForConditionalGeneration`` (a 31-layer Mistral text model of width 16, so the
    pipeline's default layers (10, 20, 30) exist, and a one-layer Pixtral vision tower) behind a
    locally built tokenizer with a chat template (standing in for the ``PixtralProcessor``, see
    :func:`_tiny_mistral_tokenizer`); prompt embeddings have ``3 * 16 = 48`` features. Image: an
    ``AutoencoderKLFlux2`` with 4 latent channels (16 after the 2x2 patchify), a one-block
    ``Flux2Transformer2DModel`` with a guidance embedding. Image sides must be multiples of 16.
    """
    from diffusers import Flux2Pipeline
    from transformers import Mistral3Config, Mistral3ForConditionalGeneration

    tok = _tiny_mistral_tokenizer()
    config = Mistral3Config(
        text_config={
            "model_type": "mistral",
            "vocab_size": _VOCAB_SIZE,
            "hidden_size": 16,
            "intermediate_size": 24,
            "max_position_embeddings": 2048,
            "num_attention_heads": 2,
            "num_hidden_layers": 31,
            "num_key_value_heads": 1,
            "head_dim": 8,
            "rms_norm_eps": 1e-05,
            "rope_theta": 1e9,
            "sliding_window": None,
            "bos_token_id": tok.bos_token_id,
            "eos_token_id": tok.eos_token_id,
            "pad_token_id": tok.pad_token_id,
        },
        vision_config={
            "model_type": "pixtral",
            "hidden_size": 16,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "intermediate_size": 24,
            "image_size": 30,
            "patch_size": 6,
            "num_channels": 3,
        },
        image_token_index=tok.convert_tokens_to_ids("[IMG]"),
        vision_feature_layer=-1,
        spatial_merge_size=1,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_encoder = Mistral3ForConditionalGeneration(config).eval()
        transformer = _flux2_transformer(4, 3 * 16, guidance_embeds=True)
        vae = _flux2_vae(4)
    return Flux2Pipeline(scheduler=_flux2_scheduler(), vae=vae, text_encoder=text_encoder, tokenizer=tok, transformer=transformer)


# -- FLUX.2 Klein -------------------------------------------------------------------------------


def tiny_flux2_klein_pipeline(seed: int = 0, distilled: bool = True) -> Flux2KleinPipeline:
    """A complete tiny ``Flux2KleinPipeline``, float32, CPU, offline.

    Text: a 28-layer ``Qwen3ForCausalLM`` of width 16 (the pipeline reads layers (9, 18, 27): 48
    features) with a locally built Qwen2 BPE tokenizer and a Qwen3-style chat template. Image as
    :func:`tiny_flux2_pipeline`, without guidance embedding. ``distilled=True`` is the few-step
    Klein checkpoints' ``is_distilled`` (no classifier-free guidance); ``False`` the base models
    (CFG against the empty prompt).
    """
    from diffusers import Flux2KleinPipeline
    from transformers import Qwen3Config, Qwen3ForCausalLM

    tokenizer = _tiny_qwen_tokenizer(_QWEN3_CHAT_TEMPLATE)
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=24,
        num_hidden_layers=28,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=8,
        max_position_embeddings=2048,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_encoder = Qwen3ForCausalLM(config).eval()
        transformer = _flux2_transformer(4, 3 * 16, guidance_embeds=False)
        vae = _flux2_vae(4)
    return Flux2KleinPipeline(
        scheduler=_flux2_scheduler(),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer,
        is_distilled=distilled,
    )


# -- Qwen-Image ---------------------------------------------------------------------------------


def tiny_qwen_image_pipeline(seed: int = 0) -> QwenImagePipeline:
    """A complete tiny ``QwenImagePipeline``, float32, CPU, offline.

    Text: a two-layer ``Qwen2_5_VLForConditionalGeneration`` (width 16, tiny vision tower) with a
    locally built Qwen2 tokenizer (the pipeline formats prompts with its own template and drops its
    first 34 tokens). Image: ``AutoencoderKLQwenImage`` with 4 latent channels, three levels
    (``vae_scale_factor`` 8) and random per-channel ``latents_mean`` / ``latents_std``; a two-block
    ``QwenImageTransformer2DModel`` on 2x2 packed tokens; FlowMatch scheduler with Qwen-Image's
    dynamic shift config. Image sides must be multiples of 16.
    """
    from diffusers import AutoencoderKLQwenImage, FlowMatchEulerDiscreteScheduler, QwenImagePipeline, QwenImageTransformer2DModel
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    tokenizer = _tiny_qwen_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        z_dim = 4
        stats = torch.Generator().manual_seed(seed + 1)
        vae = AutoencoderKLQwenImage(
            base_dim=z_dim * 6,
            z_dim=z_dim,
            dim_mult=[1, 2, 4, 4],
            num_res_blocks=1,
            temperal_downsample=[False, True, True],
            latents_mean=(0.1 * torch.randn(z_dim, generator=stats)).tolist(),
            latents_std=(0.5 + torch.rand(z_dim, generator=stats)).tolist(),
        ).eval()
        transformer = QwenImageTransformer2DModel(
            patch_size=2,
            in_channels=4 * z_dim,
            out_channels=z_dim,
            num_layers=2,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=16,
            guidance_embeds=False,
            axes_dims_rope=(8, 4, 4),
        ).eval()
        config = Qwen2_5_VLConfig(
            text_config={
                "hidden_size": 16,
                "intermediate_size": 16,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "num_key_value_heads": 2,
                "rope_scaling": {"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"},
                "rope_theta": 1000000.0,
                "vocab_size": len(tokenizer),
                "bos_token_id": tokenizer.convert_tokens_to_ids("<|endoftext|>"),
                "eos_token_id": tokenizer.convert_tokens_to_ids("<|im_end|>"),
                "pad_token_id": tokenizer.pad_token_id,
            },
            vision_config={"depth": 1, "hidden_size": 16, "intermediate_size": 16, "num_heads": 2, "out_hidden_size": 16},
            hidden_size=16,
            vocab_size=len(tokenizer),
            vision_start_token_id=len(tokenizer) + 1,
            vision_end_token_id=len(tokenizer) + 2,
            vision_token_id=len(tokenizer) + 3,
        )
        text_encoder = Qwen2_5_VLForConditionalGeneration(config).eval()
    scheduler = FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000,
        shift=1.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=0.9,
        base_image_seq_len=256,
        max_image_seq_len=8192,
        time_shift_type="exponential",
        shift_terminal=0.02,
    )
    return QwenImagePipeline(
        scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer
    )
