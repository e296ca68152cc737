"""Build smoke-scale GeCo generators offline: a tiny chat LM and a tiny InstructPix2Pix pipeline.

These have random weights, so their views carry no meaning. They exist so that the whole GeCo path
(chat template, sampling, parsing, diffusion editing, caching) runs on a machine without a model hub.
A research run points the config at real checkpoints instead, for example
``meta-llama/Llama-3.1-8B-Instruct`` and ``timbrooks/instruct-pix2pix``.
"""

from __future__ import annotations

import gzip
import json
from functools import lru_cache
from importlib import resources
from pathlib import Path

import torch

from tulip.geco.prompts import SYSTEM_PROMPT, USER_TEMPLATE

CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def build_tiny_lm(out_dir: str | Path, corpus: list[str], seed: int = 0) -> Path:
    """Save a random 2-layer Llama-style LM with a word-level tokenizer over the words of ``corpus``.

    Every token is a whole word, so even random sampling produces printable word sequences that the
    view parser can accept or reject on content.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out_dir = Path(out_dir)
    specials = ["<unk>", "<s>", "</s>", "<pad>", "<|system|>", "<|user|>", "<|assistant|>"]
    splitter = pre_tokenizers.Whitespace()
    words = sorted({word for text in [*corpus, SYSTEM_PROMPT, USER_TEMPLATE]
                    for word, _ in splitter.pre_tokenize_str(text.lower())})
    vocab = {token: index for index, token in enumerate([*specials, *words])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = splitter
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        additional_special_tokens=specials[4:],
        chat_template=CHAT_TEMPLATE,
    )
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


@lru_cache(maxsize=1)
def _clip_bpe() -> tuple[dict[str, int], list[str]]:
    """Rebuild CLIP's vocab and merges from the BPE file that ships inside open_clip's wheel."""
    from open_clip.tokenizer import bytes_to_unicode

    bpe_file = resources.files("open_clip") / "bpe_simple_vocab_16e6.txt.gz"
    merges = gzip.decompress(bpe_file.read_bytes()).decode("utf-8").split("\n")
    merges = merges[1 : 49152 - 256 - 2 + 1]
    symbols = list(bytes_to_unicode().values())
    symbols += [s + "</w>" for s in symbols]
    symbols += ["".join(m.split()) for m in merges]
    symbols += ["<|startoftext|>", "<|endoftext|>"]
    return {s: i for i, s in enumerate(symbols)}, merges


def save_clip_tokenizer(out_dir: str | Path) -> Path:
    """Write a transformers CLIPTokenizer whose ids equal open_clip's, from offline files only."""
    from transformers import CLIPTokenizer

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    vocab, merges = _clip_bpe()
    (out_dir / "vocab.json").write_text(json.dumps(vocab))
    (out_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    tokenizer = CLIPTokenizer(str(out_dir / "vocab.json"), str(out_dir / "merges.txt"), model_max_length=77)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def build_tiny_instruct_pix2pix(out_dir: str | Path, seed: int = 0) -> Path:
    """Assemble a random-weight InstructPix2Pix pipeline (UNet, VAE, CLIP text encoder, scheduler) and save it."""
    from diffusers import (
        AutoencoderKL,
        EulerAncestralDiscreteScheduler,
        StableDiffusionInstructPix2PixPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    out_dir = Path(out_dir)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=16,
        in_channels=8,  # noisy latents + the encoded input image
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(32, 64),
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        norm_num_groups=8,
        sample_size=32,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=49408,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=49407,
        )
    )
    tokenizer_dir = save_clip_tokenizer(out_dir / "_tokenizer_build")
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir)
    pipeline = StableDiffusionInstructPix2PixPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=EulerAncestralDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.save_pretrained(out_dir)
    for file in sorted((out_dir / "_tokenizer_build").iterdir()):
        file.unlink()
    (out_dir / "_tokenizer_build").rmdir()
    return out_dir
