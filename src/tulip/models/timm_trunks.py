"""Small ViT trunks registered with timm, so that presets and exported checkpoints name them like timm's own.

open_clip builds a timm image tower from the architecture name alone (``timm.create_model(name)``),
so a trunk must be in timm's registry before an open_clip config can refer to it. Importing
``tulip.models`` registers the trunks below; an open_clip user loading an exported tulip-tiny
checkpoint runs ``import tulip`` first.
"""

from __future__ import annotations

from timm.models import generate_default_cfgs, register_model
from timm.models.vision_transformer import VisionTransformer, _create_vision_transformer


def _trunk_cfg(image_size: int) -> dict:
    return {
        "url": "",
        "num_classes": 0,
        "input_size": (3, image_size, image_size),
        "pool_size": None,
        "crop_pct": 1.0,
        "interpolation": "bicubic",
        "fixed_input_size": False,
        "mean": (0.5, 0.5, 0.5),
        "std": (0.5, 0.5, 0.5),
        "first_conv": "patch_embed.proj",
        "classifier": "head",
    }


# timm's register_model reads the pretrained configs from this module-level name.
default_cfgs = generate_default_cfgs({"vit_tulip_tiny_patch8_32": _trunk_cfg(32)})


@register_model
def vit_tulip_tiny_patch8_32(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """ViT for 32x32 images: 8x8 patches (a 4x4 grid), width 128, 4 blocks of 4 heads, MAP pooling."""
    model_args = dict(
        img_size=32, patch_size=8, embed_dim=128, depth=4, num_heads=4, mlp_ratio=4.0, class_token=False,
        global_pool="map",
    )
    return _create_vision_transformer("vit_tulip_tiny_patch8_32", pretrained=pretrained, **dict(model_args, **kwargs))
