"""Vision Transformer encoders (the second study): RAD-DINO, a demo-size ViT and any timm ViT.

Every ViT here is a timm ``VisionTransformer`` whose classification path is:

- features: the final LayerNorm applied to every token (as DINOv2 / RAD-DINO output them), then the
  **mean of the patch tokens** (CLS and register tokens excluded): ``global_pool="avg"`` with
  ``fc_norm=False``, so timm normalises before pooling rather than after;
- head (:class:`MLPHead`): LayerNorm, two hidden layers of 512 with GELU and dropout 0.2, linear output.

Parameter blocks, the unit strategies freeze and unfreeze, first to last:

1. the embeddings: ``patch_embed``, ``cls_token``, ``pos_embed`` (and ``reg_token``, ``norm_pre`` where present);
2. one block per transformer layer (``blocks.0`` ... ``blocks.{depth-1}``);
3. the final norm and the head.

So SPFT's ``top_k`` (counted from the top, head block excluded) is "the top k transformer layers":
with ``top_k: 10`` on a 12-layer ViT the embeddings and the first two layers never train.

Registered names:

- ``rad_dino``: DINOv2 ViT-B/14 shape (768 wide, 12 layers, 12 heads, layer scale, 518 px, 37x37
  patches), the shape of ``microsoft/rad-dino``; its weights come from the hub (weights type ``hub``,
  :func:`dinov2_to_timm` converts the transformers state dict), randomly initialised otherwise;
- ``vit_tiny``: the same structure at demo size (32 px, patch 4, width 64, depth 4, 4 heads);
- ``timm_vit.<timm model name>``, e.g. ``timm_vit.vit_small_patch16_224``: any ViT of timm's
  ``vision_transformer`` module; weights type ``imagenet`` fetches timm's pretrained weights for it.

They are registered, without importing this module, in :mod:`medtl.models.spec`.
"""
from __future__ import annotations

import re

import torch
from torch import nn

HIDDEN = 512
DROPOUT = 0.2
#: hub repositories whose weights type ``hub`` needs no ``repo`` in the config
HUB_REPOS = {"rad_dino": "microsoft/rad-dino"}
#: what every ViT here is built with: mean of patch tokens after the final norm, any input size
VIT_OPTIONS = {"global_pool": "avg", "fc_norm": False, "dynamic_img_size": True}


