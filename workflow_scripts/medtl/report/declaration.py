"""The ``report`` sections, declared as every strategy's settings are: type, allowed values, default and
meaning in one place. The JSON schema checks the config's types and ranges when the workflow is parsed; the
defaults are these (the schema gives none). The report rules' params are the sections resolved by them
(``medtl.workflow.plan``, ``medtl.workflow.dense_plan``), so a changed default reruns the reports. Nothing
here imports more than the standard library: the planner reads it."""
from __future__ import annotations

from medtl.settings import Int, Number, Settings, Table, Text

#: the classification report (``report``): the reference, the intervals, the paired tests and the verdict
REPORT = Settings(
    reference=Text("ft", doc="the strategy every other one is compared with (a key of strategies)"),
    effective_threshold=Number(0.001, minimum=0, doc="relative gain over the reference (0.001 = 0.1 %) that "
                                                      "counts a strategy as effective (the paper's Table 12)"),
    bootstrap_resamples=Int(1000, minimum=100, doc="bootstrap resamples of every interval and paired test"),
    confidence_level=Number(0.95, above=0.5, below=1,
                            doc="level of the intervals; significant: Holm-adjusted p < 1 - confidence_level"),
    bootstrap_seed=Int(0, minimum=0, doc="seed of the bootstrap draws (the intervals are reproducible)"),
    rope=Number(0.01, minimum=0, doc="region of practical equivalence of the Bayesian signed-rank test against "
                                     "the reference (absolute difference of the primary metric)"),
    modality=Table({}, values=Text(), doc="dataset -> modality, for the verdict's 'which strategy for which "
                                          "modality' table; a dataset left out: its source type"),
)

#: the detection and segmentation reports (``detection.report``, ``segmentation.report``)
DENSE_REPORT = Settings(
    n_images=Int(4, minimum=1, doc="test images in the overlay figures"),
    box_conf=Number(0.05, minimum=0, maximum=1, doc="detection: the lowest score drawn (at most as many boxes "
                                                    "per image as it has ground-truth boxes)"),
)
