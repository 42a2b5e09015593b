"""medtl.metrics against scikit-learn and against values worked out by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from medtl import metrics as M

ALL = ["accuracy", "auroc", "map", "kappa", "macro_f1"]


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.fixture
def binary():
    rng = np.random.default_rng(0)
    t = rng.integers(0, 2, 60)
    t[:2] = [0, 1]
    p1 = np.clip(0.35 * t + rng.random(60) * 0.65, 0, 1)
    return np.eye(2, dtype=int)[t], np.stack([1 - p1, p1], axis=1), t, p1


@pytest.fixture
def multiclass():
    rng = np.random.default_rng(1)
    t = np.arange(90) % 4
    logits = rng.normal(size=(90, 4))
    logits[np.arange(90), t] += 1.0
    return np.eye(4, dtype=int)[t], softmax(logits), t


@pytest.fixture
def multilabel():
    rng = np.random.default_rng(2)
    y = (rng.random((80, 3)) < [0.5, 0.3, 0.15]).astype(int)
    p = np.clip(0.4 * y + 0.6 * rng.random((80, 3)), 0, 1)
    return y, p


def test_binary_matches_sklearn(binary):
    y, p, t, p1 = binary
    out = M.compute("binary", y, p, ALL)
    pred = (p1 > 0.5).astype(int)  # argmax of [1 - p, p]
    assert out["auroc"] == pytest.approx(skm.roc_auc_score(t, p1))
    assert out["map"] == pytest.approx(skm.average_precision_score(t, p1))
    assert out["accuracy"] == pytest.approx(skm.accuracy_score(t, pred))
    assert out["kappa"] == pytest.approx(skm.cohen_kappa_score(t, pred))
    assert out["macro_f1"] == pytest.approx(skm.f1_score(t, pred, average="macro"))
    assert set(out) == set(ALL)
    assert 0.5 < out["auroc"] < 1.0  # a non-trivial case


def test_multiclass_matches_sklearn(multiclass):
    y, p, t = multiclass
    out = M.compute("multiclass", y, p, ALL)
    pred = p.argmax(axis=1)
    assert out["auroc"] == pytest.approx(skm.roc_auc_score(t, p, multi_class="ovr", average="macro"))
    assert out["map"] == pytest.approx(skm.average_precision_score(y, p, average="macro"))
    assert out["accuracy"] == pytest.approx(skm.accuracy_score(t, pred))
    assert out["kappa"] == pytest.approx(skm.cohen_kappa_score(t, pred))
    assert out["macro_f1"] == pytest.approx(skm.f1_score(t, pred, average="macro"))
    assert 0.3 < out["accuracy"] < 1.0


def test_multilabel_matches_sklearn(multilabel):
    y, p = multilabel
    out = M.compute("multilabel", y, p, ALL)
    pred = (p >= 0.5).astype(int)
    assert out["auroc"] == pytest.approx(skm.roc_auc_score(y, p, average="macro"))
    assert out["map"] == pytest.approx(skm.average_precision_score(y, p, average="macro"))
    assert out["accuracy"] == pytest.approx(1 - skm.hamming_loss(y, pred))  # element-wise accuracy
    assert out["macro_f1"] == pytest.approx(skm.f1_score(y, pred, average="macro", zero_division=0))
    assert out["kappa"] == pytest.approx(np.mean([skm.cohen_kappa_score(y[:, c], pred[:, c]) for c in range(3)]))


def test_per_class_values_match_sklearn(multilabel):
    y, p = multilabel
    auc, ap = M.per_class_auroc(y, p), M.per_class_ap(y, p)
    for c in range(3):
        assert auc[c] == pytest.approx(skm.roc_auc_score(y[:, c], p[:, c]))
        assert ap[c] == pytest.approx(skm.average_precision_score(y[:, c], p[:, c]))
    table = M.per_class(y, p, ["a", "b", "c"])
    assert table["b"] == {"auroc": pytest.approx(auc[1]), "ap": pytest.approx(ap[1]), "support": int(y[:, 1].sum())}


@pytest.mark.parametrize("task", ["binary", "multiclass", "multilabel"])
def test_perfect_predictions_score_one(task):
    if task == "binary":
        y = np.eye(2, dtype=int)[[0, 1, 1, 0, 1]]
    elif task == "multiclass":
        y = np.eye(3, dtype=int)[[0, 1, 2, 2, 1, 0]]
    else:
        y = np.array([[1, 0, 1], [0, 1, 1], [1, 1, 0], [0, 0, 0]])
    p = np.where(y == 1, 0.9, 0.1) if task == "multilabel" else np.where(y == 1, 0.8, 0.2 / (y.shape[1] - 1))
    out = M.compute(task, y, p, ALL)
    assert out == {name: 1.0 for name in ALL}


def test_hand_computed_values():
    # truth 0 0 1 1, predicted 0 1 1 1: accuracy 3/4; observed agreement 0.75, chance 0.5*0.25 + 0.5*0.75 = 0.5,
    # so kappa = (0.75 - 0.5) / (1 - 0.5) = 0.5; F1 of class 0 = 2/3, class 1 = 0.8, macro = 11/15.
    y = np.eye(2, dtype=int)[[0, 0, 1, 1]]
    p1 = np.array([0.2, 0.6, 0.7, 0.9])
    p = np.stack([1 - p1, p1], axis=1)
    out = M.compute("binary", y, p, ALL)
    assert out["accuracy"] == pytest.approx(0.75)
    assert out["kappa"] == pytest.approx(0.5)
    assert out["macro_f1"] == pytest.approx(11 / 15)
    assert out["auroc"] == pytest.approx(1.0)  # both positives score above both negatives
    # positives ranked 1 and 2 of 4: precision 1 at both recalls
    assert out["map"] == pytest.approx(1.0)

    # AUROC 0.75: positives {0.9, 0.4}, negatives {0.5, 0.1}; 3 of 4 pairs ordered correctly
    p1 = np.array([0.5, 0.1, 0.9, 0.4])
    out = M.compute("binary", y, np.stack([1 - p1, p1], axis=1), ["auroc", "map"])
    assert out["auroc"] == pytest.approx(0.75)
    # ranking 0.9(+) 0.5(-) 0.4(+) 0.1(-): AP = 0.5 * 1 + 0.5 * 2/3
    assert out["map"] == pytest.approx(0.5 + 1 / 3)

    # multi-label element-wise accuracy: 5 of 6 entries right
    y = np.array([[1, 0], [0, 1], [1, 1]])
    p = np.array([[0.9, 0.2], [0.1, 0.3], [0.7, 0.8]])
    assert M.compute("multilabel", y, p, ["accuracy"])["accuracy"] == pytest.approx(5 / 6)


def test_binary_auroc_is_the_positive_class_only():
    # a symmetric score would give the same number; check it is not averaged with a flipped column
    y = np.eye(2, dtype=int)[[0, 1, 0, 1, 1]]
    p1 = np.array([0.3, 0.8, 0.6, 0.4, 0.9])
    bad_p0 = np.array([0.1, 0.1, 0.9, 0.9, 0.1])  # a nonsense first column must not matter
    out = M.compute("binary", y, np.stack([bad_p0, p1], axis=1), ["auroc", "map"])
    assert out["auroc"] == pytest.approx(skm.roc_auc_score(y[:, 1], p1))
    assert out["map"] == pytest.approx(skm.average_precision_score(y[:, 1], p1))


def test_absent_class_is_left_out_of_the_macro_average():
    y = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 1, 0]])  # class 2 never occurs
    p = np.array([[0.7, 0.2, 0.1], [0.3, 0.6, 0.1], [0.5, 0.4, 0.1], [0.2, 0.3, 0.5]])
    out = M.compute("multiclass", y, p, ["auroc"])
    per = M.per_class_auroc(y, p)
    assert math.isnan(per[2])
    assert out["auroc"] == pytest.approx((per[0] + per[1]) / 2)
    assert math.isnan(M.compute("multilabel", np.zeros((3, 2), int), np.full((3, 2), 0.3), ["auroc"])["auroc"])


def test_errors_name_the_problem():
    y = np.eye(2, dtype=int)[[0, 1]]
    with pytest.raises(ValueError, match="unknown metric 'dice'"):
        M.compute("binary", y, y.astype(float), ["dice"])
    with pytest.raises(ValueError, match="unknown metric 'dice'"):
        M.compute("multilabel", y, y.astype(float), ["dice"])
    with pytest.raises(ValueError, match="shape"):
        M.compute("binary", y, np.ones((2, 3)) / 3, ["accuracy"])
