"""The classification ``training`` section, declared as every strategy's settings are: type, allowed values,
default and meaning in one place. The JSON schema checks the config's types and ranges when the workflow is
parsed; the defaults are these (the schema gives none), and a job's cache key is built from them
(``medtl.workflow.plan``). Nothing here imports PyTorch: the planner reads it."""
from __future__ import annotations

from medtl.metric_names import METRICS
from medtl.settings import Bool, Choice, Int, Number, Settings, Table, Text
from medtl.training.spec import IMAGENET_MEAN, IMAGENET_STD

TRAINING = Settings(
    epochs=Int(50, minimum=1, doc="epochs at most (early stopping may end a run sooner)"),
    batch_size=Int(64, minimum=1, doc="training batch size"),
    eval_batch_size=Int(256, minimum=1, doc="batch size of validation and test predictions"),
    patience=Int(5, minimum=0, doc="stop after this many epochs in a row without a gain in the monitored metric; "
                                   "0 never stops"),
    monitor=Choice(None, nullable=True, choices=METRICS,
                   doc="validation metric for early stopping and the best epoch; null: each dataset's primary "
                       "metric. A strategy with a monitor of its own (SPFT) keeps it"),
    frozen_bn=Choice("eval", choices=("eval", "train"),
                     doc="mode of the BatchNorm and dropout layers of frozen blocks: eval (statistics fixed, as "
                         "linear probing defines it) or train (statistics adapt, as the first study's trainer)"),
    optimizer=Choice("adam", choices=("adam", "adamw", "sgd"), doc="the optimizer"),
    schedule=Table(None, nullable=True, doc="the learning rate over the run (null: constant); see the schema"),
    weight_decay=Number(0.0, minimum=0, doc="the optimizer's weight decay"),
    device=Text("auto", pattern=r"auto|cpu|cuda(:[0-9]+)?", meaning="auto, cpu, cuda or cuda:N",
                doc="where jobs train; auto: the GPU when there is one"),
    channels_last=Bool(False, doc="channels-last memory format on CUDA"),
    amp=Bool(True, doc="bf16 autocast on CUDA for every strategy without an amp setting of its own; never on CPU"),
    compile=Bool(False, doc="torch.compile the network's forward pass"),
    normalize=Table({"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}, also=("weights",),
                    doc="per-channel mean and SD of pixels scaled to [0, 1], or 'weights': those the weights were "
                        "trained with, from their owner's file (a hub encoder's preprocessor_config.json). Unset: "
                        "'weights' for an architecture with hub weights (RAD-DINO), ImageNet's otherwise"),
)
