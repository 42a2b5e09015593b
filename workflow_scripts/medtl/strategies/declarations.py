"""Every classification strategy's declaration: its settings (type, allowed values, default, meaning),
what trains under it, and its implementation, imported only by the jobs. The config check, the defaults
a job uses and the strategies tables of docs/configuration.md all come from here (``medtl.workflow.docs``).

Adding a strategy: a ``Strategy`` subclass in its own module, and its entry here.
"""
from __future__ import annotations

from medtl.metric_names import METRICS
from medtl.settings import Bool, Choice, Int, Number, Settings, TextList
from medtl.staging import SHARED, shared
from medtl.strategies.spec import STRATEGIES, StrategySpec

UNFREEZE_EVERY = SHARED["unfreeze_every"](1)
STARTING_POINT = Settings(
    alpha=Number(0.01, minimum=0, doc="weight α of the distance to the pretrained starting point"),
    beta=Number(0.01, minimum=0, doc="weight β of the L2 penalty on the new head"),
)

STRATEGIES.register("ft")(StrategySpec(
    "medtl.strategies.full:FullFineTuning", Settings(),
    trains="everything"))

STRATEGIES.register("scratch")(StrategySpec(
    "medtl.strategies.scratch:Scratch", Settings(),
    trains="everything, as `ft`, from the architecture's random initialisation whatever its `weights` (no "
           "weights file, not in the job's cache key): the reference that says whether transfer helps",
    random_init=True))

STRATEGIES.register("lp")(StrategySpec(
    "medtl.strategies.linear_probe:LinearProbing", Settings(),
    trains="the new head only; everything before it in eval mode (BatchNorm statistics and dropout fixed), "
           "trained on cached backbone features",
    frozen_backbone_when=lambda s: True))

STRATEGIES.register("g_lf")(StrategySpec(
    "medtl.strategies.gradual:GradualLastFirst", Settings(unfreeze_every=UNFREEZE_EVERY),
    trains="head, then one more block every `unfreeze_every` epochs from the last block back"))

STRATEGIES.register("g_fl")(StrategySpec(
    "medtl.strategies.gradual:GradualFirstLast", Settings(unfreeze_every=UNFREEZE_EVERY),
    trains="head, then one more block every `unfreeze_every` epochs from the first block on"))

STRATEGIES.register("lp_ft")(StrategySpec(
    "medtl.strategies.lp_ft:LinearProbeThenFineTune",
    Settings(lp_epochs=Int(2, minimum=0, doc="epochs of the LP stage (head only, frozen backbone); 0 is FT")),
    trains="head for `lp_epochs`, then everything",
    frozen_backbone_when=lambda s: s["lp_epochs"] > 0))

STRATEGIES.register("l2_sp")(StrategySpec(
    "medtl.strategies.sp:L2SP", STARTING_POINT,
    trains="everything, loss + α/2‖w−w⁰‖² on the pretrained part + β/2‖w_head‖²"))

STRATEGIES.register("l1_sp")(StrategySpec(
    "medtl.strategies.sp:L1SP", STARTING_POINT,
    trains="everything, loss + α‖w−w⁰‖₁ + β/2‖w_head‖²"))

STRATEGIES.register("auto_rgn")(StrategySpec(
    "medtl.strategies.auto_rgn:AutoRGN",
    Settings(
        probe_batches=Int(5, minimum=1, doc="training batches whose relative gradient norms are averaged, "
                                            "each epoch"),
        norm_layers=Choice("frozen", choices=("frozen", "rgn"),
                           doc="the backbone's normalisation layers: frozen (as the reference) or "
                               "rated by their RGN like any tensor"),
        reset_optimizer=Bool(True, doc="empty the optimizer's state every epoch (the reference rebuilds Adam)"),
        scale=Choice("pretrained", choices=("pretrained", "reference"),
                     doc="which tensors set the maximum: pretrained (the new head at lr, outside it; "
                         "docs/fidelity.md #1) or reference (the reference code's rule: a default-initialised "
                         "head inside it, each normalisation layer rated as one, `norm_layers` ignored, Adam "
                         "with weight decay 1e-4)"),
    ),
    trains="everything but the backbone's normalisation layers; each pretrained tensor's rate = lr × RGN / "
           "max RGN, RGN = ‖g‖/‖w‖ averaged over the probe batches, recomputed (and the optimizer state "
           "reset) every epoch; the new head and zero-norm tensors at lr, outside the maximum (`scale: "
           "reference`: the head in the maximum, normalisation layers rated per layer)"))

