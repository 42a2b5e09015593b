"""Batches straight from the prepared uint8 store; conversion and normalisation happen on the device.

Per batch the host does one gather of the batch's rows from the memory-mapped store, written
straight into a (pinned, on CUDA) tensor; nothing is decoded or resized. The same class serves
rows of cached backbone features (float, (N, D)): see :mod:`medtl.training.features`.
"""
from __future__ import annotations

import threading
from queue import Queue
from typing import Iterator

import numpy as np
import torch

from medtl.training.spec import IMAGENET_MEAN, IMAGENET_STD  # noqa: F401  (here for the jobs)


class Normalizer:
    """uint8 (B, H, W, C) -> float (B, 3, H, W), normalised; grayscale is repeated to 3 channels.

    The uint8 batch travels to the device (a quarter of the float bytes) and is converted there.
    """

    def __init__(self, mean, std, device: torch.device, channels_last: bool = False):
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1) * 255
        self.device = device
        self.channels_last = channels_last

    def __call__(self, u8: torch.Tensor) -> torch.Tensor:
        x = u8.to(self.device, non_blocking=True)
        if self.channels_last:
            # (B, H, W, C) contiguous viewed as (B, C, H, W) *is* channels_last: no reordering copy
            x = x.float().permute(0, 3, 1, 2)
        else:
            x = x.permute(0, 3, 1, 2).to(torch.float32, memory_format=torch.contiguous_format)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
            x = (x - self.mean) / self.std  # out of place: materialises the three channels
            return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x
        return x.sub_(self.mean).div_(self.std)  # in place: no second float copy of the batch


class ToDevice:
    """The 'normaliser' of data that is already float (cached features): only the copy to the device."""

    def __init__(self, device: torch.device):
        self.device = device

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.device, non_blocking=True).float()


class SplitData:
    """Rows and targets of one split; reads rows of the memory-mapped store per batch.

    ``images`` is any (N, ...) array: the uint8 image store, or a float array of cached features.
    With ``prefetch``, ``iterate`` reads the next batch in a background thread while the current
    one is used (the gather from the memory map releases the GIL); the batches are the same.
    """

    def __init__(self, images: np.ndarray, indices: np.ndarray, targets: np.ndarray, pin: bool = False,
                 prefetch: bool | None = None):
        self.images = images
        self.indices = np.asarray(indices)
        self.targets = torch.as_tensor(targets, dtype=torch.float32)
        self.pin = pin
        self.prefetch = pin if prefetch is None else prefetch

    def __len__(self) -> int:
        return len(self.indices)

    def n_batches(self, batch_size: int, training: bool = False) -> int:
        return len(self.chunks(batch_size, np.arange(len(self)), training))

    @staticmethod
    def chunks(batch_size: int, order: np.ndarray, training: bool = False) -> list[np.ndarray]:
        """``order`` cut into batches of ``batch_size``. In training, a last batch of a single image joins the
        one before it: BatchNorm cannot normalise a batch of one (and would crash the job)."""
        starts = list(range(0, len(order), batch_size))
        if training and len(starts) > 1 and len(order) - starts[-1] == 1:
            starts.pop()
        return [order[a:b] for a, b in zip(starts, starts[1:] + [len(order)])]

    def batch(self, positions: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        positions = np.sort(positions)  # ascending rows read the memmap sequentially
        rows = self.indices[positions]
        dtype = torch.from_numpy(np.empty(0, dtype=self.images.dtype)).dtype
        x = torch.empty((len(rows), *self.images.shape[1:]), dtype=dtype, pin_memory=self.pin)
        # one copy, from the memory map straight into the (pinned) batch; mode="clip" is unbuffered
        np.take(self.images, rows, axis=0, out=x.numpy(), mode="clip")
        y = self.targets[positions]
        return x, (y.pin_memory() if self.pin else y)

    def iterate(self, batch_size: int, order: np.ndarray | None = None,
                training: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = np.arange(len(self)) if order is None else order
        chunks = iter(self.chunks(batch_size, order, training))
        if not self.prefetch:
            for chunk in chunks:
                yield self.batch(chunk)
            return
        yield from _prefetched(self.batch, chunks)

    def shuffled(self, seed: int, epoch: int) -> np.ndarray:
        # Depends on (seed, epoch) only, so a resumed run sees the same batches.
        g = torch.Generator().manual_seed(seed * 100_003 + epoch)
        return torch.randperm(len(self), generator=g).numpy()


_DONE = object()


def _prefetched(load, chunks, depth: int = 2):
    """``load(chunk)`` for each chunk, computed up to ``depth`` batches ahead in one background thread."""
    queue: Queue = Queue(maxsize=depth)
    stop = threading.Event()

    def work():
        try:
            for chunk in chunks:
                if stop.is_set():
                    return
                queue.put(load(chunk))
            queue.put(_DONE)
        except BaseException as err:  # handed to the consumer, raised there
            queue.put(err)

    thread = threading.Thread(target=work, daemon=True, name="batch-prefetch")
    thread.start()
    try:
        while True:
            item = queue.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue, then let it end
            while not queue.empty():
                queue.get_nowait()
            thread.join(timeout=0.05)