class MLPHead(nn.Sequential):
    """LayerNorm, [Linear(512), GELU, Dropout(0.2)] x 2, Linear(num_classes)."""

    def __init__(self, in_features: int, num_classes: int, hidden: int = HIDDEN, dropout: float = DROPOUT):
        super().__init__(
            nn.LayerNorm(in_features),
            nn.Linear(in_features, hidden), nn.GELU(), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.GELU(), nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    @property
    def in_features(self) -> int:
        return self[0].normalized_shape[0]

    @property
    def out_features(self) -> int:
        return self[-1].out_features


def _with_head(net, num_classes: int):
    from timm.models.vision_transformer import VisionTransformer

    if not isinstance(net, VisionTransformer):
        raise ValueError(f"{type(net).__name__} is not a timm VisionTransformer")
    if net.attn_pool is not None or net.global_pool != "avg":
        raise ValueError("the model does not pool the mean of its patch tokens")
    net.head = MLPHead(net.embed_dim, num_classes)
    return net


def build_vit(num_classes: int, **shape) -> nn.Module:
    """A timm VisionTransformer of the given shape with the mean-of-patch-tokens features and the MLP head."""
    from timm.models.vision_transformer import VisionTransformer

    return _with_head(VisionTransformer(num_classes=num_classes, **{**VIT_OPTIONS, **shape}), num_classes)


def vit_blocks(net: nn.Module) -> list[list[str]]:
    """[embeddings], each transformer layer, [final norm(s), pooling, head]: see the module docstring."""
    late = ("norm", "fc_norm", "attn_pool", "head")
    tops = list(dict.fromkeys(n.split(".")[0] for n, _ in net.named_parameters()))
    embeddings = [t for t in tops if t != "blocks" and t not in late]
    layers = [[f"blocks.{i}"] for i in range(len(net.blocks))]
    return [embeddings, *layers, [t for t in late if t in tops]]


# -- any timm ViT by name -----------------------------------------------------------------------------
def build_timm_vit(num_classes: int, model: str) -> nn.Module:
    """``timm_vit.<model>``: timm's ViT ``model`` with the mean-of-patch-tokens features and the MLP head;
    ValueError (the reason) for a model that cannot be used so."""
    import timm

    try:
        net = timm.create_model(model, pretrained=False, num_classes=num_classes, **VIT_OPTIONS)
    except RuntimeError as err:  # timm's "Unknown model"
        raise ValueError(f"timm has no model '{model}' ({err})") from None
    except (TypeError, ValueError, AssertionError, NotImplementedError) as err:
        raise ValueError(f"timm model '{model}' cannot be used as a ViT encoder here: {err}") from None
    try:
        return _with_head(net, num_classes)
    except ValueError as err:
        raise ValueError(f"timm model '{model}' cannot be used as a ViT encoder here: {err}") from None


# -- weights ---------------------------------------------------------------------------------------------
_LAYER = re.compile(r"^encoder\.layer\.(\d+)\.(.+)$")
_LAYER_KEYS = {  # transformers Dinov2Layer -> timm Block (both the v4 and the v5 attention names)
    "norm1": "norm1", "norm2": "norm2",
    "attention.output.dense": "attn.proj", "attention.o_proj": "attn.proj",
    "layer_scale1.lambda1": "ls1.gamma", "layer_scale2.lambda1": "ls2.gamma",
    "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2",
}
_QKV = {"attention.attention.query": "q", "attention.attention.key": "k", "attention.attention.value": "v",
        "attention.q_proj": "q", "attention.k_proj": "k", "attention.v_proj": "v"}


def dinov2_to_timm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A transformers ``Dinov2Model`` state dict (e.g. ``microsoft/rad-dino``'s model.safetensors) in timm
    ``VisionTransformer`` names: query/key/value concatenated into ``qkv``, ``layer_scale*.lambda1`` ->
    ``ls*.gamma``, ``layernorm`` -> ``norm``. The mask token (masked-image pretraining only) is dropped.
    ValueError for tensors it does not know (e.g. a SwiGLU feed-forward, which timm's Block lacks)."""
    state = {k.removeprefix("dinov2."): v for k, v in state.items()}
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    unknown = []
    for key, value in state.items():
        if key == "embeddings.mask_token":
            continue
        if key == "embeddings.cls_token":
            out["cls_token"] = value
        elif key == "embeddings.register_tokens":
            out["reg_token"] = value
        elif key == "embeddings.position_embeddings":
            out["pos_embed"] = value
        elif key.startswith("embeddings.patch_embeddings.projection."):
            out["patch_embed.proj." + key.rsplit(".", 1)[1]] = value
        elif key.startswith("layernorm."):
            out["norm." + key.rsplit(".", 1)[1]] = value
        elif m := _LAYER.match(key):
            i, rest = int(m[1]), m[2]
            module, _, kind = rest.rpartition(".")
            if module in _QKV:
                qkv.setdefault((i, kind), {})[_QKV[module]] = value
            elif rest in _LAYER_KEYS:  # layer scale: the parameter itself has no .weight/.bias
                out[f"blocks.{i}.{_LAYER_KEYS[rest]}"] = value
            elif module in _LAYER_KEYS:
                out[f"blocks.{i}.{_LAYER_KEYS[module]}.{kind}"] = value
            else:
                unknown.append(key)
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f"not a plain DINOv2 ViT state dict: no timm name for {unknown[:5]}")
    for (i, kind), parts in sorted(qkv.items()):
        if set(parts) != {"q", "k", "v"}:
            raise ValueError(f"layer {i}: attention {kind} lacks {sorted({'q', 'k', 'v'} - set(parts))}")
        out[f"blocks.{i}.attn.qkv.{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return out


def fit_pos_embed(state: dict[str, torch.Tensor], net: nn.Module) -> dict[str, torch.Tensor]:
    """Resample the checkpoint's position embeddings to ``net``'s patch grid when they differ
    (bicubic, prefix tokens kept), as DINOv2 does for other input sizes."""
    from timm.layers import resample_abs_pos_embed

    pos = state.get("pos_embed")
    own = getattr(net, "pos_embed", None)
    if pos is None or own is None or pos.shape == own.shape:
        return state
    prefix = 0 if getattr(net, "no_embed_class", False) else net.num_prefix_tokens
    grid = tuple(net.patch_embed.grid_size)
    return {**state, "pos_embed": resample_abs_pos_embed(pos, new_size=grid, num_prefix_tokens=prefix)}


def check_dinov2_config(config: dict, net: nn.Module, arch: str) -> None:
    """Refuse a hub checkpoint whose shape is not the architecture's (before any tensor is compared)."""
    expected = {"hidden_size": net.embed_dim, "num_hidden_layers": len(net.blocks),
                "num_attention_heads": net.blocks[0].attn.num_heads,
                "patch_size": net.patch_embed.patch_size[0]}
    wrong = {k: (config.get(k), v) for k, v in expected.items() if k in config and config[k] != v}
    if config.get("use_swiglu_ffn"):
        wrong["use_swiglu_ffn"] = (True, False)
    if config.get("model_type", "dinov2") != "dinov2":
        wrong["model_type"] = (config.get("model_type"), "dinov2")
    if wrong:
        raise ValueError(f"hub checkpoint does not fit architecture '{arch}': " +
                         ", ".join(f"{k} is {a!r}, the architecture has {b!r}" for k, (a, b) in wrong.items()))
