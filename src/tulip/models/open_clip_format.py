"""Conversion between tulip models and open_clip's model configs and checkpoint folders.

tulip's image-text towers use open_clip's ``CustomTextCLIP`` parameter names (a timm trunk under
``visual.trunk``, open_clip's ``TextTransformer`` under ``text``), so conversion only translates
the config. ``export_open_clip`` writes a folder that open_clip 3.3 loads in one call::

    model, _, preprocess = open_clip.create_model_and_transforms("local-dir:/path/to/folder")
    tokenizer = open_clip.get_tokenizer("local-dir:/path/to/folder")

The folder contains ``open_clip_config.json`` (``model_cfg`` and ``preprocess_cfg``, the layout of
open_clip's hub repositories), ``open_clip_model.safetensors`` and, for a transformers tokenizer,
its files. A trunk that tulip registers with timm (such as tulip-tiny's) needs ``import tulip``
in the loading process first.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from tulip.models.config import ModelConfig, TextConfig, TokenizerConfig, VisionConfig
from tulip.models.tokenizer import Tokenizer

CONFIG_FILE = "open_clip_config.json"
WEIGHTS_FILE = "open_clip_model.safetensors"

# open_clip text settings that tulip's text tower does not implement, with the value it requires.
_UNSUPPORTED_TEXT = {
    "embed_cls": False,
    "final_ln_after_pool": False,
    "proj_type": "linear",
    "ls_init_value": None,
    "output_tokens": False,
}


def to_open_clip_config(cfg: ModelConfig) -> dict[str, Any]:
    """Return the open_clip ``model_cfg`` (a ``CustomTextCLIP`` with a timm image tower) of a tulip config."""
    if not cfg.vision.timm_model_name:
        raise ValueError(
            f"model {cfg.name!r} builds its ViT from sizes, but open_clip builds timm trunks only by registered "
            "name; set vision.timm_model_name (register the trunk with timm.models.register_model if needed)"
        )
    if cfg.text.hf_model_name:
        raise ValueError(
            f"model {cfg.name!r} has a transformers text encoder ({cfg.text.hf_model_name}); only the built-in "
            "text transformer has open_clip's parameter names"
        )
    text = cfg.text
    text_cfg: dict[str, Any] = {
        "context_length": text.context_length,
        "vocab_size": text.vocab_size,
        "width": text.width,
        "heads": text.heads,
        "layers": text.layers,
        "mlp_ratio": text.mlp_ratio,
        "no_causal_mask": not text.causal,
        "proj_bias": text.proj_bias,
        "pool_type": text.pool,
        "pad_id": text.pad_id,
        "norm_kwargs": {"eps": text.ln_eps},
        "tokenizer_kwargs": {"clean": text.tokenizer.clean},
    }
    if text.act == "gelu_tanh":
        text_cfg["act_kwargs"] = {"approximate": "tanh"}
    if text.tokenizer.type == "hf":
        text_cfg["hf_tokenizer_name"] = text.tokenizer.name
    return {
        "embed_dim": cfg.embed_dim,
        "init_logit_scale": cfg.init_logit_scale,
        "init_logit_bias": cfg.init_logit_bias,
        "custom_text": True,
        "vision_cfg": {
            "image_size": cfg.vision.image_size,
            "timm_model_name": cfg.vision.timm_model_name,
            "timm_model_pretrained": False,
            "timm_pool": cfg.vision.pool,
            "timm_proj": "linear" if cfg.vision.proj else "none",
            "timm_proj_bias": False,
        },
        "text_cfg": text_cfg,
    }


def preprocess_config(cfg: ModelConfig) -> dict[str, Any]:
    """Return open_clip's ``preprocess_cfg`` for the model's evaluation transform."""
    return {
        "size": cfg.vision.image_size,
        "mean": list(cfg.image_mean),
        "std": list(cfg.image_std),
        "interpolation": cfg.interpolation,
        "resize_mode": cfg.resize_mode,
    }


def from_open_clip_config(
    model_cfg: dict[str, Any], name: str, preprocess_cfg: dict[str, Any] | None = None
) -> ModelConfig:
    """Build the tulip config of an open_clip ``CustomTextCLIP`` config with a timm image tower."""
    vision_cfg, text_cfg = model_cfg.get("vision_cfg", {}), model_cfg.get("text_cfg", {})
    if not vision_cfg.get("timm_model_name"):
        raise ValueError(f"open_clip model {name!r} has no timm image tower; tulip needs vision_cfg.timm_model_name")
    if vision_cfg.get("timm_proj", "linear") not in ("linear", "none") or vision_cfg.get("timm_proj_bias"):
        raise ValueError(f"open_clip model {name!r}: only timm_proj 'linear' (without bias) or 'none' is supported")
    if text_cfg.get("hf_model_name"):
        raise ValueError(f"open_clip model {name!r} has a transformers text tower, which has other parameter names")
    for key, required in _UNSUPPORTED_TEXT.items():
        if text_cfg.get(key, required) != required:
            raise ValueError(f"open_clip model {name!r}: text_cfg.{key} = {text_cfg[key]!r} is not supported")
    if model_cfg.get("quick_gelu"):
        raise ValueError(f"open_clip model {name!r} uses QuickGELU, which tulip's text tower does not implement")

    tokenizer_kwargs = text_cfg.get("tokenizer_kwargs") or {}
    hf_tokenizer = text_cfg.get("hf_tokenizer_name")
    tokenizer = TokenizerConfig(
        type="hf" if hf_tokenizer else "openclip",
        name=hf_tokenizer or None,
        # open_clip's SimpleTokenizer lower-cases by default.
        clean=tokenizer_kwargs.get("clean", "canonicalize" if hf_tokenizer else "lower"),
    )

    act_kwargs = text_cfg.get("act_kwargs") or {}
    image_size = vision_cfg.get("image_size", 224)
    preprocess = preprocess_cfg or {}
    return ModelConfig(
        name=name,
        embed_dim=model_cfg["embed_dim"],
        vision=_timm_vision_config(
            vision_cfg["timm_model_name"],
            image_size=image_size if isinstance(image_size, int) else image_size[0],
            pool=vision_cfg.get("timm_pool", "avg"),
            proj=vision_cfg.get("timm_proj", "linear") == "linear",
        ),
        text=TextConfig(
            context_length=text_cfg.get("context_length", 77),
            vocab_size=text_cfg.get("vocab_size", 49408),
            width=text_cfg.get("width", 512),
            heads=text_cfg.get("heads", 8),
            layers=text_cfg.get("layers", 12),
            mlp_ratio=text_cfg.get("mlp_ratio", 4.0),
            ln_eps=(text_cfg.get("norm_kwargs") or {}).get("eps", 1e-5),
            act="gelu_tanh" if act_kwargs.get("approximate") == "tanh" else "gelu",
            pool=text_cfg.get("pool_type", "argmax"),
            causal=not text_cfg.get("no_causal_mask", False),
            proj_bias=text_cfg.get("proj_bias", False),
            pad_id=text_cfg.get("pad_id", 0),
            tokenizer=tokenizer,
        ),
        init_logit_scale=model_cfg.get("init_logit_scale", math.log(1 / 0.07)),
        init_logit_bias=model_cfg.get("init_logit_bias", 0.0),
        image_mean=tuple(preprocess.get("mean", (0.5, 0.5, 0.5))),
        image_std=tuple(preprocess.get("std", (0.5, 0.5, 0.5))),
        interpolation=preprocess.get("interpolation", "bicubic"),
        resize_mode=preprocess.get("resize_mode", "squash"),
    )


def _timm_vision_config(timm_model_name: str, image_size: int, pool: str, proj: bool) -> VisionConfig:
    """Describe a registered timm trunk; its sizes are read from an instance built on the meta device."""
    import timm

    with torch.device("meta"):
        trunk = timm.create_model(timm_model_name, pretrained=False, num_classes=0)
    first = trunk.blocks[0]
    return VisionConfig(
        timm_model_name=timm_model_name,
        image_size=image_size,
        patch_size=trunk.patch_embed.patch_size[0],
        width=trunk.embed_dim,
        depth=len(trunk.blocks),
        heads=first.attn.num_heads,
        mlp_ratio=first.mlp.fc1.out_features / trunk.embed_dim,
        pool=pool,
        proj=proj,
    )


def export_open_clip(model: torch.nn.Module, out_dir: str | Path, tokenizer: Tokenizer | None = None) -> Path:
    """Write ``model``'s image-text towers as an open_clip checkpoint folder and return the folder.

    A transformers tokenizer is saved beside the weights, because open_clip reads a local folder's
    tokenizer from the folder itself. Pass the model's tokenizer, or one is built from the config.
    """
    from safetensors.torch import save_file

    cfg: ModelConfig = model.cfg
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model_cfg = to_open_clip_config(cfg)
    if cfg.text.tokenizer.type == "hf":
        tokenizer = tokenizer or Tokenizer(cfg.text.tokenizer, cfg.text.context_length)
        tokenizer.save_pretrained(out_dir)
    state = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    tmp = out_dir / f".{WEIGHTS_FILE}.tmp"
    save_file(state, str(tmp), metadata={"format": "pt", "producer": "tulip"})
    tmp.replace(out_dir / WEIGHTS_FILE)
    # The config goes last: a folder with a config is a complete export.
    tmp = out_dir / f".{CONFIG_FILE}.tmp"
    payload = {"model_cfg": model_cfg, "preprocess_cfg": preprocess_config(cfg)}
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(out_dir / CONFIG_FILE)
    return out_dir


def read_open_clip_config(folder: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return (``model_cfg``, ``preprocess_cfg``) from an open_clip checkpoint folder."""
    payload = json.loads((Path(folder) / CONFIG_FILE).read_text(encoding="utf-8"))
    if "model_cfg" not in payload:
        raise ValueError(f"{Path(folder) / CONFIG_FILE} has no 'model_cfg'")
    return payload["model_cfg"], payload.get("preprocess_cfg", {})
