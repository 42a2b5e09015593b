"""Study report: merge every training job's ``metrics.json`` into tables and figures.

``medtl.report.classification.build_report`` is the entry point; the other modules are its steps:

- ``collect``: read and validate the metrics files into one row per job;
- ``select``: mean and standard error over seeds, learning rate chosen on validation;
- ``tables``: per-dataset result tables, relative improvement, best method, effectiveness;
- ``figures``: relative-improvement bar charts and heatmap (matplotlib, Agg);
- ``significance``: intervals and paired tests from every job's predictions (its statistics: ``statistics``,
  pure functions; ``weighted_metrics``, the resampled metrics held to ``medtl.metrics``);
- ``verdict``: one verdict across datasets (Friedman, critical differences, Bayesian signed-rank);
- ``published``: the hand-typed published numbers (checked against schemas/published.schema.yaml).
"""
