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

SAM 2 (``sam2.1_hiera_tiny``, ``sam2.1_hiera_small``) is built from the ``sam2`` package's own
configs at ``img_size`` (random weights offline, or an official checkpoint), and its single-image
path -- Hiera image encoder with its FPN neck and the "no memory" embedding, prompt encoder, mask
decoder with high-resolution features -- is kept under SAM's own names (:class:`Sam2Image`), so
that staging, fine-tuning, pretraining and evaluation are the same code for both.
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
    spec = ENCODERS.get(encoder)
    if img_size % spec.size_multiple:
        raise ValueError(f"{encoder}: img_size must be a multiple of {spec.size_multiple}, got {img_size}")
    if spec.family == "sam2":
        return build_sam2_image(spec, img_size, checkpoint)
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

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
        state = read_checkpoint(checkpoint)
        if any(k.startswith(SAM2_NAMES) for k in state):
            raise ValueError(f"{checkpoint} is a SAM 2 checkpoint: is it a checkpoint of another encoder than "
                             f"'{encoder}'?")
        sam.load_state_dict(adapt_state_dict(state, sam.state_dict()))
    return sam


def read_released(encoder: str, checkpoint: str | os.PathLike) -> dict | None:
    """A released checkpoint read by its owner's builder (segment_anything's ``sam_model_registry[encoder]``,
    sam2's ``build_sam2``, each with the checkpoint: strict, at their native 1024 px), returned in the
    owner's layout (SAM: the state dict; SAM 2: ``{"model": state dict}``); None for an encoder with no
    owner's release (the demo sizes). ValueError naming the encoder when the file is not its checkpoint."""
    spec = ENCODERS.get(encoder)
    try:
        if spec.family == "sam2":
            from sam2.build_sam import build_sam2

            base = build_sam2(spec.config, str(checkpoint), device="cpu", mode="eval", apply_postprocessing=False)
            return {"model": base.state_dict()}
        from segment_anything import sam_model_registry

        if encoder not in sam_model_registry:
            return None
        return sam_model_registry[encoder](checkpoint=str(checkpoint)).state_dict()
    except (RuntimeError, KeyError, TypeError) as err:  # sam2 raises a bare RuntimeError after logging the keys
        raise ValueError(f"{checkpoint} is not a released checkpoint of '{encoder}' (is it a checkpoint of another "
                         f"encoder?): {str(err)[:300] or type(err).__name__}") from None


def read_checkpoint(checkpoint: str | os.PathLike) -> dict:
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]  # SAM 2's and fine-tuned checkpoints (e.g. MedSAM) nest the weights
    return state


# -- SAM 2 ---------------------------------------------------------------------------------------------------
#: official SAM 2 names of the parts the image path keeps -> ours
SAM2_NAMES = ("sam_prompt_encoder.", "sam_mask_decoder.")
SAM2_RENAME = {"sam_prompt_encoder.": "prompt_encoder.", "sam_mask_decoder.": "mask_decoder.",
               "image_encoder.": "image_encoder.", "no_mem_embed": "image_encoder.no_mem_embed"}


class Sam2Encoder(torch.nn.Module):
    """SAM 2's image encoder (Hiera trunk, FPN neck) with the "no memory" embedding a single image gets on
    its lowest-resolution features; returns the three feature levels the mask decoder reads."""

    def __init__(self, encoder, no_mem_embed: torch.nn.Parameter, img_size: int):
        super().__init__()
        self.trunk, self.neck, self.scalp = encoder.trunk, encoder.neck, encoder.scalp
        self.no_mem_embed = no_mem_embed
        self.img_size = img_size

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features, _ = self.neck(self.trunk(x))
        if self.scalp > 0:
            features = features[: -self.scalp]
        *high, low = features[-3:]
        return [*high, low + self.no_mem_embed.view(1, -1, 1, 1)]


class Sam2Image(torch.nn.Module):
    """The modules of SAM 2 one image with box prompts uses, under SAM's names (image_encoder,
    prompt_encoder, mask_decoder), with SAM's pixel normalisation (SAM 2's ImageNet mean and standard
    deviation, on the 0-255 scale, are the same numbers)."""
    family = "sam2"

    def __init__(self, base, img_size: int):
        super().__init__()
        self.image_encoder = Sam2Encoder(base.image_encoder, base.no_mem_embed, img_size)
        self.prompt_encoder = base.sam_prompt_encoder
        self.mask_decoder = base.sam_mask_decoder
        self.register_buffer("pixel_mean", torch.tensor(PIXEL_MEAN).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(PIXEL_STD).view(-1, 1, 1), False)


