"""The studies' metrics, computed with scikit-learn on 0/1 targets and predicted probabilities.

Targets are always an (n, n_classes) 0/1 matrix; probabilities have the same shape
(softmax for binary/multi-class, sigmoid for multi-label).
"""
from __future__ import annotations

import warnings

import numpy as np
from sklearn import metrics as skm

from medtl.metric_names import METRICS
HIGHER_IS_BETTER = {m: True for m in METRICS}


def _labels(y: np.ndarray) -> np.ndarray:
    return y.argmax(axis=1)


def _has_both(col: np.ndarray) -> bool:
    return 0 < col.sum() < len(col)


def per_class_auroc(y: np.ndarray, p: np.ndarray) -> list[float]:
    return [float(skm.roc_auc_score(y[:, c], p[:, c])) if _has_both(y[:, c]) else float("nan")
            for c in range(y.shape[1])]


def per_class_ap(y: np.ndarray, p: np.ndarray) -> list[float]:
    return [float(skm.average_precision_score(y[:, c], p[:, c])) if _has_both(y[:, c]) else float("nan")
            for c in range(y.shape[1])]


def _nanmean(values: list[float]) -> float:
    arr = np.asarray(values, dtype=np.float64)
    return float(np.nanmean(arr)) if np.isfinite(arr).any() else float("nan")


def compute(task: str, y: np.ndarray, p: np.ndarray, names: list[str]) -> dict[str, float]:
    """Named metrics; AUROC and mAP are macro averages over classes present in ``y``."""
    y = np.asarray(y, dtype=np.int64)
    p = np.asarray(p, dtype=np.float64)
    if y.shape != p.shape:
        raise ValueError(f"targets {y.shape} and probabilities {p.shape} differ in shape")
    out: dict[str, float] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in names:
            if name == "auroc":
                out[name] = (_nanmean(per_class_auroc(y, p)[1:]) if task == "binary"
                             else _nanmean(per_class_auroc(y, p)))
            elif name == "map":
                out[name] = (_nanmean(per_class_ap(y, p)[1:]) if task == "binary"
                             else _nanmean(per_class_ap(y, p)))
            elif task == "multilabel":
                pred = (p >= 0.5).astype(np.int64)
                if name == "accuracy":  # element-wise, as multi-label accuracy usually is
                    out[name] = float((pred == y).mean())
                elif name == "macro_f1":
                    out[name] = float(skm.f1_score(y, pred, average="macro", zero_division=0))
                elif name == "kappa":
                    out[name] = _nanmean([skm.cohen_kappa_score(y[:, c], pred[:, c]) for c in range(y.shape[1])])
                else:
                    raise ValueError(f"unknown metric '{name}'; known: {METRICS}")
            else:
                t, pred = _labels(y), _labels(p)
                if name == "accuracy":
                    out[name] = float(skm.accuracy_score(t, pred))
                elif name == "macro_f1":
                    out[name] = float(skm.f1_score(t, pred, average="macro",
                                                   labels=list(range(y.shape[1])), zero_division=0))
                elif name == "kappa":
                    out[name] = float(skm.cohen_kappa_score(t, pred, labels=list(range(y.shape[1]))))
                else:
                    raise ValueError(f"unknown metric '{name}'; known: {METRICS}")
    return out


def per_class(y: np.ndarray, p: np.ndarray, classes: list[str]) -> dict[str, dict[str, float]]:
    auc, ap = per_class_auroc(y, p), per_class_ap(y, p)
    return {c: {"auroc": auc[i], "ap": ap[i], "support": int(y[:, i].sum())} for i, c in enumerate(classes)}
