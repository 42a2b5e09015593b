"""Architectures and their parameter blocks, the unit every strategy freezes and unfreezes."""
from __future__ import annotations

import pytest
import torch

from medtl.models import build_network
from medtl.models.network import ARCHS
from medtl.registry import UnknownNameError

BLOCKS = {"resnet50": 6, "densenet121": 9, "vgg19": 6, "resnet_tiny": 6, "densenet_tiny": 9, "vgg_tiny": 6}
HEADS = {"resnet50": "fc", "densenet121": "classifier", "vgg19": "classifier.6",
         "resnet_tiny": "fc", "densenet_tiny": "classifier", "vgg_tiny": "classifier.6"}
FULL = ["resnet50", "densenet121", "vgg19"]
TINY = ["resnet_tiny", "densenet_tiny", "vgg_tiny"]


@pytest.fixture(scope="module")
def meta_nets():
    """The full-size networks on the meta device: shapes without memory (VGG-19 alone is 140M parameters)."""
    with torch.device("meta"):
        return {arch: build_network(arch, 5) for arch in FULL}


def _check_blocks(net, arch, n_classes):
    assert net.n_blocks == BLOCKS[arch]
    names = [n for n, _ in net.net.named_parameters()]
    # every parameter in exactly one block: the prefixes of two blocks never both match a name
    for n in names:
        owners = [i for i, prefixes in enumerate(net.block_prefixes)
                  if any(n == p or n.startswith(p + ".") for p in prefixes)]
        assert len(owners) == 1, f"{arch}: {n} is in blocks {owners}"
        assert net.block_of(n) == owners[0]
    assert sorted({net.block_of(n) for n in names}) == list(range(net.n_blocks)), "a block without parameters"
    # the head is the replaced classifier, and it sits in the last block
    head = [n for n in names if net.is_head(n)]
    assert head == [f"{HEADS[arch]}.weight", f"{HEADS[arch]}.bias"]
    assert all(net.block_of(n) == net.n_blocks - 1 for n in head)
    assert net.head_module().out_features == n_classes
    # blocks run from input to output: the stem is block 0
    assert net.block_of(names[0]) == 0
    # named_block_parameters agrees
    assert [(n, b, h) for n, b, h, _ in net.named_block_parameters()] == \
        [(n, net.block_of(n), net.is_head(n)) for n in names]


@pytest.mark.parametrize("arch", FULL)
def test_full_size_blocks(arch, meta_nets):
    net = meta_nets[arch]
    assert next(net.parameters()).device.type == "meta"
    _check_blocks(net, arch, 5)


@pytest.mark.parametrize("arch", TINY)
def test_tiny_blocks(arch, make_net):
    _check_blocks(make_net(arch, n_classes=3), arch, 3)


def test_blocks_follow_the_study(meta_nets):
    net = meta_nets["resnet50"]
    assert net.block_prefixes == [["conv1", "bn1"], ["layer1"], ["layer2"], ["layer3"], ["layer4"], ["fc"]]
    f = "features."
    assert meta_nets["densenet121"].block_prefixes == [
        [f + "conv0", f + "norm0"], [f + "denseblock1"], [f + "transition1"], [f + "denseblock2"],
        [f + "transition2"], [f + "denseblock3"], [f + "transition3"], [f + "denseblock4", f + "norm5"],
        ["classifier"]]
    vgg = meta_nets["vgg19"]
    convs = [n for n, m in vgg.net.named_modules() if isinstance(m, torch.nn.Conv2d)]
    assert [len(b) for b in vgg.block_prefixes[:5]] == [2, 2, 4, 4, 4]  # VGG-19: 16 convolutions in 5 stages
    assert sum(vgg.block_prefixes[:5], []) == convs


def test_network_refuses_incomplete_block_lists():
    net = ARCHS.get("densenet_tiny").build(2)
    from medtl.models.network import Network

    with pytest.raises(ValueError, match="outside every block"):
        Network(net, [["features.conv0"], ["classifier"]], "classifier", "densenet_tiny")
    with pytest.raises(ValueError, match="two blocks"):
        Network(net, [["features"], ["features.conv0"], ["classifier"]], "classifier", "densenet_tiny")


@pytest.mark.parametrize("arch", TINY)
def test_features_feed_the_head(arch, make_net):
    net = make_net(arch, n_classes=3).eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = net(x)
        feats = net.features(x)
        assert feats.shape == (2, net.head_module().in_features)
        torch.testing.assert_close(net.head_module()(feats), logits)
    assert logits.shape == (2, 3)
    assert not net.head_module()._forward_pre_hooks  # the capturing hook is removed


def test_load_backbone_copies_everything_but_the_head(make_net):
    source, target = make_net("resnet_tiny", n_classes=8, seed=1), make_net("resnet_tiny", n_classes=3, seed=2)
    head_before = {k: v.clone() for k, v in target.head_module().state_dict().items()}
    state = source.backbone_state()
    assert not any(k.startswith("fc.") for k in state)
    assert any(k.endswith("running_mean") for k in state)  # BatchNorm statistics travel with the weights
    target.load_backbone(state)
    for k, v in state.items():
        assert torch.equal(target.net.state_dict()[k], v), k
    for k, v in target.head_module().state_dict().items():
        assert torch.equal(v, head_before[k])


@pytest.mark.parametrize("source,target", [("densenet_tiny", "resnet_tiny"), ("resnet_tiny", "densenet_tiny"),
                                           ("resnet_tiny", "vgg_tiny")])
def test_load_backbone_rejects_another_architecture(source, target, make_net):
    state = make_net(source).backbone_state()
    net = make_net(target)
    with pytest.raises(ValueError, match=rf"{target}: pretrained weights lack \d+ tensors.*another architecture"):
        net.load_backbone(state)


def test_load_backbone_rejects_other_shapes(make_net):
    state = make_net("resnet_tiny").backbone_state()
    state["conv1.weight"] = torch.zeros(8, 3, 7, 7)
    with pytest.raises(ValueError, match=r"resnet_tiny: pretrained tensor shapes differ.*conv1.weight"):
        make_net("resnet_tiny").load_backbone(state)


def test_unknown_architecture_lists_known_ones():
    with pytest.raises(UnknownNameError) as err:
        build_network("resnet51", 2)
    for arch in BLOCKS:
        assert arch in str(err.value)
