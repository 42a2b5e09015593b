"""What the workflow knows about training jobs without importing PyTorch: the default normalisation and
what a file of cached backbone features depends on (the ``extract_features`` rule's params)."""
from __future__ import annotations

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

FEATURES_VERSION = 1


def describe(arch: str, weights: dict | None, normalize: dict | str | None) -> dict:
    """What cached backbone features depend on, besides the store: checked when a job loads them.
    ``normalize: weights``: the statistics the weights file carries (a hub encoder's)."""
    if normalize == "weights":
        return {"version": FEATURES_VERSION, "arch": arch, "weights": weights, "mean": "weights", "std": "weights"}
    normalize = normalize or {}
    return {"version": FEATURES_VERSION, "arch": arch, "weights": weights,
            "mean": [float(v) for v in normalize.get("mean", IMAGENET_MEAN)],
            "std": [float(v) for v in normalize.get("std", IMAGENET_STD)]}
