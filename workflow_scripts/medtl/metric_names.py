"""The names of the studies' metrics, importable without scikit-learn (the config check reads them)."""

METRICS = ("map", "accuracy", "auroc", "kappa", "macro_f1", "balanced_accuracy")
