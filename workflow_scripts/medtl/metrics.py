"""The studies' metrics, computed with scikit-learn on 0/1 targets and predicted probabilities.

Targets are always an (n, n_classes) 0/1 matrix; probabilities have the same shape
(softmax for binary/multi-class, sigmoid for multi-label).

A metric that is undefined on the data at hand is never a silent number (:func:`evaluate`):

- a class whose targets have no positive image (or no negative one) in the split has no AUROC or AP
  (per class: null), and it is left out of the macro AUROC and mAP, as CheXpert's evaluation leaves out a
  finding without positives; for multi-label data it is left out of the macro kappa too (its kappa would be
  0 or 0/0, depending only on whether the model predicted it);
- a class with no positive image and no positive prediction has an F1 of 0/0: left out of the macro F1;
- every class left out is named, with the reason (:attr:`Evaluation.excluded`); a metric left with no
  class, or undefined as a whole (binary AUROC without positives, kappa when every target and prediction
  is one class, any metric of an empty split), is NaN here and null in ``metrics.json``, with its reason
  (:attr:`Evaluation.undefined`).

Balanced accuracy (``balanced_accuracy``) is the mean per-class recall -- torchmetrics' macro ``Accuracy``, on
which the first study's released trainer (davilac/BioTune) early-stops: scikit-learn's ``balanced_accuracy_score``
of the predicted labels for binary and multi-class data, a class without images in the split left out; for
multi-label data, the mean over classes of each binary problem's balanced accuracy ((TPR + TNR) / 2), a class
without positive or without negative images left out (as for kappa).

:func:`compute` gives the numbers alone (NaN where undefined), :func:`evaluate` the numbers with the
classes left out and the reasons, as a job writes them into ``metrics.json``.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
from sklearn import metrics as skm

from medtl.metric_names import METRICS
HIGHER_IS_BETTER = {m: True for m in METRICS}

#: what each metric is called in a sentence
NAMES = {"auroc": "AUROC", "map": "mAP", "accuracy": "accuracy", "kappa": "kappa", "macro_f1": "macro F1",
         "balanced_accuracy": "balanced accuracy"}
#: the practice a left-out class follows, said once wherever classes are left out
PRACTICE = "left out of these macro means, as CheXpert's evaluation leaves out a class without positives"


class UndefinedMetricError(ValueError):
    """A metric that selects something (the best epoch, the learning rate) is undefined; the message says
    on which split, why (the class and its counts) and what to do."""


def _labels(y: np.ndarray) -> np.ndarray:
    return y.argmax(axis=1)


def _has_both(col: np.ndarray) -> bool:
    return 0 < col.sum() < len(col)


def per_class_auroc(y: np.ndarray, p: np.ndarray, sample_weight: np.ndarray | None = None) -> list[float]:
    return [float(skm.roc_auc_score(y[:, c], p[:, c], sample_weight=sample_weight)) if _has_both(y[:, c])
            else float("nan") for c in range(y.shape[1])]


def per_class_ap(y: np.ndarray, p: np.ndarray, sample_weight: np.ndarray | None = None) -> list[float]:
    return [float(skm.average_precision_score(y[:, c], p[:, c], sample_weight=sample_weight)) if _has_both(y[:, c])
            else float("nan") for c in range(y.shape[1])]


def _positive_weights(y: np.ndarray, p: np.ndarray, sample_weight) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rows with a positive weight, and their weights: an image of weight 0 is not in the sample."""
    w = np.asarray(sample_weight, dtype=np.float64)
    if w.shape != (len(y),):
        raise ValueError(f"sample_weight has shape {w.shape}; expected one weight per image, ({len(y)},)")
    if not np.isfinite(w).all() or (w < 0).any():
        raise ValueError("sample_weight must be finite and non-negative")
    keep = w > 0
    return y[keep], p[keep], w[keep]


def _mean(values) -> float:
    values = list(values)
    return float(np.mean(values)) if values else math.nan


def _f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    """Per-class F1 = 2 TP / (2 TP + FP + FN); NaN where that is 0/0 (no positive image, none predicted)."""
    den = 2 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, 2 * tp / np.where(den > 0, den, 1), math.nan)


