"""Weights files from outside, in the format their owners publish them, read by the owners' loaders.

Each fixture is written by the owner's own writer (transformers' ``save_pretrained``, timm's ``save_for_hf``,
Ultralytics' ``strip_optimizer``) or in the owner's documented legacy layout, and placed where the owner's
loader looks for it (torch.hub's checkpoint cache, the Hugging Face cache), so that no loader is patched: only
the network is absent. ``docs/artifacts.md`` lists every external file and its test.
"""
from __future__ import annotations

import json
import re

import pytest
import torch

from hub_cache import hub_offline, hub_snapshot  # noqa: F401  (fixture)
from medtl.models import build_network
from medtl.models import weights as W

TORCH_HUB = "hub/checkpoints"


# -- torchvision: DenseNet-121's legacy key names --------------------------------------------------------------
def legacy_densenet_file(path):
    """torchvision's densenet121-a639ec97.pth as published (2017): dense layers' norms and convolutions under
    ``norm.1`` / ``conv.2`` names and no ``num_batches_tracked``; the layout torchvision's
    ``densenet.py::_load_state_dict`` regex expects and renames. Built from torchvision's own model."""
    from torchvision.models import densenet121

    torch.manual_seed(0)
    state = densenet121().state_dict()
    legacy = {}
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            continue
        legacy[re.sub(r"(denselayer\d+\.(?:norm|relu|conv))([12])\.", r"\1.\2.", key)] = value
    assert any(".norm.1.weight" in k for k in legacy) and not any(".norm1." in k for k in legacy)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(legacy, path)
    return state


def test_densenet121_with_torchvision_legacy_keys_loads_through_the_builder(tmp_path):
    # torch.hub's cache, where torchvision's builder looks before it downloads (TORCH_HOME/hub/checkpoints)
    cache = tmp_path / "cache" / "torch"
    reference = legacy_densenet_file(cache / TORCH_HUB / "densenet121-a639ec97.pth")
    out = tmp_path / "densenet121" / "imagenet.pt"
    W.fetch_imagenet("densenet121", out, cache)
    state = torch.load(out, weights_only=True)
    assert not any(k.startswith("classifier.") for k in state)
    key = "features.denseblock1.denselayer1.norm1.weight"
    torch.testing.assert_close(state[key], reference[key])
    build_network("densenet121", 3).load_backbone(state)


# -- RAD-DINO: the hub repository as it is, three .safetensors files ------------------------------------------
TINY = dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=256, image_size=32,
            patch_size=4, layerscale_value=1.0)
#: microsoft/rad-dino's preprocessor_config.json (its model card repository), a BitImageProcessor
RAD_DINO_PREPROCESSOR = {
    "crop_size": {"height": 518, "width": 518}, "do_center_crop": True, "do_convert_rgb": True,
    "do_normalize": True, "do_rescale": True, "do_resize": True, "image_mean": [0.5307, 0.5307, 0.5307],
    "image_processor_type": "BitImageProcessor", "image_std": [0.2583, 0.2583, 0.2583], "resample": 3,
    "rescale_factor": 0.00392156862745098, "size": {"shortest_edge": 518}}


def write_rad_dino_preprocessor(folder):
    """preprocessor_config.json written by its owner's writer (transformers' BitImageProcessor), with the values of
    the published file."""
    import transformers

    settings = {k: v for k, v in RAD_DINO_PREPROCESSOR.items() if k != "image_processor_type"}
    transformers.BitImageProcessor(**settings).save_pretrained(folder)


