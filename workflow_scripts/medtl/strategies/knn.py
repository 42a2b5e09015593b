"""k-NN probe: no training. Each validation and test image gets the classes of its ``k`` nearest training
images in the pretrained backbone's feature space (the head's input, as LP trains on), scikit-learn's
``KNeighborsClassifier`` (brute force, ``metric`` cosine by default); its probabilities are the neighbours'
votes (``weights: distance``: votes weighted by 1 / distance). Multi-label data: one vote per label (the share
of neighbours with the label). k larger than the training set uses every training image.

The features are the cached ones of the ``extract_features`` rule (the declaration says the backbone stays frozen,
so the planner gives the job the cache where the weights are fixed), else computed here in the same way (eval
mode, float32). The job writes the same files and metrics as any other (predictions, metrics, history with one
row, hparams); 0 parameters train.
"""
from __future__ import annotations

import numpy as np
import torch

from medtl.strategies.base import Strategy
from medtl.strategies.linear_probe import FrozenBackboneStages


class KNNProbe(FrozenBackboneStages, Strategy):
    without_training = True

    def trainable_blocks(self, epoch: int) -> set[int]:
        return set()

    def backbone_frozen(self, epoch: int) -> bool:
        return True

    def stage(self, epoch: int) -> str:
        return "knn (no training)"

    def classifier(self, n_train: int):
        from sklearn.neighbors import KNeighborsClassifier

        return KNeighborsClassifier(n_neighbors=max(1, min(int(self.settings["k"]), n_train)),
                                    metric=self.settings["metric"], weights=self.settings["weights"],
                                    algorithm="brute")

    def fit_predict(self, train_x: np.ndarray, train_y: np.ndarray, splits: dict[str, np.ndarray]) -> dict:
        """Fit on the training features and 0/1 targets (n, classes); each split's probabilities (n, classes)."""
        train_x = np.asarray(train_x, dtype=np.float32)
        train_y = np.asarray(train_y)
        n_classes = train_y.shape[1]
        knn = self.classifier(len(train_x))
        multilabel = self.ctx.task == "multilabel"
        knn.fit(train_x, train_y.astype(np.int64) if multilabel else train_y.argmax(axis=1))
        out = {}
        for split, x in splits.items():
            x = np.asarray(x, dtype=np.float32)
            probs = np.zeros((len(x), n_classes), dtype=np.float64)
            if len(x):
                votes = knn.predict_proba(x)
                if multilabel:  # one (n, classes seen) array per label: the share voting 1
                    for c, (seen, v) in enumerate(zip(knn.classes_, votes)):
                        if 1 in seen:
                            probs[:, c] = v[:, list(seen).index(1)]
                else:
                    probs[:, knn.classes_] = votes  # classes absent from training get 0
            out[split] = probs  # the votes as scikit-learn gives them (float64)
        return out

    @torch.no_grad()
    def features_of(self, data, norm, batch_size: int) -> np.ndarray:
        """The backbone's features of every row of ``data`` (a store split), computed as the features cache is."""
        from medtl.training.features import backbone_features

        self.net.eval()
        parts = [backbone_features(self.net, norm(x)).cpu().numpy() for x, _ in data.iterate(batch_size)]
        return np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)

    def describe(self) -> dict:
        return dict(self.settings)
