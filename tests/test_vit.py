"""ViT encoders: block structure, SPFT's top-k on transformer layers, the MLP head, mean-of-patch-token
features, the DINOv2 (transformers) -> timm conversion and the hub weights path. Nothing is downloaded:
the hub download is replaced by a local folder."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from medtl.models import build_network
from medtl.models.network import ARCHS, Network
from medtl.models.vit import (MLPHead, build_vit, check_dinov2_config, dinov2_to_timm, fit_pos_embed,
                              vit_blocks)
from medtl.registry import UnknownNameError
from medtl.strategies import STRATEGIES

EMBEDDINGS = ["cls_token", "pos_embed", "patch_embed"]


@pytest.fixture(scope="module")
def rad_dino():
    with torch.device("meta"):  # ViT-B/14 shapes without 86M parameters of memory
        return build_network("rad_dino", 14)


def test_rad_dino_blocks_are_embeddings_layers_and_norm_with_head(rad_dino):
    net = rad_dino
    assert net.n_blocks == 14
    assert net.block_prefixes[0] == EMBEDDINGS
    assert net.block_prefixes[1:13] == [[f"blocks.{i}"] for i in range(12)]
    assert net.block_prefixes[13] == ["norm", "head"]
    names = [n for n, _ in net.net.named_parameters()]
    for n in names:  # every parameter in exactly one block (Network refuses overlaps and orphans too)
        assert sum(any(n == p or n.startswith(p + ".") for p in ps) for ps in net.block_prefixes) == 1
    assert {net.block_of(n) for n in names if n.startswith("blocks.11.")} == {12}
    assert net.block_of("norm.weight") == 13 and not net.is_head("norm.weight")
    assert all(net.is_head(n) == n.startswith("head.") for n in names)
    # DINOv2 ViT-B/14 at 518 px: 37 x 37 patches + CLS, width 768, layer scale, no register tokens
    assert tuple(net.net.pos_embed.shape) == (1, 1 + 37 * 37, 768)
    assert net.net.patch_embed.patch_size == (14, 14)
    assert len(net.net.blocks) == 12 and net.net.blocks[0].attn.num_heads == 12
    assert hasattr(net.net.blocks[0].ls1, "gamma") and net.net.reg_token is None
    assert ARCHS.get("rad_dino").default_preprocess == {"resize": 518, "crop": 518}


def test_mlp_head(rad_dino):
    head = rad_dino.head_module()
    assert isinstance(head, MLPHead)
    kinds = [type(m) for m in head]
    assert kinds == [nn.LayerNorm, nn.Linear, nn.GELU, nn.Dropout, nn.Linear, nn.GELU, nn.Dropout, nn.Linear]
    assert head[0].normalized_shape == (768,)
    assert [(m.in_features, m.out_features) for m in head if isinstance(m, nn.Linear)] == \
        [(768, 512), (512, 512), (512, 14)]
    assert [m.p for m in head if isinstance(m, nn.Dropout)] == [0.2, 0.2]
    assert (head.in_features, head.out_features) == (768, 14)


def test_vit_tiny_shape_and_blocks(make_net):
    net = make_net("vit_tiny", n_classes=3)
    assert net.n_blocks == 6 and net.block_prefixes[0] == EMBEDDINGS and net.block_prefixes[-1] == ["norm", "head"]
    v = net.net
    assert (v.embed_dim, len(v.blocks), v.blocks[0].attn.num_heads, v.patch_embed.patch_size) == (64, 4, 4, (4, 4))
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 3)
    # the embeddings' bare parameters have no module: switching frozen blocks to eval mode skips them
    assert net.block_modules(0) == [v.patch_embed]


def test_features_are_the_mean_of_patch_tokens_without_cls(make_net):
    net = make_net("vit_tiny", n_classes=3).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        tokens = net.net.forward_features(x)  # final norm applied to every token
        feats = net.features(x)
        assert tokens.shape == (3, 1 + 8 * 8, 64)
        torch.testing.assert_close(feats, tokens[:, 1:].mean(dim=1))
        assert not torch.allclose(feats, tokens.mean(dim=1))  # CLS excluded
        torch.testing.assert_close(net.head_module()(feats), net(x))


def test_other_input_sizes_resample_position_embeddings(make_net):
    net = make_net("vit_tiny", n_classes=2).eval()
    with torch.no_grad():
        assert net(torch.randn(1, 3, 48, 48)).shape == (1, 2)


def _spft(net, make_context, epochs=40, **settings):
    ctx = make_context(net, epochs=epochs, task="multilabel",
                       train_targets=np.eye(2, dtype=np.float32)[np.arange(8) % 2])
    return STRATEGIES.get("spft")(ctx, **settings)


def test_spft_top10_never_trains_embeddings_or_first_two_layers(rad_dino, make_context):
    spft = _spft(rad_dino, make_context, top_k=10, head_epochs=2, unfreeze_every=1, ema=False)
    ever: set[str] = set()
    for epoch in range(40):
        spft.apply_freezing(epoch)
        trainable = {n for n, p in rad_dino.net.named_parameters() if p.requires_grad}
        assert {"norm.weight", "norm.bias"} <= trainable and all(n in trainable for n in trainable if "head" in n)
        ever |= trainable
    never = {n for n, _ in rad_dino.net.named_parameters()} - ever
    layers = lambda names: {int(n.split(".")[1]) for n in names if n.startswith("blocks.")}  # noqa: E731
    assert layers(ever) == set(range(2, 12))          # the top 10 transformer layers
    assert layers(never) == {0, 1}
    assert {n.split(".")[0] for n in never} == {"cls_token", "pos_embed", "patch_embed", "blocks"}
    # the head stage, then one more layer per epoch from the top down
    assert [spft.n_unfrozen(e) for e in (0, 1, 2, 3, 11, 12, 30)] == [0, 0, 1, 2, 10, 10, 10]
    spft.apply_freezing(2)
    assert layers(n for n, p in rad_dino.net.named_parameters() if p.requires_grad) == {11}


def test_spft_all_layers_unfreezes_every_layer_and_the_embeddings(rad_dino, make_context):
    spft = _spft(rad_dino, make_context, top_k="all", head_epochs=0, ema=False)
    spft.apply_freezing(39)
    assert all(p.requires_grad for p in rad_dino.net.parameters())
    assert spft.n_unfrozen(39) == 13  # 12 layers + the embeddings


def test_spft_training_leaves_frozen_layers_untouched(make_context, make_store, make_trainer):
    """A 12-layer ViT trained with SPFT top_k=10 for longer than it takes to unfreeze everything:
    the embeddings and layers 0-1 keep their values, layers 2-11, the final norm and the head move."""
    torch.manual_seed(0)
    vit = build_vit(2, img_size=16, patch_size=4, embed_dim=16, depth=12, num_heads=2, init_values=0.1)
    net = Network(vit, vit_blocks(vit), "head", "vit12")
    before = {n: p.detach().clone() for n, p in net.net.named_parameters()}
    store = make_store(task="multilabel", n=40, size=16, n_classes=2)
    spft = STRATEGIES.get("spft")(make_context(net, store, lr=1e-2, epochs=13, steps_per_epoch=3),
                                  top_k=10, head_epochs=1, ema=False, amp=False)
    moved: set[str] = set()
    step = spft.after_step

    def after_step():  # every parameter that ever changed (the trainer restores the best epoch at the end)
        moved.update(n for n, p in net.net.named_parameters() if not torch.equal(p.detach(), before[n]))
        step()

    spft.after_step = after_step
    make_trainer(spft, store, epochs=13, batch_size=8, patience=100).fit()
    for n in before:
        frozen = n.split(".")[0] in ("cls_token", "pos_embed", "patch_embed") or n.startswith(("blocks.0.", "blocks.1."))
        assert (n not in moved) == frozen, n
    assert {"norm.weight", "head.7.weight"} <= moved


# -- DINOv2 (transformers) -> timm ------------------------------------------------------------------------
transformers = pytest.importorskip("transformers")

TINY_DINOV2 = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                   image_size=28, patch_size=7, layerscale_value=0.5)


def _hf_dinov2(**overrides):
    torch.manual_seed(0)
    model = transformers.Dinov2Model(transformers.Dinov2Config(**{**TINY_DINOV2, **overrides})).eval()
    with torch.no_grad():  # move norms and layer scales off their initial values so a swap would show
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def _legacy_names(state: dict) -> dict:
    """transformers v4 attention names (what hub checkpoints such as microsoft/rad-dino store)."""
    rename = {"attention.q_proj": "attention.attention.query", "attention.k_proj": "attention.attention.key",
              "attention.v_proj": "attention.attention.value", "attention.o_proj": "attention.output.dense"}
    out = {}
    for k, v in state.items():
        for new, old in rename.items():
            k = k.replace(new, old)
        out[k] = v
    return out


def _matching_net(num_classes=3):
    vit = build_vit(num_classes, img_size=28, patch_size=7, embed_dim=32, depth=2, num_heads=4, init_values=1.0)
    return Network(vit, vit_blocks(vit), "head", "dinov2_tiny")


@pytest.mark.parametrize("legacy", [False, True], ids=["transformers-v5-names", "hub-checkpoint-names"])
def test_dinov2_conversion_gives_the_same_patch_token_features(legacy):
    hf = _hf_dinov2()
    state = hf.state_dict()
    state = _legacy_names(state) if legacy else state
    net = _matching_net().eval()
    x = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        reference = hf(pixel_values=x).last_hidden_state
        assert not torch.allclose(net.net.forward_features(x), reference, atol=1e-3)  # not equal by accident
        converted = dinov2_to_timm(state)
        assert "mask_token" not in " ".join(converted) and "blocks.0.attn.qkv.weight" in converted
        net.load_backbone(converted)
        torch.testing.assert_close(net.net.forward_features(x), reference, atol=1e-5, rtol=0)
        torch.testing.assert_close(net.features(x), reference[:, 1:].mean(dim=1), atol=1e-5, rtol=0)


def test_conversion_refuses_what_it_cannot_map():
    state = dict(_hf_dinov2().state_dict())
    state["encoder.layer.0.mlp.weights_in.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="weights_in"):
        dinov2_to_timm(state)
    state = {k: v for k, v in _hf_dinov2().state_dict().items() if "k_proj" not in k}
    with pytest.raises(ValueError, match="lacks"):
        dinov2_to_timm(state)


def test_config_check_and_position_embedding_resampling():
    net = _matching_net()
    cfg = transformers.Dinov2Config(**TINY_DINOV2).to_dict()
    check_dinov2_config(cfg, net.net, "x")
    with pytest.raises(ValueError, match="num_hidden_layers is 3"):
        check_dinov2_config({**cfg, "num_hidden_layers": 3}, net.net, "x")
    with pytest.raises(ValueError, match="use_swiglu_ffn"):
        check_dinov2_config({**cfg, "use_swiglu_ffn": True}, net.net, "x")
    # a checkpoint made at 42 px (6 x 6 patches) fits the 28 px (4 x 4) network after resampling
    state = dinov2_to_timm(_hf_dinov2(image_size=42).state_dict())
    assert tuple(state["pos_embed"].shape) == (1, 37, 32)
    assert tuple(fit_pos_embed(state, net.net)["pos_embed"].shape) == (1, 17, 32)


# fetch_hub reads a hub repository with every file it lists: tests/test_artifacts.py


# -- any timm ViT by name ---------------------------------------------------------------------------------------
def test_timm_vits_resolve_by_name():
    name = "timm_vit.vit_small_patch16_224"
    assert name in ARCHS
    spec = ARCHS.get(name)
    # from the name, as the workflow plans without importing timm: crop 224, resize 224 x 256 / 224
    assert spec.default_preprocess == {"resize": 256, "crop": 224}
    assert ARCHS.get("timm_vit.vit_small_patch16_384").default_preprocess["crop"] == 384
    assert spec.imagenet_weights == "timm:vit_small_patch16_224"
    with torch.device("meta"):
        net = build_network(name, 4)
    assert net.n_blocks == 14 and net.block_prefixes[0] == EMBEDDINGS
    assert net.head_module().out_features == 4 and net.head_module().in_features == 384


def test_unusable_timm_names_are_refused_with_the_reason():
    assert "timm_vit.no_such_model" not in ARCHS
    with pytest.raises(UnknownNameError, match="timm has no model 'no_such_model'"):
        ARCHS.get("timm_vit.no_such_model")
    with pytest.raises(UnknownNameError, match="cannot be used as a ViT encoder"):
        ARCHS.get("timm_vit.resnet18")
    with pytest.raises(UnknownNameError, match="known architectures: .*timm_vit.<name>"):
        ARCHS.get("vit_huge_unregistered")


def test_schema_accepts_hub_weights_and_refuses_unknown_types():
    import jsonschema
    import yaml

    schema = yaml.safe_load((Path(__file__).resolve().parents[1] / "schemas" / "config.schema.yaml").read_text())
    config = {"datasets": {"d": {}}, "strategies": {"spft": {}}, "learning_rates": [5e-5],
              "architectures": {"rad_dino": {"weights": {"type": "hub", "repo": "microsoft/rad-dino",
                                                         "revision": "main"}}}}
    jsonschema.validate(config, schema)
    config["architectures"]["rad_dino"]["weights"] = {"type": "huggingface"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(config, schema)