def rad_dino_repository(folder):
    """Every file microsoft/rad-dino lists: model.safetensors + config.json (written by transformers'
    ``save_pretrained``), backbone_compatible.safetensors (the same encoder in the DINOv2 code's names),
    dino_head.safetensors (the DINO projection head), preprocessor_config.json, README.md, LICENSE,
    .gitattributes. Returns the transformers model."""
    import transformers
    from safetensors.torch import save_file

    from medtl.models.vit import dinov2_to_timm

    torch.manual_seed(0)
    model = transformers.Dinov2Model(transformers.Dinov2Config(**TINY)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(folder)
    dinov2_names = {**dinov2_to_timm(model.state_dict()), "mask_token": model.embeddings.mask_token.detach()}
    save_file({k: v.contiguous() for k, v in dinov2_names.items()}, str(folder / "backbone_compatible.safetensors"))
    save_file({"mlp.0.weight": torch.randn(32, 64), "mlp.0.bias": torch.randn(32),
               "last_layer.weight_g": torch.randn(128, 1), "last_layer.weight_v": torch.randn(128, 32)},
              str(folder / "dino_head.safetensors"))
    write_rad_dino_preprocessor(folder)
    (folder / "README.md").write_text("---\nlicense: other\nlibrary_name: transformers\n---\n# Model card\n")
    (folder / "LICENSE").write_text("MIT License\n")
    (folder / ".gitattributes").write_text("*.safetensors filter=lfs diff=lfs merge=lfs -text\n")
    return model


def _same_features(out, model):
    net = build_network("vit_tiny", 5).eval()
    net.load_backbone(W.read_weights(out)[0])
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(net.features(x), model(pixel_values=x).last_hidden_state[:, 1:].mean(1),
                                   atol=1e-5, rtol=0)


def test_rad_dino_hub_snapshot_with_all_its_files_loads_offline(tmp_path, hub_offline):  # noqa: F811
    clone = tmp_path / "rad-dino"
    model = rad_dino_repository(clone)
    cache = tmp_path / "cache"
    hub_snapshot(cache / "huggingface", "microsoft/rad-dino",
                 {p.name: p for p in clone.iterdir() if p.is_file()})
    out = tmp_path / "weights" / "hub.pt"
    W.fetch_hub("vit_tiny", {"type": "hub", "repo": "microsoft/rad-dino"}, out, cache / "torch")
    _same_features(out, model)
    # a local clone of the repository: the same files, read in place
    W.fetch_hub("vit_tiny", {"type": "hub", "path": str(clone)}, tmp_path / "clone.pt", cache / "torch")
    _same_features(tmp_path / "clone.pt", model)


def test_a_hub_encoder_trains_on_the_input_statistics_of_its_own_image_processor(tmp_path, hub_offline,  # noqa: F811
                                                                                 tiny_store):
    """RAD-DINO's preprocessor_config.json (mean 0.5307, SD 0.2583), read by transformers' AutoImageProcessor when
    the weights are fetched, reaches the job's normalisation; ImageNet's stays the default of other weights, and an
    explicit training.normalize wins."""
    from medtl.training.job import build
    from medtl.workflow.plan import Plan

    clone = tmp_path / "rad-dino"
    rad_dino_repository(clone)
    cache = tmp_path / "cache"
    hub_snapshot(cache / "huggingface", "microsoft/rad-dino", {p.name: p for p in clone.iterdir() if p.is_file()})
    out = tmp_path / "hub.pt"
    W.fetch_hub("vit_tiny", {"type": "hub", "repo": "microsoft/rad-dino"}, out, cache / "torch")
    assert W.read_weights(out)[1] == {"mean": [0.5307] * 3, "std": [0.2583] * 3}

    config = {"datasets": {"synth_derm": {}}, "learning_rates": [0.001], "seeds": [0],
              "architectures": {"vit_tiny": {"weights": {"type": "hub", "repo": "microsoft/rad-dino"}},
                                "resnet_tiny": {"weights": {"type": "none"}}},
              "strategies": {"ft": {}, "scratch": {}}, "training": {"epochs": 1}}
    plan = Plan(config)
    hp = plan.train_hp("synth_derm", "vit_tiny", "ft", 0.001, 0)
    assert hp["training"]["normalize"] == "weights"
    assert plan.train_hp("synth_derm", "resnet_tiny", "ft", 0.001, 0)["training"]["normalize"]["mean"][0] == 0.485
    assert plan.train_hp("synth_derm", "vit_tiny", "scratch", 0.001, 0)["training"]["normalize"]["mean"][0] == 0.485
    *_, norm = build(hp, tiny_store, str(out), torch.device("cpu"))
    torch.testing.assert_close(norm.mean.flatten() / 255, torch.full((3,), 0.5307))
    torch.testing.assert_close(norm.std.flatten() / 255, torch.full((3,), 0.2583))
    explicit = Plan({**config, "training": {"epochs": 1, "normalize": {"mean": [0.5] * 3, "std": [0.5] * 3}}})
    assert explicit.train_hp("synth_derm", "vit_tiny", "ft", 0.001, 0)["training"]["normalize"]["mean"] == [0.5] * 3
    with pytest.raises(ValueError, match="carries no input statistics"):  # weights without them: named, no guess
        W.input_normalization("weights", W.save_backbone(W.read_weights(out)[0], tmp_path / "bare.pt")
                              or tmp_path / "bare.pt")


def test_hub_encoder_of_another_shape_or_incomplete_is_refused(tmp_path, hub_offline):  # noqa: F811
    clone = tmp_path / "rad-dino"
    rad_dino_repository(clone)
    config = json.loads((clone / "config.json").read_text())
    (clone / "config.json").write_text(json.dumps({**config, "hidden_size": 768}))  # a ViT-B checkpoint
    with pytest.raises((ValueError, RuntimeError), match="does not fit architecture .vit_tiny.: hidden_size is 768"):
        W.fetch_hub("vit_tiny", {"type": "hub", "path": str(clone)}, tmp_path / "a.pt", tmp_path / "cache" / "torch")
    (clone / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="lacks model.safetensors.*git lfs pull"):
        W.fetch_hub("vit_tiny", {"type": "hub", "path": str(clone)}, tmp_path / "b.pt", tmp_path / "cache" / "torch")
    assert not list(tmp_path.glob("*.pt"))


# -- timm: models with two classifiers ----------------------------------------------------------------------------
TWO_HEADS = ["deit_tiny_distilled_patch16_224", "levit_128s", "efficientformerv2_s0"]


def timm_hub_snapshot(cache, model_name):
    """The model's pretrained weights on the hub (``timm/<model>.<tag>``, model.safetensors + config.json), as
    timm's own ``save_for_hf`` writes them, from a 1000-class model built by timm."""
    import timm
    from timm.models import get_pretrained_cfg

    from medtl.models.weights import _hf_cache  # noqa: F401

    cfg = timm.create_model(model_name, pretrained=False).pretrained_cfg
    torch.manual_seed(0)
    model = timm.create_model(model_name, pretrained=False, num_classes=1000)
    folder = cache.parent / "written" / model_name
    from timm.models import save_for_hf

    save_for_hf(model, str(folder), safe_serialization=True)
    assert get_pretrained_cfg(model_name) is not None and cfg["hf_hub_id"]
    hub_snapshot(cache, cfg["hf_hub_id"], {p.name: p for p in folder.iterdir()})
    return model


@pytest.mark.parametrize("model_name", TWO_HEADS)
def test_timm_models_with_two_classifiers_load_through_create_model(model_name, tmp_path, hub_offline):  # noqa: F811
    cache = tmp_path / "cache"
    published = timm_hub_snapshot(cache / "huggingface", model_name)
    out = tmp_path / "w.pt"
    W.fetch_imagenet(f"timm.{model_name}", out, cache / "torch")
    state = torch.load(out, weights_only=True)
    net = build_network(f"timm.{model_name}", 3)
    assert len(net.head_names) == 2
    assert not any(net.is_head(k) for k in state), "a 1000-class classifier was kept"
    net.load_backbone(state)
    first = next(k for k in state if k.endswith("weight"))
    torch.testing.assert_close(net.net.state_dict()[first], published.state_dict()[first])


# -- label files -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("engine", ["c", "python"])
def test_label_files_saved_with_a_byte_order_mark_keep_their_column_names(tmp_path, engine):
    """HAM10000_metadata.csv re-saved by Excel starts with a UTF-8 byte-order mark; the python engine (sniffed
    separators) would keep it in the first column's name ("\\ufefflesion_id")."""
    from medtl.data.sources.common import read_csv_checked

    path = tmp_path / "HAM10000_metadata.csv"
    path.write_text("lesion_id,image_id,dx\nHAM_0000118,ISIC_0027419,bkl\n", encoding="utf-8-sig")
    kwargs = {"sep": None, "engine": "python"} if engine == "python" else {}
    table = read_csv_checked(path, ["lesion_id", "image_id", "dx"], dtype=str, **kwargs)
    assert table["lesion_id"].tolist() == ["HAM_0000118"]


# -- both studies' configs, through the workflow's fetch_weights rule ---------------------------------------------
def torchvision_release(model_name: str, path, legacy: bool = False):
    """torchvision's published ImageNet file for ``model_name`` (random values), where torch.hub caches it."""
    from torchvision import models

    if legacy:
        return legacy_densenet_file(path)
    torch.manual_seed(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(models.get_model(model_name).state_dict(), path)


@pytest.mark.slow
def test_both_studies_fetch_their_weights_through_the_workflow(tmp_path, monkeypatch):
    """configs/paper.yaml (ResNet-50, DenseNet-121, VGG-19 from torchvision) and configs/spft.yaml (RAD-DINO
    from the hub) plan whole, and their fetch_weights jobs finish, with each published file (real size, random
    values) where its owner's loader finds it offline: torch.hub's cache and the Hugging Face cache."""
    import transformers

    from workflow_helpers import REPO, scheduled_jobs, snakemake

    paper, spft = REPO / "configs" / "paper.yaml", REPO / "configs" / "spft.yaml"
    assert any(rule == "train" for rule, _ in scheduled_jobs(tmp_path, paper))
    assert any(rule == "train" for rule, _ in scheduled_jobs(tmp_path, spft))

    hub = tmp_path / "results" / "paper" / "cache" / "torch" / TORCH_HUB
    torchvision_release("resnet50", hub / "resnet50-11ad3fa6.pth")
    torchvision_release("densenet121", hub / "densenet121-a639ec97.pth", legacy=True)
    torchvision_release("vgg19", hub / "vgg19-dcbb9e9d.pth")

    # microsoft/rad-dino at its real size: model.safetensors + config.json by transformers' save_pretrained;
    # the DINOv2-code copy and the DINO head beside it, in their names (a few tensors: they must be ignored)
    repo = tmp_path / "written" / "rad-dino"
    from medtl.models.spec import RAD_DINO_SHAPE

    config = transformers.Dinov2Config(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                                       intermediate_size=3072, image_size=518, patch_size=14, layerscale_value=1e-5)
    assert RAD_DINO_SHAPE["embed_dim"] == config.hidden_size and RAD_DINO_SHAPE["depth"] == 12
    transformers.Dinov2Model(config).save_pretrained(repo)
    from safetensors.torch import save_file

    save_file({"cls_token": torch.zeros(1, 1, 768), "blocks.0.attn.qkv.weight": torch.zeros(2304, 768),
               "blocks.0.ls1.gamma": torch.zeros(768)}, str(repo / "backbone_compatible.safetensors"))
    save_file({"mlp.0.weight": torch.zeros(8, 768)}, str(repo / "dino_head.safetensors"))
    write_rad_dino_preprocessor(repo)
    hub_snapshot(tmp_path / "results" / "spft" / "cache" / "huggingface", "microsoft/rad-dino",
                 {p.name: p for p in repo.iterdir()})
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    snakemake(tmp_path, paper, *(f"results/paper/weights/{a}/imagenet.pt" for a in ("resnet50", "densenet121",
                                                                                   "vgg19")))
    snakemake(tmp_path, spft, "results/spft/weights/rad_dino/hub.pt")
    for arch in ("resnet50", "densenet121", "vgg19"):
        build_network(arch, 2).load_backbone(torch.load(tmp_path / f"results/paper/weights/{arch}/imagenet.pt",
                                                        weights_only=True))
    backbone, stats = W.read_weights(tmp_path / "results/spft/weights/rad_dino/hub.pt")
    build_network("rad_dino", 2).load_backbone(backbone)
    assert stats == {"mean": [0.5307] * 3, "std": [0.2583] * 3}  # its own image processor's, for its jobs
