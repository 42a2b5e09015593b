"""Batches straight from the prepared uint8 store; conversion and normalisation happen on the device."""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Normalizer:
    """uint8 (B, H, W, C) -> float (B, 3, H, W), normalised; grayscale is repeated to 3 channels."""

    def __init__(self, mean, std, device: torch.device, channels_last: bool = False):
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1) * 255
        self.device = device
        self.channels_last = channels_last

    def __call__(self, u8: torch.Tensor) -> torch.Tensor:
        x = u8.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float()
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = (x - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x.contiguous()


class SplitData:
    """Images and targets of one split; reads rows of the memory-mapped store per batch."""

    def __init__(self, images: np.ndarray, indices: np.ndarray, targets: np.ndarray, pin: bool = False):
        self.images = images
        self.indices = np.asarray(indices)
        self.targets = torch.as_tensor(targets, dtype=torch.float32)
        self.pin = pin

    def __len__(self) -> int:
        return len(self.indices)

    def n_batches(self, batch_size: int) -> int:
        return -(-len(self) // batch_size)

    def batch(self, positions: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        positions = np.sort(positions)  # ascending rows read the memmap sequentially
        x = torch.from_numpy(np.ascontiguousarray(self.images[self.indices[positions]]))
        if self.pin:
            x = x.pin_memory()
        return x, self.targets[positions]

    def iterate(self, batch_size: int, order: np.ndarray | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = np.arange(len(self)) if order is None else order
        for start in range(0, len(order), batch_size):
            yield self.batch(order[start:start + batch_size])

    def shuffled(self, seed: int, epoch: int) -> np.ndarray:
        # Depends on (seed, epoch) only, so a resumed run sees the same batches.
        g = torch.Generator().manual_seed(seed * 100_003 + epoch)
        return torch.randperm(len(self), generator=g).numpy()
