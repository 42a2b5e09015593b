"""Auto-RGN (Lee et al., 2023, "Surgical fine-tuning"): each parameter tensor gets
its own rate, base_lr * RGN / max RGN, with RGN = ||grad|| / ||weight||,
recomputed at the start of every epoch on ``probe_batches`` training batches."""
import torch

from medtl.strategies.base import STRATEGIES, Strategy


@STRATEGIES.register("auto_rgn")
class AutoRGN(Strategy):
    defaults = {"probe_batches": 1}

    def param_groups(self):
        return [{"params": [p], "lr": self.ctx.lr, "name": n} for n, p in self.net.net.named_parameters()]

    @staticmethod
    def relative_grad_norms(named_params) -> dict[str, float]:
        out = {}
        for name, p in named_params:
            g = p.grad
            out[name] = 0.0 if g is None else float(g.norm() / p.detach().norm().clamp_min(1e-12))
        return out

    def rates(self, rgn: dict[str, float]) -> dict[str, float]:
        top = max(rgn.values()) or 1.0
        return {n: self.ctx.lr * v / top for n, v in rgn.items()}

    def on_epoch_start(self, epoch, optimizer, probe):
        super().on_epoch_start(epoch, optimizer, probe)
        for p in self.net.parameters():
            p.grad = None
        for _ in range(int(self.settings["probe_batches"])):
            probe()  # accumulates gradients of the training loss
        self.last_rgn = self.relative_grad_norms(self.net.net.named_parameters())
        self.last_rates = self.rates(self.last_rgn)
        for group in optimizer.param_groups:
            group["lr"] = self.last_rates[group["name"]]
        for p in self.net.parameters():
            p.grad = None