def _none(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


@dataclass
class Evaluation:
    """The metrics of one split, with what could not be computed and why."""

    split: str
    n_images: int
    classes: list[str]
    #: metric -> value; NaN where undefined (see ``undefined``)
    scores: dict[str, float] = field(default_factory=dict)
    #: class -> {"auroc", "ap", "support"}; AUROC / AP NaN where undefined
    per_class: dict[str, dict] = field(default_factory=dict)
    #: class -> {"metrics": [the macro means it is left out of], "reason": why}
    excluded: dict[str, dict] = field(default_factory=dict)
    #: metric -> why it has no value
    undefined: dict[str, str] = field(default_factory=dict)

    def _exclude(self, cls: str, metric: str, reason: str) -> None:
        entry = self.excluded.setdefault(cls, {"metrics": [], "reason": reason})
        entry["metrics"].append(metric)

    # -- as metrics.json holds them: strict JSON, null where undefined -------------------------------------
    def json_scores(self) -> dict[str, float | None]:
        return {k: _none(v) for k, v in self.scores.items()}

    def json_per_class(self) -> dict[str, dict]:
        return {c: {"auroc": _none(v["auroc"]), "ap": _none(v["ap"]), "support": int(v["support"])}
                for c, v in self.per_class.items()}

    def json_excluded(self) -> list[dict]:
        """One entry per class left out of a macro mean: its name, support, the means and the reason."""
        return [{"class": c, "support": int(self.per_class[c]["support"]), "metrics": list(e["metrics"]),
                 "reason": f"{e['reason']}: {PRACTICE}"} for c, e in self.excluded.items()]

    def messages(self) -> list[str]:
        """One line per class left out and per metric undefined, for a job's log."""
        out = [f"{self.split}: class '{c}' left out of the macro {', '.join(NAMES[m] for m in e['metrics'])} "
               f"({e['reason']})" for c, e in self.excluded.items()]
        out += [f"{self.split}: {NAMES[m]} is undefined ({why})" for m, why in self.undefined.items()]
        return out


def _target_reason(pos: int, n: int, cls: str, split: str) -> str:
    if pos == 0:
        return f"no positive image of '{cls}' among the {n} {split} images"
    return f"all {n} {split} images are positive for '{cls}', none negative"


def _no_class_reason(pos: np.ndarray, n: int, classes: list[str], split: str) -> str:
    shown = "; ".join(f"'{c}': {'no positive' if pos[i] == 0 else 'no negative'}" for i, c in enumerate(classes[:6]))
    more = f"; and {len(classes) - 6} more" if len(classes) > 6 else ""
    return f"no class has both positive and negative images among the {n} {split} images ({shown}{more})"


def evaluate(task: str, y: np.ndarray, p: np.ndarray, names: list[str], classes: list[str] | None = None,
             split: str = "evaluated", sample_weight: np.ndarray | None = None) -> Evaluation:
    """The named metrics of one split, with every class left out of a macro mean and every undefined
    metric named with its reason (see the module's docstring). ``classes``: the class names (default
    ``class 0``, ``class 1``, ...); ``split``: its name in the reasons ("val", "test").

    ``sample_weight``: one non-negative weight per image (a bootstrap resample: how often each image was
    drawn), passed to scikit-learn's ``sample_weight``; with integer weights every metric is that of the rows
    repeated that often. Images of weight 0 are left out (a class whose positives all weigh 0 has none), and
    ``n_images`` and each class's ``support`` count the images with a positive weight."""
    y = np.asarray(y, dtype=np.int64)
    p = np.asarray(p, dtype=np.float64)
    if y.shape != p.shape:
        raise ValueError(f"targets {y.shape} and probabilities {p.shape} differ in shape")
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric '{unknown[0]}'; known: {METRICS}")
    w = None
    if sample_weight is not None:
        y, p, w = _positive_weights(y, p, sample_weight)
    n, k = y.shape
    classes = list(classes) if classes is not None else [f"class {c}" for c in range(k)]
    if len(classes) != k:
        raise ValueError(f"{len(classes)} class names for {k} target columns")
    ev = Evaluation(split=split, n_images=n, classes=classes)
    pos = y.sum(axis=0)
    both = (pos > 0) & (pos < n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        auc, ap = per_class_auroc(y, p, w), per_class_ap(y, p, w)
        ev.per_class = {c: {"auroc": auc[i], "ap": ap[i], "support": int(pos[i])} for i, c in enumerate(classes)}
        for name in names:
            if n == 0:
                ev.scores[name] = math.nan
                ev.undefined[name] = f"the {split} split has no images"
                continue
            if name in ("auroc", "map"):
                per = auc if name == "auroc" else ap
                if task == "binary":  # the positive class alone
                    ev.scores[name] = per[1]
                    if not both[1]:
                        ev.undefined[name] = (f"{_target_reason(int(pos[1]), n, classes[1], split)}: binary "
                                              f"{NAMES[name]} needs positive and negative images")
                    continue
                for c in np.flatnonzero(~both):
                    ev._exclude(classes[c], name, _target_reason(int(pos[c]), n, classes[c], split))
                ev.scores[name] = _mean(per[c] for c in np.flatnonzero(both))
                if not both.any():
                    ev.undefined[name] = _no_class_reason(pos, n, classes, split)
            elif task == "multilabel":
                pred = (p >= 0.5).astype(np.int64)
                if name == "accuracy":  # element-wise, as multi-label accuracy usually is
                    ev.scores[name] = (float((pred == y).mean()) if w is None
                                       else float(w @ (pred == y).mean(axis=1) / w.sum()))
                elif name == "macro_f1":
                    tp, fp, fn = y & pred, (1 - y) & pred, y & (1 - pred)
                    f1 = (_f1(tp.sum(0), fp.sum(0), fn.sum(0)) if w is None else _f1(w @ tp, w @ fp, w @ fn))
                    _macro_f1(ev, f1, split)
                elif name in ("kappa", "balanced_accuracy"):
                    score = skm.cohen_kappa_score if name == "kappa" else skm.balanced_accuracy_score
                    for c in np.flatnonzero(~both):
                        ev._exclude(classes[c], name, _target_reason(int(pos[c]), n, classes[c], split))
                    ev.scores[name] = _mean(score(y[:, c], pred[:, c], sample_weight=w) for c in np.flatnonzero(both))
                    if not both.any():
                        ev.undefined[name] = _no_class_reason(pos, n, classes, split)
            else:
                t, pred = _labels(y), _labels(p)
                if name == "accuracy":
                    ev.scores[name] = float(skm.accuracy_score(t, pred, sample_weight=w))
                elif name == "macro_f1":
                    conf = skm.confusion_matrix(t, pred, labels=list(range(k)), sample_weight=w)
                    tp = np.diag(conf)
                    _macro_f1(ev, _f1(tp, conf.sum(0) - tp, conf.sum(1) - tp), split)
                elif name == "balanced_accuracy":  # mean recall over the classes with images in the split
                    for c in np.flatnonzero(pos == 0):
                        ev._exclude(classes[c], name, _target_reason(0, n, classes[c], split))
                    ev.scores[name] = float(skm.balanced_accuracy_score(t, pred, sample_weight=w))
                elif name == "kappa":
                    value = float(skm.cohen_kappa_score(t, pred, labels=list(range(k)), sample_weight=w))
                    ev.scores[name] = value
                    if not math.isfinite(value):
                        only = classes[int(t[0])]
                        ev.undefined[name] = (f"all {n} {split} images are of class '{only}' and every prediction is "
                                              f"'{only}' too: agreement beyond chance is 0/0")
    return ev


def _macro_f1(ev: Evaluation, f1: np.ndarray, split: str) -> None:
    for c in np.flatnonzero(~np.isfinite(f1)):  # no positive image: AUROC and AP may have left it out already
        cls = ev.classes[c]
        ev._exclude(cls, "macro_f1", f"no positive image of '{cls}' among the {ev.n_images} {split} images")
        ev.excluded[cls]["reason"] += " and none predicted (F1 0/0)"
    ev.scores["macro_f1"] = _mean(f1[np.isfinite(f1)])
    if not np.isfinite(f1).any():
        ev.undefined["macro_f1"] = f"no class has a positive image or prediction among the {ev.n_images} {split} images"


def compute(task: str, y: np.ndarray, p: np.ndarray, names: list[str],
            sample_weight: np.ndarray | None = None) -> dict[str, float]:
    """Named metrics; NaN where undefined. AUROC, mAP, macro F1 (and multi-label kappa) are macro averages over
    the classes where they are defined (see :func:`evaluate` for which classes are left out, and why, and for
    ``sample_weight``)."""
    return evaluate(task, y, p, names, sample_weight=sample_weight).scores


def per_class(y: np.ndarray, p: np.ndarray, classes: list[str]) -> dict[str, dict[str, float]]:
    auc, ap = per_class_auroc(y, p), per_class_ap(y, p)
    return {c: {"auroc": auc[i], "ap": ap[i], "support": int(y[:, i].sum())} for i, c in enumerate(classes)}
