"""Box prompts from ground-truth masks, as a user (or a detector) would give them.

A box is the tight bounding box of a mask in pixel-edge coordinates (x2 = last column + 1).
During training each side moves by up to ``jitter`` x the box's width or height, at random,
so the model learns to segment from imperfect boxes instead of reading the answer off the
box edges; evaluation uses the tight box.
"""
from __future__ import annotations

import numpy as np


def mask_boxes(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(K, 4) float boxes and (K,) presence of (K, H, W) binary masks; an empty mask gets no box."""
    masks = np.asarray(masks) > 0
    boxes = np.zeros((len(masks), 4), np.float32)
    present = masks.reshape(len(masks), -1).any(axis=1)
    for k in np.flatnonzero(present):
        rows, cols = np.flatnonzero(masks[k].any(axis=1)), np.flatnonzero(masks[k].any(axis=0))
        boxes[k] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
    return boxes, present


def jitter_boxes(boxes: np.ndarray, size: int, jitter: float, rng: np.random.Generator) -> np.ndarray:
    """Move each side by U(-jitter, jitter) x the box's extent; clipped to the image, never inverted."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    if jitter <= 0 or len(boxes) == 0:
        return boxes.copy()
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    shift = rng.uniform(-jitter, jitter, size=boxes.shape).astype(np.float32) * np.stack([w, h, w, h], axis=1)
    out = np.clip(boxes + shift, 0, size)
    out[:, 2] = np.maximum(out[:, 2], out[:, 0] + 1)
    out[:, 3] = np.maximum(out[:, 3], out[:, 1] + 1)
    return np.clip(out, 0, size)
