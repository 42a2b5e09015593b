"""Starting weights: ImageNet fetch (without the network), user checkpoints and the pipeline's pretraining."""
from __future__ import annotations

import urllib.error

import pytest
import torch

from medtl.models import build_network
from medtl.models import weights as W
from medtl.pretrain import pretrain


def test_imagenet_weights_are_cached_without_their_head(tmp_path, monkeypatch):
    reference = build_network("resnet50", 1000).net.state_dict()
    calls = []

    def fake_download(url, progress=True, check_hash=False, **kwargs):
        calls.append((url, check_hash))
        return reference

    # the one function that would reach the network
    monkeypatch.setattr("torchvision.models._api.load_state_dict_from_url", fake_download)
    out = tmp_path / "resnet50" / "imagenet.pt"
    W.fetch_imagenet("resnet50", out, tmp_path / "cache")
    assert calls and calls[0][0].startswith("https://download.pytorch.org/") and calls[0][1] is True
    state = torch.load(out, weights_only=True)
    assert not any(k.startswith("fc.") for k in state)
    net = build_network("resnet50", 5)
    net.load_backbone(state)
    assert torch.equal(net.net.conv1.weight, reference["conv1.weight"])
    assert not list(tmp_path.glob("resnet50/.*.tmp")), "temporary file left behind"


def test_failed_imagenet_download_says_what_to_do(tmp_path, monkeypatch):
    def offline(url, **kwargs):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr("torchvision.models._api.load_state_dict_from_url", offline)
    out = tmp_path / "imagenet.pt"
    with pytest.raises(RuntimeError, match="densenet121.*internet.*checkpoint"):
        W.fetch_imagenet("densenet121", out, tmp_path / "cache")
    assert not out.exists()


def test_demo_architectures_have_no_imagenet_weights(tmp_path):
    with pytest.raises(ValueError, match="resnet_tiny.*pretrain"):
        W.fetch_imagenet("resnet_tiny", tmp_path / "w.pt", tmp_path)


def test_checkpoint_import_accepts_wrapped_state_dicts(tmp_path):
    net = build_network("vgg_tiny", 4)
    path = tmp_path / "model.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.net.state_dict().items()}}, path)
    W.import_checkpoint("vgg_tiny", path, tmp_path / "out.pt")
    state = torch.load(tmp_path / "out.pt", weights_only=True)
    assert torch.equal(state["features.0.weight"], net.net.features[0].weight)


def test_checkpoint_for_another_architecture_is_refused(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save(build_network("resnet_tiny", 2).net.state_dict(), path)
    with pytest.raises(ValueError, match="densenet_tiny.*another architecture"):
        W.import_checkpoint("densenet_tiny", path, tmp_path / "out.pt")
    assert not (tmp_path / "out.pt").exists()


def test_missing_or_corrupt_checkpoint_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        W.import_checkpoint("vgg_tiny", tmp_path / "nowhere.pth", tmp_path / "out.pt")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.pth"):
        W.import_checkpoint("vgg_tiny", bad, tmp_path / "out.pt")


def test_pretraining_moves_the_backbone_and_loads_for_fine_tuning(tmp_path, tiny_store):
    out = tmp_path / "pretrained.pt"
    pretrain("vgg_tiny", {"epochs": 2, "lr": 0.01, "batch_size": 8}, {"device": "cpu", "patience": 5},
             str(tiny_store.root), str(out), str(tmp_path / "ckpt"), threads=1)
    state = torch.load(out, weights_only=True)
    torch.manual_seed(0)
    init = build_network("vgg_tiny", 3).net.state_dict()
    assert not any(k.startswith("classifier.6") for k in state)
    assert not torch.equal(state["features.0.weight"], init["features.0.weight"])
    target = build_network("vgg_tiny", 7)
    target.load_backbone(state)
    assert torch.equal(target.net.features[0].weight, state["features.0.weight"])
    assert not (tmp_path / "ckpt").exists(), "the resume checkpoint of a finished pretraining is removed"
