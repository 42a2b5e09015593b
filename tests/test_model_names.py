"""Any timm or torchvision classification model by name (timm.<name>, torchvision.<name>): checked by name
while planning, built by the jobs with its parameter blocks from the model's own grouping, and trained by
every strategy unchanged. Built without weights; the full-size ones on the meta device."""
from __future__ import annotations

import pytest
import torch

from medtl.models import build_network
from medtl.models.spec import ARCHS
from medtl.registry import UnknownNameError
from medtl.strategies import STRATEGIES

# name -> (blocks, head, the first block's prefixes): two CNN families from each library
MODELS = {
    "timm.resnet18": (6, "fc", ["conv1", "bn1"]),
    "timm.convnext_tiny": (6, "head.fc", ["stem"]),
    "torchvision.resnet18": (6, "fc", ["conv1", "bn1"]),
    "torchvision.efficientnet_b0": (6, "classifier.1", ["features.0", "features.1"]),
}


@pytest.fixture(scope="module")
def meta_nets():
    with torch.device("meta"):
        return {name: build_network(name, 4) for name in MODELS}


@pytest.mark.parametrize("name", MODELS)
def test_blocks_come_from_the_models_own_grouping(name, meta_nets):
    net = meta_nets[name]
    n_blocks, head, stem = MODELS[name]
    assert net.n_blocks == n_blocks and net.head_name == head and net.block_prefixes[0] == stem
    assert net.head_module().out_features == 4
    # every parameter in one block (Network checks it), the head in the last
    assert {b for n, b, is_head, _ in net.named_block_parameters() if is_head} == {n_blocks - 1}
    # blocks are whole modules where possible, so a frozen block's BatchNorm can be kept in eval mode
    assert all(net.block_modules(b) for b in range(n_blocks))


def test_timm_stages_are_its_layer_groups(meta_nets):
    assert meta_nets["timm.resnet18"].block_prefixes[1:] == [["layer1"], ["layer2"], ["layer3"], ["layer4"], ["fc"]]
    assert meta_nets["timm.convnext_tiny"].block_prefixes[1:] == [["stages.0"], ["stages.1"], ["stages.2"],
                                                                   ["stages.3"], ["head"]]
    # torchvision has no grouping: its stride stages give the same split of a ResNet
    assert meta_nets["torchvision.resnet18"].block_prefixes == meta_nets["timm.resnet18"].block_prefixes


def test_names_are_checked_while_planning_without_the_libraries():
    spec = ARCHS.get("timm.convnext_tiny")
    assert spec.family == "convnext" and spec.imagenet_weights == "timm:convnext_tiny"
    assert spec.default_preprocess == {"resize": 256, "crop": 224}
    assert ARCHS.get("torchvision.resnet18").imagenet_weights == "torchvision:resnet18"
    assert ARCHS.get("timm.vit_base_patch16_384.augreg_in21k_ft_in1k").default_preprocess["crop"] == 384
    with pytest.raises(UnknownNameError, match="timm has no model 'convnext_tinyy'; did you mean convnext_tiny"):
        ARCHS.get("timm.convnext_tinyy")
    with pytest.raises(UnknownNameError, match="torchvision has no model 'resnet19'"):
        ARCHS.get("torchvision.resnet19")
    assert "timm.<name>" in ARCHS.names() and "torchvision.<name>" in ARCHS.names()


def test_a_transformer_without_stride_stages_is_refused_with_the_way_out():
    # while planning, by its family (tests/test_model_families.py holds the list to the library) ...
    with pytest.raises(UnknownNameError, match="family 'vision_transformer'.*use timm.<name>"):
        ARCHS.get("torchvision.vit_b_16")
    # ... and by the block finder, for a model the list would miss
    from torchvision.models import vit_b_16

    from medtl.models.generic import stage_blocks
    with torch.device("meta"), pytest.raises(ValueError, match="use timm.<name>"):
        stage_blocks(vit_b_16(num_classes=3))


@pytest.mark.parametrize("name", ["timm.resnet18", "timm.convnext_tiny"])
@pytest.mark.parametrize("strategy,settings", [
    ("ft", {}), ("lp", {}), ("g_lf", {}), ("g_fl", {}), ("lp_ft", {"lp_epochs": 1}), ("l2_sp", {}), ("l1_sp", {}),
    ("auto_rgn", {"probe_batches": 1}), ("spft", {"head_epochs": 1, "top_k": 2}),
])
def test_every_strategy_trains_its_blocks(name, strategy, settings, make_context, make_trainer, tiny_store):
    """One epoch of each strategy at 32 px: the parameters that change are those of the blocks it trains."""
    torch.manual_seed(0)
    net = build_network(name, 3)
    s = STRATEGIES.get(strategy)(make_context(net, tiny_store, epochs=2, lr=1e-2), **settings)
    trainer = make_trainer(s, tiny_store, epochs=2, batch_size=10)
    optimizer = s.build_optimizer()
    trainer.run_epoch(0, optimizer, s.build_scheduler(optimizer))
    before = {n: p.detach().clone() for n, p in net.net.named_parameters()}
    trainer.run_epoch(1, optimizer, s.build_scheduler(optimizer))
    changed = {net.block_of(n) for n, p in net.net.named_parameters() if not torch.equal(before[n], p)}
    blocks = s.trainable_blocks(1)
    expected = set(range(net.n_blocks)) if blocks is None else blocks | {net.n_blocks - 1}
    if strategy == "spft":  # epoch 1 is the first of stage 2: the head and the top block
        assert expected == {net.n_blocks - 2, net.n_blocks - 1}
    if strategy == "g_fl":
        assert expected == {0, net.n_blocks - 1}
    assert changed <= expected and net.n_blocks - 1 in changed
    if strategy not in ("lp", "auto_rgn"):  # Auto-RGN's smallest rates may round a block's update away
        assert changed == expected


def test_the_weights_rule_names_a_model_timm_lacks_before_any_download(tmp_path):
    from medtl.models.weights import fetch_timm

    with pytest.raises(ValueError, match="timm has no model 'resnet19'"):
        fetch_timm("timm.resnet19", "resnet19", tmp_path / "w.pt", tmp_path / "cache")
    assert not (tmp_path / "w.pt").exists() and not (tmp_path / "cache").exists()
