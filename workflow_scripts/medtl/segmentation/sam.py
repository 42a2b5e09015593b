"""SAM built from segment-anything's modules at the input size a study chooses.

``segment_anything.sam_model_registry`` always builds for 1024 px inputs; fine-tuning on a
CPU, or on small images, needs less. :func:`build_sam` assembles the same ``Sam`` (image
encoder, prompt encoder, mask decoder) with ``img_size`` as given, and loads a checkpoint made
for another size by resizing what depends on it: the absolute position embedding (bicubic,
on its 2-D grid) and the relative position tables of the global-attention blocks (linear,
as SAM itself does at run time). Without a checkpoint the model starts from random weights.

The image encoder is chosen by name: the official ``vit_b`` (the default of every study),
``vit_l``, ``vit_h``, or ``vit_tiny``, the same ``ImageEncoderViT`` class at a small width
and depth, for the CPU demo only.
"""
from __future__ import annotations

import os
from functools import partial

import torch
import torch.nn.functional as F

from medtl.segmentation.spec import ENCODERS, EncoderSpec  # noqa: F401  (registered without PyTorch)

PATCH = 16
PROMPT_DIM = 256
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


def build_sam(encoder: str = "vit_b", img_size: int = 1024, checkpoint: str | os.PathLike | None = None):
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    if img_size % PATCH:
        raise ValueError(f"SAM's img_size must be a multiple of {PATCH}, got {img_size}")
    spec = ENCODERS.get(encoder)
    grid = img_size // PATCH
    sam = Sam(
        image_encoder=ImageEncoderViT(
            depth=spec.depth, embed_dim=spec.embed_dim, img_size=img_size, mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=spec.num_heads, patch_size=PATCH,
            qkv_bias=True, use_rel_pos=True, global_attn_indexes=spec.global_attn_indexes,
            window_size=spec.window_size, out_chans=PROMPT_DIM),
        prompt_encoder=PromptEncoder(embed_dim=PROMPT_DIM, image_embedding_size=(grid, grid),
                                     input_image_size=(img_size, img_size), mask_in_chans=16),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=PROMPT_DIM, mlp_dim=2048, num_heads=8),
            transformer_dim=PROMPT_DIM, iou_head_depth=3, iou_head_hidden_dim=256),
        pixel_mean=list(PIXEL_MEAN), pixel_std=list(PIXEL_STD),
    )
    if checkpoint:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
            state = state["model"]  # fine-tuned checkpoints (e.g. MedSAM) often nest the weights
        sam.load_state_dict(adapt_state_dict(state, sam.state_dict()))
    return sam


def adapt_state_dict(state: dict, target: dict) -> dict:
    """``state`` with every size-dependent tensor resized to ``target``'s shapes."""
    out = {}
    for key, value in state.items():
        want = target.get(key)
        if want is None or value.shape == want.shape:
            out[key] = value
        elif key.endswith("pos_embed"):  # (1, H, W, C) grid of absolute position embeddings
            grid = F.interpolate(value.permute(0, 3, 1, 2).float(), size=want.shape[1:3], mode="bicubic",
                                 align_corners=False)
            out[key] = grid.permute(0, 2, 3, 1).to(value.dtype)
        elif "rel_pos" in key:  # (2 * size - 1, head_dim) relative position table
            table = F.interpolate(value.float().T[None], size=want.shape[0], mode="linear", align_corners=False)
            out[key] = table[0].T.to(value.dtype)
        else:
            raise ValueError(f"checkpoint tensor '{key}' has shape {tuple(value.shape)}, the model needs "
                             f"{tuple(want.shape)}: is it a checkpoint of another encoder?")
    return out


# -- the parts SPFT treats differently ---------------------------------------------------------------
HEAD = ("mask_decoder",)
FROZEN = ("prompt_encoder",)  # never trained: box prompts keep the meaning SAM gave them


def encoder_units(sam) -> list[list[str]]:
    """Parameter-name prefixes of the image encoder, bottom-up, one unit per transformer block.

    The patch embedding and the position embedding go with the first block, the neck (the
    convolutions that map the last block to the mask decoder's 256 channels) with the last.
    """
    depth = len(sam.image_encoder.blocks)
    units = [[f"image_encoder.blocks.{i}"] for i in range(depth)]
    units[0] = ["image_encoder.patch_embed", "image_encoder.pos_embed", *units[0]]
    units[-1] = [*units[-1], "image_encoder.neck"]
    return units


def matches(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def preprocess(sam, images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, S, S, C) -> SAM's normalised (B, 3, img_size, img_size) input."""
    x = images.permute(0, 3, 1, 2).float()
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)  # grayscale radiographs: the same value in R, G and B
    size = sam.image_encoder.img_size
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return (x - sam.pixel_mean) / sam.pixel_std


def mask_logits(sam, images: torch.Tensor, boxes: list[torch.Tensor], frozen_encoder: bool = False,
                frozen_prompts: bool = True) -> list[torch.Tensor]:
    """One (K_i, S, S) logit map per image for its K_i box prompts (x1, y1, x2, y2 in image pixels, S = image side)."""
    side = images.shape[1]
    scale = sam.image_encoder.img_size / side
    x = preprocess(sam, images)
    if frozen_encoder:  # head-only stage: no graph through the encoder at all
        with torch.no_grad():
            embeddings = sam.image_encoder(x)
    else:
        embeddings = sam.image_encoder(x)
    dense_pe = sam.prompt_encoder.get_dense_pe()
    out = []
    for b, box in enumerate(boxes):
        if len(box) == 0:
            out.append(embeddings.new_zeros((0, side, side)))
            continue
        with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen_prompts):
            sparse, dense = sam.prompt_encoder(points=None, boxes=box.to(embeddings.dtype) * scale, masks=None)
        low, _ = sam.mask_decoder(image_embeddings=embeddings[b:b + 1], image_pe=dense_pe,
                                  sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                  multimask_output=False)
        out.append(F.interpolate(low, size=(side, side), mode="bilinear", align_corners=False)[:, 0])
    return out
