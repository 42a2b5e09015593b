"""Starting weights for fine-tuning: ImageNet (torchvision, fetched once into a cache
by a local rule), the pipeline's own pretraining, a user checkpoint, or none."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

from medtl.io import atomic_path
from medtl.models.network import ARCHS, build_network


def save_backbone(state: dict, out: str | os.PathLike) -> None:
    with atomic_path(out) as tmp:
        torch.save(state, tmp)


def fetch_imagenet(arch: str, out: str | os.PathLike, cache_dir: str | os.PathLike) -> None:
    """Download torchvision's ImageNet weights (checked against their published hash) into ``cache_dir``."""
    from torchvision.models import get_weight

    spec = ARCHS.get(arch)
    if not spec.imagenet_weights:
        raise ValueError(f"architecture '{arch}' has no ImageNet weights; use weights type 'pretrain' or 'none'")
    os.environ["TORCH_HOME"] = str(Path(cache_dir).resolve())
    print(f"[weights] fetching {spec.imagenet_weights} into {cache_dir}", file=sys.stderr, flush=True)
    try:
        state = get_weight(spec.imagenet_weights).get_state_dict(progress=True, check_hash=True)
    except Exception as err:  # URLError, hash mismatch, ...
        raise RuntimeError(f"could not fetch ImageNet weights for {arch} ({spec.imagenet_weights}): {err}. "
                           f"This needs internet on the machine running the local rule; or download them "
                           f"elsewhere and use weights type 'checkpoint'.") from None
    net = build_network(arch, 1000)
    net.net.load_state_dict(state)
    save_backbone(net.backbone_state(), out)


def import_checkpoint(arch: str, path: str | os.PathLike, out: str | os.PathLike) -> None:
    """A user's checkpoint (a state dict, or {'state_dict': ...}), checked against the architecture."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist; fix 'weights.path' for architecture '{arch}'")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"checkpoint {path} cannot be read as a PyTorch state dict: {err}") from None
    state = state.get("state_dict", state)
    state = {k.removeprefix("module.").removeprefix("net."): v for k, v in state.items()}
    net = build_network(arch, 2)
    net.load_backbone(state)  # names the mismatch if it is for another architecture
    save_backbone(net.backbone_state(), out)
