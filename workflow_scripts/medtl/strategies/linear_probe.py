"""LP: only the new head trains; the backbone, BatchNorm statistics included, stays as pretrained."""
from medtl.strategies.base import Strategy


class FrozenBackboneStages:
    """For strategies with epochs that train only the head (``backbone_frozen(epoch)``): in those
    epochs everything before the head is in eval mode, not only the fully frozen blocks. This
    matters where the head's block holds other, frozen layers: VGG's classifier block holds the
    pretrained fully connected layers and their dropout, which stays off, so the head's input is a
    fixed function of the image; the ``extract_features`` rule computes it once per (dataset,
    architecture, weights) and those epochs train on it (medtl.training.features)."""

    # which settings give such epochs, and so whether cached features can stand in for the backbone, is the
    # declaration's ``frozen_backbone_when`` (StrategySpec sets ``frozen_backbone`` from it): one source

    def on_epoch_start(self, epoch, optimizer, probe) -> None:
        self._epoch = epoch
        super().on_epoch_start(epoch, optimizer, probe)

    def apply_freezing(self, epoch: int) -> None:
        self._epoch = epoch
        super().apply_freezing(epoch)

    def set_train_mode(self) -> None:
        super().set_train_mode()
        if self.ctx.frozen_bn == "eval" and self.backbone_frozen(getattr(self, "_epoch", 0)):
            self.net.eval()
            self.net.head_module().train()


class LinearProbing(FrozenBackboneStages, Strategy):
    def trainable_blocks(self, epoch: int) -> set[int]:
        return set()

    def backbone_frozen(self, epoch: int) -> bool:
        return True
