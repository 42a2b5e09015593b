"""Architectures of the first study (ResNet-50, DenseNet-121, VGG-19: torchvision's) and small
same-shaped ones for the CPU demo: their builders and block splits, which follow the study: 6 / 9 / 6.
They are registered, without importing this module, in :mod:`medtl.models.spec`."""
from __future__ import annotations

from torch import nn
from torchvision.models.densenet import DenseNet
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet
from torchvision.models.vgg import VGG, make_layers


def resnet_blocks(net: nn.Module) -> list[list[str]]:
    return [["conv1", "bn1"], ["layer1"], ["layer2"], ["layer3"], ["layer4"], ["fc"]]


def densenet_blocks(net: nn.Module) -> list[list[str]]:
    f = "features."
    return [[f + "conv0", f + "norm0"],
            [f + "denseblock1"], [f + "transition1"],
            [f + "denseblock2"], [f + "transition2"],
            [f + "denseblock3"], [f + "transition3"],
            [f + "denseblock4", f + "norm5"], ["classifier"]]


def vgg_blocks(net: nn.Module) -> list[list[str]]:
    """Five convolution stages (split at each max-pool) and the classifier."""
    stages, current = [], []
    for i, m in enumerate(net.features):
        if isinstance(m, nn.Conv2d):
            current.append(f"features.{i}")
        if isinstance(m, nn.MaxPool2d):
            stages.append(current)
            current = []
    return stages + [["classifier"]]


def vgg_fc_split_blocks(net: nn.Module) -> list[list[str]]:
    """As :func:`vgg_blocks`, with the classifier split in two: fc6 and fc7 (``classifier.0``, ``classifier.3``)
    in a block of their own before the head's block, which holds the new layer (``classifier.6``) alone. So
    G-LF and G-FL train the new layer alone first; fc6/fc7 join as one block (paper 1's classification block
    without its new layer): G-LF's first, G-FL's last (docs/fidelity.md #28)."""
    return vgg_blocks(net)[:-1] + [["classifier.0", "classifier.3"], ["classifier.6"]]


# Demo sizes: the same families and block splits, small enough for a 2-core CPU at 32 px.
class TinyResNet(ResNet):
    """torchvision's ResNet with one BasicBlock per stage and narrow widths."""

    def __init__(self, num_classes: int, widths=(16, 32, 64, 128)):
        super().__init__(BasicBlock, [1, 1, 1, 1], num_classes=num_classes)
        self.inplanes = widths[0]
        self.conv1 = nn.Conv2d(3, widths[0], kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.layer1 = self._make_layer(BasicBlock, widths[0], 1)
        self.layer2 = self._make_layer(BasicBlock, widths[1], 1, stride=2)
        self.layer3 = self._make_layer(BasicBlock, widths[2], 1, stride=2)
        self.layer4 = self._make_layer(BasicBlock, widths[3], 1, stride=2)
        self.fc = nn.Linear(widths[3], num_classes)
        for m in self.modules():  # the parent's initialisation ran on the replaced layers
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


def densenet_tiny(num_classes: int) -> DenseNet:
    return DenseNet(growth_rate=8, block_config=(2, 2, 2, 2), num_init_features=16, bn_size=2,
                    num_classes=num_classes)


class TinyVGG(VGG):
    """VGG with five narrow stages and a small classifier of the same shape as VGG's."""

    def __init__(self, num_classes: int):
        nn.Module.__init__(self)  # VGG.__init__ would first build a 120M-parameter classifier
        self.features = make_layers([16, "M", 32, "M", 32, "M", 64, "M", 64, "M"])
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(64, 64), nn.ReLU(True), nn.Dropout(0.2),
                                        nn.Linear(64, 64), nn.ReLU(True), nn.Dropout(0.2),
                                        nn.Linear(64, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)


# MedMNIST v2's own baselines (Yang et al., Scientific Data 2023; MedMNIST/experiments MedMNIST2D/models.py, adapted
# from kuangliu/pytorch-cifar): ResNet-18 / ResNet-50 for 28 px images with the CIFAR stem.
class CifarResNet(ResNet):
    """torchvision's ResNet with the CIFAR stem of MedMNIST's models: a 3×3 first convolution with stride 1 and
    padding 1, no max-pool. Blocks, widths, shortcuts (1×1 convolution + BatchNorm where the shape changes,
    the stride on the 3×3 convolution of a bottleneck), the average pool and the linear head are theirs;
    the parameter counts equal theirs with three input channels (``tests/test_medmnist_v2.py``). Every layer
    starts from PyTorch's default initialisation, as their plain ``nn.Module`` layers do (torchvision's ResNet
    would use Kaiming-normal convolutions)."""

    def __init__(self, num_classes: int, block: type[nn.Module], layers: list[int]):
        super().__init__(block, layers, num_classes=num_classes)
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.maxpool = nn.Identity()
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.Linear)):
                m.reset_parameters()


def resnet18_cifar(num_classes: int) -> CifarResNet:
    return CifarResNet(num_classes, BasicBlock, [2, 2, 2, 2])


def resnet50_cifar(num_classes: int) -> CifarResNet:
    return CifarResNet(num_classes, Bottleneck, [3, 4, 6, 3])