def build_sam2_image(spec, img_size: int, checkpoint: str | os.PathLike | None = None) -> Sam2Image:
    """SAM 2 at ``img_size`` from the sam2 package's config (no download); an official checkpoint (or one
    of :class:`Sam2Image`, as the pipeline's pretraining writes) is loaded when given."""
    from sam2.build_sam import build_sam2

    base = build_sam2(spec.config, None, device="cpu", mode="train", apply_postprocessing=False,
                      hydra_overrides_extra=[f"++model.image_size={img_size}"])
    model = Sam2Image(base, img_size)
    if checkpoint:
        state = read_checkpoint(checkpoint)
        if any(k.startswith("image_encoder.blocks.") for k in state):
            raise ValueError(f"{checkpoint} is a checkpoint of SAM (ViT), not of SAM 2: is it a checkpoint of "
                             f"another encoder?")
        if any(k.startswith(SAM2_NAMES) for k in state):  # the official layout: keep the image path, rename
            state = {SAM2_RENAME[p] + k[len(p):]: v for k, v in state.items()
                     for p in SAM2_RENAME if k == p or (p.endswith(".") and k.startswith(p))}
        want = model.state_dict()
        wrong = sorted(k for k in want if k in state and state[k].shape != want[k].shape)
        missing = sorted(set(want) - set(state))
        if wrong or missing:
            raise ValueError(f"{checkpoint} does not fit {spec.config} (is it a checkpoint of another encoder?): "
                             f"{len(wrong)} tensors of another shape, e.g. {wrong[:3]}; {len(missing)} missing, e.g. "
                             f"{missing[:3]}")
        model.load_state_dict({k: state[k] for k in want})
    return model


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
    convolutions that map the last block to the mask decoder's 256 channels) with the last
    (SAM 2: the Hiera blocks; the FPN neck and the "no memory" embedding go with the last).
    """
    if getattr(sam, "family", "sam") == "sam2":
        depth = len(sam.image_encoder.trunk.blocks)
        units = [[f"image_encoder.trunk.blocks.{i}"] for i in range(depth)]
        units[0] = ["image_encoder.trunk.patch_embed", "image_encoder.trunk.pos_embed",
                    "image_encoder.trunk.pos_embed_window", *units[0]]
        units[-1] = [*units[-1], "image_encoder.neck", "image_encoder.no_mem_embed"]
        return units
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
    sam2 = getattr(sam, "family", "sam") == "sam2"
    if sam2:  # the decoder projects the two high-resolution levels itself (its own, trained, convolutions)
        high = [sam.mask_decoder.conv_s0(embeddings[0]), sam.mask_decoder.conv_s1(embeddings[1])]
        embeddings = embeddings[2]
    dense_pe = sam.prompt_encoder.get_dense_pe()
    out = []
    for b, box in enumerate(boxes):
        if len(box) == 0:
            out.append(embeddings.new_zeros((0, side, side)))
            continue
        box = box.to(embeddings.dtype) * scale
        with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen_prompts):
            if sam2:  # SAM 2 takes a box as its two corner points, labelled 2 and 3
                labels = torch.tensor([[2, 3]], dtype=torch.int, device=box.device).repeat(len(box), 1)
                sparse, dense = sam.prompt_encoder(points=(box.reshape(-1, 2, 2), labels), boxes=None, masks=None)
            else:
                sparse, dense = sam.prompt_encoder(points=None, boxes=box, masks=None)
        if sam2:
            low = sam.mask_decoder(image_embeddings=embeddings[b:b + 1], image_pe=dense_pe,
                                   sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                   multimask_output=False, repeat_image=True,
                                   high_res_features=[h[b:b + 1] for h in high])[0]
        else:
            low, _ = sam.mask_decoder(image_embeddings=embeddings[b:b + 1], image_pe=dense_pe,
                                      sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                      multimask_output=False)
        out.append(F.interpolate(low, size=(side, side), mode="bilinear", align_corners=False)[:, 0])
    return out