STRATEGIES.register("spft")(StrategySpec(
    "medtl.strategies.spft:SPFT",
    Settings(
        # the settings SPFT shares with detection and segmentation: one meaning (medtl.staging.SHARED).
        # Defaults: the paper's values where it gives one (top_k 10: Table VI's "last 10 layers"; encoder rate
        # 3e-6 / head 5e-5 = 0.06; progressive, class weights, EMA, mixed precision, early stopping on AUC,
        # eq. 6's loss); head_epochs, unfreeze_every, refine_gamma, ema_decay and weight_decay are ours: the paper
        # gives no value (docs/fidelity.md)
        shared(head_epochs=2, top_k=10, unfreeze_every=1, progressive=True, class_weights=True),
        Settings(refine_gamma=Number(0.5, minimum=0, doc="strength of the refinement by per-class validation AUC")),
        shared(ema=True, ema_decay=0.99, encoder_lr_ratio=0.06),
        Settings(weight_decay=Number(0.05, minimum=0, doc="AdamW's weight decay")),
        shared(warmup_epochs=0),
        amp=Bool(True, doc="bf16 autocast on a GPU (never on a CPU)"),
        monitor=Choice("auroc", choices=METRICS, doc="validation metric for early stopping and the best epoch"),
        components_from=SHARED["components_from"]("stage2"),
        loss=Choice("bce", choices=("bce", "task"),
                    doc="bce: eq. 6's per-class binary cross-entropy for every task (multi-class data on one-hot "
                        "targets); task: the task's own loss (softmax cross-entropy for multi-class data)"),
    ),
    trains="stage 1: head only for `head_epochs`, plain loss; stage 2: the top `top_k` blocks one by one "
           "(`progressive: false`: all at once; `top_k: 0`: none), class-aware loss weights w_c = N_neg/N_pos "
           "(mean 1, on each class's whole loss term) refined by per-class validation AUC, EMA weights evaluated "
           "(eq. 7 with the fixed decay `ema_decay`, from a copy of the weights at the start of stage 2); "
           "throughout AdamW with encoder rate = `encoder_lr_ratio` × lr, cosine schedule, bf16 autocast on GPU, "
           "early stopping on validation AUROC; the loss is eq. 6's per-class binary cross-entropy for every task"))

# -- parameter-efficient strategies, layer-wise rates and a k-NN probe (issue 21) --------------------------
ADAPTERS = Settings(
    rank=Int(8, minimum=1, doc="rank r of each low-rank update B·A"),
    alpha=Number(16, above=0, doc="scale of the update: B·A × alpha / rank"),
    dropout=Number(0.0, minimum=0, below=1, doc="dropout on the adapters' input (training only)"),
    targets=TextList("auto", also=("auto",),
                     doc="the layers that get adapters: auto (a ViT's fused attention `qkv`; else every convolution "
                         "and linear layer outside the head, grouped convolutions excepted) or a list of module "
                         "names, each matching a module named so or ending in `.<name>`"),
    blocks=Int("all", minimum=0, also=("all",),
               doc="the parameter blocks whose layers get adapters: all, or the head's block and this many below it"),
)

STRATEGIES.register("lora")(StrategySpec(
    "medtl.strategies.peft_adapters:LoRA", ADAPTERS,
    trains="low-rank adapters (LoRA, Hugging Face `peft`) beside the `targets` layers of the top `blocks` blocks, "
           "and the new head; every pretrained weight and BatchNorm statistic stays as it was"))

STRATEGIES.register("dora")(StrategySpec(
    "medtl.strategies.peft_adapters:DoRA", ADAPTERS,
    trains="as `lora`, weight-decomposed (DoRA, `peft`'s `use_dora`): the adapters update each adapted weight's "
           "direction and a trained magnitude per output"))

STRATEGIES.register("bitfit")(StrategySpec(
    "medtl.strategies.bitfit:BitFit",
    Settings(norm_layers=Choice("biases", choices=("biases", "all", "frozen"),
                                doc="what of the normalisation layers trains: their shift β as every bias (biases), "
                                    "their scale γ too (all), or nothing (frozen)")),
    trains="the bias terms of the pretrained network (BitFit) and the new head; BatchNorm statistics fixed"))

STRATEGIES.register("llrd")(StrategySpec(
    "medtl.strategies.llrd:LayerwiseDecay",
    Settings(decay=Number(0.75, above=0, maximum=1,
                          doc="each block's rate is decay × the rate of the block above it (1: FT)")),
    trains="everything, block i of n at lr × decay^(n − 1 − i): the head's block at lr (layer-wise rate decay)"))

STRATEGIES.register("knn")(StrategySpec(
    "medtl.strategies.knn:KNNProbe",
    Settings(
        k=Int(11, minimum=1, doc="neighbours that vote (at most the training set)"),
        metric=Choice("cosine", choices=("cosine", "euclidean"), doc="distance between feature vectors"),
        weights=Choice("uniform", choices=("uniform", "distance"),
                       doc="each neighbour's vote: equal, or 1 / distance"),
    ),
    trains="nothing: the k nearest training images in the pretrained backbone's (cached) feature space vote "
           "(scikit-learn's KNeighborsClassifier); probabilities are the votes",
    frozen_backbone_when=lambda s: True))
