"""Each fine-tuning strategy checked for the property that defines it."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from conftest import context_for, trainer_for
from medtl.registry import UnknownNameError
from medtl.strategies import STRATEGIES
from medtl.strategies.spft import count_weights, refine_weights

ALL_STRATEGIES = ["ft", "lp", "g_lf", "g_fl", "lp_ft", "l2_sp", "l1_sp", "auto_rgn", "spft"]


# -- helpers ------------------------------------------------------------------------------------------
def params_of(net) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in net.net.named_parameters()}


def buffers_of(net) -> dict[str, torch.Tensor]:
    return {n: b.detach().clone() for n, b in net.net.named_buffers()}


def changed(before: dict, after: dict) -> set[str]:
    return {n for n in before if not torch.equal(before[n], after[n])}


def block_names(net, blocks) -> set[str]:
    return {n for n, b, _, _ in net.named_block_parameters() if b in blocks}


def block_buffer_names(net, blocks) -> set[str]:
    """Buffers (BatchNorm statistics) living in the modules of ``blocks``."""
    out = set()
    for b in blocks:
        for prefix in net.block_prefixes[b]:
            out |= {n for n, _ in net.net.named_buffers() if n == prefix or n.startswith(prefix + ".")}
    return out


def make(strategy: str, net, ctx_factory, store=None, **settings):
    return STRATEGIES.get(strategy)(ctx_factory(net, store), **settings)


def train_epochs(trainer, epochs):
    """The trainer's own epochs (run_epoch), with a parameter/buffer snapshot after each one."""
    optimizer = trainer.strategy.build_optimizer()
    scheduler = trainer.strategy.build_scheduler(optimizer)
    snaps = [(params_of(trainer.net), buffers_of(trainer.net))]
    for epoch in epochs:
        trainer.run_epoch(epoch, optimizer, scheduler)
        snaps.append((params_of(trainer.net), buffers_of(trainer.net)))
    return snaps


def expected_schedule(n_backbone: int, epoch: int, every: int, last_first: bool) -> set[int]:
    k = min(n_backbone, epoch // every)
    backbone = list(range(n_backbone - k, n_backbone)) if last_first else list(range(k))
    return set(backbone) | {n_backbone}


# -- FT ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["resnet_tiny", "densenet_tiny", "vgg_tiny"])
def test_ft_trains_every_parameter(arch, make_net, make_context, make_trainer, tiny_store):
    net = make_net(arch)
    strategy = make("ft", net, make_context, tiny_store)
    assert strategy.trainable_blocks(0) is None
    trainer = make_trainer(strategy, tiny_store)
    (p0, b0), (p1, b1) = train_epochs(trainer, [0])
    assert all(p.requires_grad for p in net.parameters())
    assert changed(p0, p1) == set(p0), f"parameters that did not train: {set(p0) - changed(p0, p1)}"
    running = {n for n in b0 if "running" in n}
    assert changed(b0, b1) >= running  # BatchNorm statistics follow the data
    assert running or arch == "vgg_tiny"


# -- LP ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["resnet_tiny", "densenet_tiny", "vgg_tiny"])
def test_lp_keeps_backbone_and_its_batchnorm_statistics(arch, make_net, make_context, make_trainer, tiny_store):
    net = make_net(arch)
    strategy = make("lp", net, make_context, tiny_store)
    before_p, before_b = params_of(net), buffers_of(net)
    outcome = make_trainer(strategy, tiny_store, epochs=2).fit()
    after_p, after_b = params_of(net), buffers_of(net)

    head = {n for n, _, is_head, _ in net.named_block_parameters() if is_head}
    assert head and changed(before_p, after_p) == head
    assert changed(before_b, after_b) == set(), "LP changed backbone buffers (BatchNorm statistics)"
    if arch != "vgg_tiny":
        assert any("running_mean" in n for n in before_b)  # the check above had something to check
    head_numel = sum(p.numel() for p in net.head_module().parameters())
    assert [h["trainable_params"] for h in outcome.history] == [head_numel, head_numel]


# -- gradual unfreezing ----------------------------------------------------------------------------------
@pytest.mark.parametrize("every", [1, 2])
@pytest.mark.parametrize("name,last_first", [("g_lf", True), ("g_fl", False)])
@pytest.mark.parametrize("arch", ["resnet_tiny", "densenet_tiny", "vgg_tiny", "vgg_tiny_fc_split"])
def test_gradual_schedule(name, last_first, every, arch, make_net, make_context):
    net = make_net(arch)
    strategy = make(name, net, make_context, unfreeze_every=every)
    n_backbone = net.n_blocks - 1
    for epoch in range(every * (n_backbone + 2)):
        want = expected_schedule(n_backbone, epoch, every, last_first)
        assert strategy.trainable_blocks(epoch) == want, f"epoch {epoch}"
        strategy.apply_freezing(epoch)
        for n, block, is_head, p in net.named_block_parameters():
            assert p.requires_grad == (block in want), f"epoch {epoch}: {n} (block {block})"
            if is_head:
                assert p.requires_grad
    # spot checks written out, in case the helper above shares a mistake with the code
    last = n_backbone - 1
    if last_first:
        assert strategy.trainable_blocks(0) == {n_backbone}
        assert strategy.trainable_blocks(every) == {last, n_backbone}
        assert strategy.trainable_blocks(2 * every) == {last - 1, last, n_backbone}
    else:
        assert strategy.trainable_blocks(every) == {0, n_backbone}
        assert strategy.trainable_blocks(2 * every) == {0, 1, n_backbone}
    assert strategy.trainable_blocks(100) == set(range(net.n_blocks))


def test_vgg_fc_split_puts_fc6_fc7_in_their_own_block(make_net, make_context):
    """vgg_tiny_fc_split (same classifier indices as vgg19: fc6 = classifier.0, fc7 = .3, new fc8 = .6): 7 blocks,
    the head's block is the new layer alone, fc6/fc7 the block before it; G-LF/G-FL train the new layer alone
    first, then G-FL the first convolution stage only (fc6/fc7 last), G-LF fc6/fc7 first. vgg_tiny keeps 6."""
    assert make_net("vgg_tiny").n_blocks == 6
    net = make_net("vgg_tiny_fc_split")
    assert net.n_blocks == 7
    assert net.block_prefixes[-1] == ["classifier.6"]
    assert net.block_prefixes[-2] == ["classifier.0", "classifier.3"]
    assert [type(net.net.get_submodule(n)) for n in ("classifier.0", "classifier.3", "classifier.6")] == \
        [torch.nn.Linear] * 3
    by_block = {}
    for n, block, _, _ in net.named_block_parameters():
        by_block.setdefault(block, set()).add(n)
    assert by_block[6] == {"classifier.6.weight", "classifier.6.bias"}
    assert by_block[5] == {f"classifier.{i}.{t}" for i in (0, 3) for t in ("weight", "bias")}
    assert by_block[0] == {"features.0.weight", "features.0.bias"}  # the first stage: one convolution
    g_fl, g_lf = make("g_fl", net, make_context), make("g_lf", net, make_context)
    assert g_fl.trainable_blocks(0) == g_lf.trainable_blocks(0) == {6}
    assert g_fl.trainable_blocks(1) == {0, 6}
    assert g_lf.trainable_blocks(1) == {5, 6}
    assert g_fl.trainable_blocks(5) == {0, 1, 2, 3, 4, 6}  # fc6/fc7 join last
    g_fl.apply_freezing(1)
    trainable = {n for n, p in net.net.named_parameters() if p.requires_grad}
    assert trainable == by_block[0] | by_block[6]


def test_vgg19_fc_split_full_size():
    """vgg19_fc_split on the meta device: VGG-19's 5 stages, fc6/fc7 (119.6 M parameters) in block 5, the new fc8
    alone in the head's block; the registry's block count holds; vgg19 keeps its 6 blocks."""
    from medtl.models.network import ARCHS, build_network

    with torch.device("meta"):
        split, plain = build_network("vgg19_fc_split", 14), build_network("vgg19", 14)
    assert (split.n_blocks, plain.n_blocks) == (ARCHS.get("vgg19_fc_split").n_blocks, 6) == (7, 6)
    assert split.block_prefixes[:5] == plain.block_prefixes[:5]
    assert split.block_prefixes[5:] == [["classifier.0", "classifier.3"], ["classifier.6"]]
    numel = {}
    for _, block, _, p in split.named_block_parameters():
        numel[block] = numel.get(block, 0) + p.numel()
    assert numel[5] == 25088 * 4096 + 4096 + 4096 * 4096 + 4096 and numel[6] == 4096 * 14 + 14


@pytest.mark.parametrize("name,trained_backbone", [("g_lf", {3, 4}), ("g_fl", {0, 1})])
def test_gradual_training_leaves_still_frozen_blocks_untouched(name, trained_backbone, make_net, make_context,
                                                               make_trainer, tiny_store):
    net = make_net("resnet_tiny")  # blocks 0-4 backbone, 5 head
    strategy = make(name, net, make_context, tiny_store, unfreeze_every=1)
    snaps = train_epochs(make_trainer(strategy, tiny_store), range(3))  # unfrozen: 0, 1, then 2 blocks
    (p0, b0), (p_end, b_end) = snaps[0], snaps[-1]
    never = set(range(5)) - trained_backbone
    frozen = block_names(net, never)
    assert not changed(p0, p_end) & frozen, "a block frozen in every epoch changed"
    assert not changed(b0, b_end) & block_buffer_names(net, never), "BatchNorm statistics of frozen blocks changed"
    assert block_names(net, trained_backbone | {5}) <= changed(p0, p_end)
    # epoch 0 trains the head only
    (p_e0, _) = snaps[1]
    assert changed(p0, p_e0) == block_names(net, {5})


# -- LP-FT ---------------------------------------------------------------------------------------------------
def test_lp_ft_trains_head_only_then_everything(make_net, make_context, make_trainer, tiny_store):
    net = make_net("resnet_tiny")
    strategy = make("lp_ft", net, make_context, tiny_store, lp_epochs=2)
    assert [strategy.trainable_blocks(e) for e in range(4)] == [set(), set(), None, None]
    snaps = train_epochs(make_trainer(strategy, tiny_store), range(3))
    head = block_names(net, {net.n_blocks - 1})
    for epoch in (0, 1):
        (pa, ba), (pb, bb) = snaps[epoch], snaps[epoch + 1]
        assert changed(pa, pb) == head, f"epoch {epoch} of the LP stage"
        assert changed(ba, bb) == set(), f"epoch {epoch}: BatchNorm statistics changed during LP"
    (pa, _), (pb, _) = snaps[2], snaps[3]
    assert changed(pa, pb) == set(pa), "not every parameter trained after the LP stage"


# -- L2-SP / L1-SP -------------------------------------------------------------------------------------------
def _perturbed_sp(name, make_net, make_context, alpha, beta, arch="vgg_tiny"):
    net = make_net(arch)
    start = params_of(net)
    strategy = make(name, net, make_context, alpha=alpha, beta=beta)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    return net, start, strategy


def _split_by_head(net, head_prefix):
    head, rest = {}, {}
    for n, p in net.net.named_parameters():
        (head if n.startswith(head_prefix + ".") else rest)[n] = p
    return head, rest


@pytest.mark.parametrize("arch,head_prefix", [("vgg_tiny", "classifier.6"), ("resnet_tiny", "fc")])
def test_l2_sp_penalty_matches_hand_computation(arch, head_prefix, make_net, make_context):
    alpha, beta = 0.3, 0.07
    net, start, strategy = _perturbed_sp("l2_sp", make_net, make_context, alpha, beta, arch)
    head, rest = _split_by_head(net, head_prefix)
    assert head and rest
    sq = sum(float(((p.detach().double() - start[n].double()) ** 2).sum()) for n, p in rest.items())
    head_sq = sum(float((p.detach().double() ** 2).sum()) for p in head.values())
    expected = alpha / 2 * sq + beta / 2 * head_sq
    assert float(strategy.penalty().detach()) == pytest.approx(expected, rel=1e-5)


def test_l1_sp_penalty_matches_hand_computation(make_net, make_context):
    alpha, beta = 0.3, 0.07
    net, start, strategy = _perturbed_sp("l1_sp", make_net, make_context, alpha, beta)
    head, rest = _split_by_head(net, "classifier.6")
    l1 = sum(float((p.detach().double() - start[n].double()).abs().sum()) for n, p in rest.items())
    head_sq = sum(float((p.detach().double() ** 2).sum()) for p in head.values())
    assert float(strategy.penalty().detach()) == pytest.approx(alpha * l1 + beta / 2 * head_sq, rel=1e-5)


@pytest.mark.parametrize("name", ["l2_sp", "l1_sp"])
def test_sp_penalty_is_zero_at_the_starting_point(name, make_net, make_context):
    net = make_net("resnet_tiny")
    assert float(make(name, net, make_context, alpha=1.0, beta=0.0).penalty().detach()) == 0.0
    strategy = make(name, net, make_context, alpha=1.0, beta=0.5)
    assert float(strategy.penalty().detach()) > 0  # the head term alone
    with torch.no_grad():
        for p in net.head_module().parameters():
            p.zero_()
    assert float(strategy.penalty().detach()) == 0.0


@pytest.mark.parametrize("name", ["l2_sp", "l1_sp"])
def test_sp_gradient_pulls_towards_the_starting_point(name, make_net, make_context):
    alpha, beta = 0.5, 0.2
    net, start, strategy = _perturbed_sp(name, make_net, make_context, alpha, beta)
    net.zero_grad()
    strategy.penalty().backward()
    head, rest = _split_by_head(net, "classifier.6")
    for n, p in rest.items():
        diff = p.detach() - start[n]
        want = alpha * diff if name == "l2_sp" else alpha * torch.sign(diff)
        torch.testing.assert_close(p.grad, want, rtol=1e-5, atol=1e-7)
        assert float((p.grad * diff).sum()) > 0  # descent shrinks the distance to the start
    for p in head.values():
        torch.testing.assert_close(p.grad, beta * p.detach(), rtol=1e-5, atol=1e-7)
    # one small descent step on the penalty alone brings the pretrained part closer to its start
    dist = lambda: sum(float((p.detach() - start[n]).norm()) for n, p in rest.items())  # noqa: E731
    d0 = dist()
    with torch.no_grad():
        for p in net.parameters():
            p.sub_(0.01 * p.grad)
    assert dist() < d0


def test_l2_sp_penalty_enters_training(make_net, make_context, make_trainer, tiny_store):
    """A strong pull keeps the backbone nearer its start than plain fine-tuning does on the same batches."""
    def distance_after_training(name, **settings):
        net = make_net("resnet_tiny")
        start = params_of(net)
        strategy = make(name, net, make_context, tiny_store, **settings)
        train_epochs(make_trainer(strategy, tiny_store), [0])
        return sum(float((p.detach() - start[n]).norm()) for n, _, head, p in net.named_block_parameters()
                   if not head)

    assert distance_after_training("l2_sp", alpha=50.0, beta=0.0) < 0.7 * distance_after_training("ft")


# -- Auto-RGN ------------------------------------------------------------------------------------------------
_PRETRAINED: dict[str, dict] = {}


def _job_start_net(arch: str, n_classes: int, store):
    """The state a real Auto-RGN job starts in: a backbone trained on a source task (the pipeline's own
    pretraining, shortened), and a new head exactly as torchvision/the registry builds it (zero biases and
    all), never touched afterwards."""
    from medtl.models import build_network
    from medtl.training.trainer import task_loss

    if arch not in _PRETRAINED:
        torch.manual_seed(0)
        source = build_network(arch, 3)
        ctx = context_for(source, store, lr=3e-3)
        strategy = STRATEGIES.get("ft")(ctx)
        trainer = trainer_for(strategy, store, batch_size=8)
        optimizer = strategy.build_optimizer()
        for epoch in range(3):
            trainer.run_epoch(epoch, optimizer, None)
        _PRETRAINED[arch] = {k: v.clone() for k, v in source.backbone_state().items()}
        del task_loss
    torch.manual_seed(1)
    net = build_network(arch, n_classes)
    net.load_backbone(_PRETRAINED[arch])
    return net


def _batch_probe(net, store, rows, strategy=None):
    from medtl.training.batches import IMAGENET_MEAN, IMAGENET_STD, Normalizer
    from medtl.training.trainer import task_loss

    norm = Normalizer(IMAGENET_MEAN, IMAGENET_STD, torch.device("cpu"))
    idx = store.indices("train")[rows]
    x = torch.from_numpy(np.ascontiguousarray(store.images[idx]))
    y = torch.as_tensor(store.targets("train")[rows])

    def probe():
        net.train()
        task_loss(store.task, net(norm(x)), y, None).backward()

    return probe


@pytest.mark.parametrize("arch", ["resnet_tiny", "densenet_tiny", "vgg_tiny"])
def test_auto_rgn_new_head_does_not_set_the_scale(arch, make_context, tiny_store):
    """From a real job's start: the new head (zero bias: RGN would be enormous) trains at the base rate and
    is left out of the maximum, so the pretrained backbone gets rates that are a real fraction of lr."""
    net = _job_start_net(arch, 3, tiny_store)
    head_bias = [p for n, p in net.net.named_parameters() if net.is_head(n) and n.endswith("bias")]
    if arch == "densenet_tiny":  # torchvision zeroes the DenseNet classifier's bias
        assert head_bias and float(head_bias[-1].detach().norm()) == 0
    strategy = make("auto_rgn", net, make_context, tiny_store)
    optimizer = strategy.build_optimizer()
    strategy.on_epoch_start(0, optimizer, _batch_probe(net, tiny_store, np.arange(8)))
    lr = strategy.ctx.lr
    rates = {g["name"]: g["lr"] for g in optimizer.param_groups}
    head = {n: r for n, r in rates.items() if net.is_head(n)}
    backbone = {n: r for n, r in rates.items() if not net.is_head(n)}
    assert head and all(r == lr for r in head.values())
    assert max(backbone.values()) == pytest.approx(lr)
    assert np.median(list(backbone.values())) >= 0.01 * lr, sorted(backbone.values())[:5]
    assert all(r > 0 for r in backbone.values())


def test_auto_rgn_rates_follow_relative_gradient_norms(make_context, tiny_store):
    """Each pretrained tensor's rate = lr * RGN / max RGN over the pretrained tensors, RGN averaged over
    the probe batches (one RGN per batch, as the reference's get_lr_weights), computed independently."""
    net = _job_start_net("resnet_tiny", 3, tiny_store)
    strategy = make("auto_rgn", net, make_context, tiny_store, probe_batches=2)
    optimizer = strategy.build_optimizer()
    batches = [np.arange(8), np.arange(8, 16)]
    calls = [0]

    def probe():
        _batch_probe(net, tiny_store, batches[calls[0] % 2])()
        calls[0] += 1

    state = copy.deepcopy(net.state_dict())
    strategy.on_epoch_start(0, optimizer, probe)
    assert calls[0] == 2
    rates = {g["name"]: g["lr"] for g in optimizer.param_groups}
    assert all(p.grad is None for p in net.parameters())  # the probe leaves no gradient behind

    net.load_state_dict(state)  # BatchNorm statistics as before the probes
    rgn = {}
    for rows in batches:
        net.zero_grad(set_to_none=True)
        _batch_probe(net, tiny_store, rows)()
        for n, p in net.net.named_parameters():
            if p.requires_grad and not net.is_head(n):
                rgn[n] = rgn.get(n, 0.0) + float(p.grad.norm()) / float(p.detach().norm()) / 2
    net.zero_grad(set_to_none=True)
    top = max(rgn.values())
    lr = strategy.ctx.lr
    for n, v in rgn.items():
        assert rates[n] == pytest.approx(lr * v / top, rel=1e-4, abs=1e-12), n
    assert len(set(np.round(list(rates.values()), 12))) > len(rates) // 2  # genuinely per-tensor rates


def test_auto_rgn_norm_layers_follow_the_reference(make_context, tiny_store):
    """norm_layers: frozen (default, as the reference leaves BatchNorm out of rates and optimizer): the
    backbone's normalisation parameters never train, though their running statistics adapt;
    norm_layers: rgn gives them rates like any other tensor."""
    net = _job_start_net("resnet_tiny", 3, tiny_store)
    strategy = make("auto_rgn", net, make_context, tiny_store)
    norm = {n for n, m in net.net.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
    frozen = {n for n, _ in net.net.named_parameters() if n.rsplit(".", 1)[0] in norm}
    assert frozen and strategy.frozen_norm == frozen
    assert not frozen & {g["name"] for g in strategy.build_optimizer().param_groups}
    trainer = trainer_for(strategy, tiny_store)
    (p0, b0), (p1, b1) = train_epochs(trainer, [0])
    assert not changed(p0, p1) & frozen
    assert changed(p0, p1) == set(p0) - frozen  # everything else, the backbone included, moved
    assert changed(b0, b1) >= {n for n in b0 if "running_mean" in n}

    other = make("auto_rgn", _job_start_net("resnet_tiny", 3, tiny_store), make_context, tiny_store,
                 norm_layers="rgn")
    assert not other.frozen_norm
    assert frozen <= {g["name"] for g in other.build_optimizer().param_groups}


def test_auto_rgn_zero_norm_tensor_gets_the_base_rate(make_context, tiny_store):
    net = _job_start_net("resnet_tiny", 3, tiny_store)
    name = next(n for n, p in net.net.named_parameters() if n.endswith("conv1.weight") or n == "conv1.weight")
    with torch.no_grad():
        net.net.get_parameter(name).zero_()
    strategy = make("auto_rgn", net, make_context, tiny_store)
    optimizer = strategy.build_optimizer()
    strategy.on_epoch_start(0, optimizer, _batch_probe(net, tiny_store, np.arange(8)))
    assert math.isnan(strategy.last_rgn[name])
    assert strategy.last_rates[name] == strategy.ctx.lr
    finite = [v for n, v in strategy.last_rates.items() if n != name and not net.is_head(n)]
    assert all(math.isfinite(v) and v > 0 for v in finite) and max(finite) == pytest.approx(strategy.ctx.lr)


def test_auto_rgn_through_fit_moves_the_backbone(make_context, tiny_store):
    """Through Trainer.fit from a real job's start: every pretrained tensor outside the normalisation layers
    moves in the first epoch, each by an amount of its own rate's order (not ~1e-13 x lr)."""
    net = _job_start_net("densenet_tiny", 3, tiny_store)
    before = params_of(net)
    strategy = make("auto_rgn", net, make_context, tiny_store, probe_batches=5)
    trainer = trainer_for(strategy, tiny_store, epochs=1)
    trainer.fit()
    after = params_of(net)
    moved = changed(before, after)
    backbone = {n for n in before if not net.is_head(n)} - strategy.frozen_norm
    assert backbone <= moved
    steps = {n: float((after[n] - before[n]).abs().max()) for n in backbone}
    assert np.median(list(steps.values())) > 1e-3 * strategy.ctx.lr


def test_auto_rgn_recomputes_rates_and_resets_the_optimizer_every_epoch(make_context, make_trainer, tiny_store):
    net = _job_start_net("resnet_tiny", 3, tiny_store)
    strategy = make("auto_rgn", net, make_context, tiny_store)
    trainer = make_trainer(strategy, tiny_store)
    optimizer = strategy.build_optimizer()
    seen, steps = [], []
    original = strategy.on_epoch_start

    def spy(epoch, opt, probe):
        original(epoch, opt, probe)
        steps.append(sum(len(s) for s in opt.state.values()))

    strategy.on_epoch_start = spy
    for epoch in range(2):
        trainer.run_epoch(epoch, optimizer, None)
        assert {g["name"]: g["lr"] for g in optimizer.param_groups} == strategy.last_rates
        seen.append(dict(strategy.last_rates))
    assert seen[0] != seen[1]
    assert steps == [0, 0]  # a fresh optimizer state at each epoch's start, as the reference rebuilds Adam
    assert optimizer.state  # ... which the epoch's steps then fill


def test_auto_rgn_probes_distinct_batches(make_context, make_trainer, tiny_store):
    """probe_batches=2 must look at two different training batches, not the first one twice."""
    net = _job_start_net("resnet_tiny", 3, tiny_store)
    strategy = make("auto_rgn", net, make_context, tiny_store, probe_batches=2)
    trainer = make_trainer(strategy, tiny_store, batch_size=8)
    read = []
    original = trainer.train.batch

    def spy(positions):
        read.append(tuple(np.sort(positions)))
        return original(positions)

    trainer.train.batch = spy
    optimizer = strategy.build_optimizer()
    strategy.on_epoch_start(0, optimizer, trainer._probe(trainer.train.shuffled(0, 0)))
    assert len(read) == 2 and read[0] != read[1]


def _fit_recording_rates(strategy, store):
    """Trainer.fit for one epoch; at the epoch's start the weights and the batches the probe reads, and after the
    probe each parameter group's rate and weight decay (read from the optimizer), by tensor name."""
    trainer = trainer_for(strategy, store, epochs=1)
    seen = {"batches": [], "groups": None, "optimizer": None}
    original_start, original_batch = strategy.on_epoch_start, trainer.train.batch

    def read(positions):
        x, y = original_batch(positions)
        seen["batches"].append((x.clone(), y.clone()))
        return x, y

    def spy(epoch, optimizer, probe):
        seen["state"] = copy.deepcopy(strategy.net.state_dict())
        trainer.train.batch = read
        original_start(epoch, optimizer, probe)
        trainer.train.batch = original_batch
        seen["groups"] = {g["name"]: (g["lr"], g["weight_decay"]) for g in optimizer.param_groups}
        seen["optimizer"] = type(optimizer)

    strategy.on_epoch_start = spy
    trainer.fit()
    return seen, trainer


def test_auto_rgn_reference_scale_through_fit(make_context, tiny_store):
    """scale: reference, through Trainer.fit from a real job's start (densenet_tiny: torchvision zeroes its head's
    bias): the head is re-drawn by PyTorch's default initialisation; each tensor's rate, read from the optimizer
    after the probe, equals lr x RGN / max RGN computed here independently with the maximum over every
    non-BatchNorm tensor, the head included, and each BatchNorm layer rated as one (||(g_w, g_b)|| / ||(w, b)||),
    not in the maximum; Adam with weight decay 1e-4. scale: pretrained (the default) gives other rates."""
    from medtl.training.batches import IMAGENET_MEAN, IMAGENET_STD, Normalizer
    from medtl.training.trainer import task_loss

    net = _job_start_net("densenet_tiny", 3, tiny_store)
    head = {n for n, _ in net.net.named_parameters() if net.is_head(n)}
    assert float(net.net.get_parameter("classifier.bias").detach().norm()) == 0
    strategy = make("auto_rgn", net, make_context, tiny_store, scale="reference", probe_batches=2)
    bias, weight = net.net.get_parameter("classifier.bias"), net.net.get_parameter("classifier.weight")
    bound = 1 / math.sqrt(weight.shape[1])  # nn.Linear's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) bias
    assert float(bias.detach().norm()) > 0 and float(bias.detach().abs().max()) <= bound
    with torch.no_grad():  # a small head weight: its RGN is the largest, so leaving the head out would show
        weight.mul_(0.01)
        for t in ("weight", "bias"):  # and a BatchNorm layer whose RGN exceeds it: not in the maximum
            net.net.get_parameter(f"features.denseblock1.denselayer1.norm1.{t}").mul_(1e-3)
    seen, trainer = _fit_recording_rates(strategy, tiny_store)
    assert seen["optimizer"] is torch.optim.Adam and len(seen["batches"]) == 2

    # the reference rule, computed from the weights and batches the probe saw
    ref = copy.deepcopy(net)
    ref.load_state_dict(seen["state"])
    bn = {m: [f"{m}.{p}" for p, _ in mod.named_parameters(recurse=False)]
          for m, mod in ref.net.named_modules() if isinstance(mod, torch.nn.BatchNorm2d)}
    bn_names = {n for names in bn.values() for n in names}
    params = dict(ref.net.named_parameters())
    assert bn_names and head and not bn_names & head and set(seen["groups"]) == set(params)
    norm = Normalizer(IMAGENET_MEAN, IMAGENET_STD, torch.device("cpu"))
    rgn = dict.fromkeys(params, 0.0)
    for x, y in seen["batches"]:
        ref.zero_grad(set_to_none=True)
        ref.train()
        task_loss(tiny_store.task, ref(norm(x)), y, None).backward()
        for n, p in params.items():
            if n not in bn_names:
                rgn[n] += float(p.grad.norm()) / float(p.detach().norm()) / 2
        for names in bn.values():
            g = math.sqrt(sum(float(params[n].grad.norm()) ** 2 for n in names))
            w = math.sqrt(sum(float(params[n].detach().norm()) ** 2 for n in names))
            for n in names:
                rgn[n] += g / w / 2
    top = max(v for n, v in rgn.items() if n not in bn_names)
    lr = strategy.ctx.lr
    for n, (rate, decay) in seen["groups"].items():
        assert rate == pytest.approx(lr * rgn[n] / top, rel=1e-4, abs=1e-12), n
        assert decay == 1e-4, n
    assert max(r for n, (r, _) in seen["groups"].items() if n not in bn_names) == pytest.approx(lr)
    assert seen["groups"]["classifier.weight"][0] == pytest.approx(lr)  # the head sets the scale
    assert seen["groups"]["features.denseblock1.denselayer1.norm1.weight"][0] > lr
    for names in bn.values():  # one rate per BatchNorm layer
        assert len({seen["groups"][n][0] for n in names}) == 1

    # scale: pretrained (the default), from the same start: other rates, BatchNorm frozen, no weight decay
    default, _ = _fit_recording_rates(
        make("auto_rgn", _job_start_net("densenet_tiny", 3, tiny_store), make_context, tiny_store, probe_batches=2),
        tiny_store)
    assert not bn_names & set(default["groups"])
    assert all(default["groups"][n] == (lr, 0.0) for n in head)
    assert any(seen["groups"][n][0] != lr for n in head)
    assert {n: g[0] for n, g in default["groups"].items()} != {n: seen["groups"][n][0] for n in default["groups"]}


def test_auto_rgn_defaults_to_five_probe_batches():
    assert STRATEGIES.get("auto_rgn").defaults["probe_batches"] == 5


# -- SPFT ----------------------------------------------------------------------------------------------------
def test_spft_schedule(make_net, make_context):
    net = make_net("resnet_tiny")  # 5 backbone blocks + head (5)
    s = make("spft", net, make_context, head_epochs=2, top_k=2, unfreeze_every=1)
    assert [s.trainable_blocks(e) for e in range(6)] == [{5}, {5}, {4, 5}, {3, 4, 5}, {3, 4, 5}, {3, 4, 5}]
    s = make("spft", net, make_context, head_epochs=1, top_k=3, unfreeze_every=2)
    assert [s.trainable_blocks(e) for e in range(9)] == [
        {5}, {4, 5}, {4, 5}, {3, 4, 5}, {3, 4, 5}, {2, 3, 4, 5}, {2, 3, 4, 5}, {2, 3, 4, 5}, {2, 3, 4, 5}]
    s = make("spft", net, make_context, head_epochs=0, top_k=99)
    assert s.trainable_blocks(20) == set(range(6))  # capped at the backbone
    s = make("spft", net, make_context, head_epochs=0, top_k="all")
    assert s.trainable_blocks(20) == set(range(6))
    s = make("spft", net, make_context, head_epochs=2, top_k=3, progressive=False)  # all top_k when stage 2 starts
    assert [s.trainable_blocks(e) for e in range(4)] == [{5}, {5}, {2, 3, 4, 5}, {2, 3, 4, 5}]
    s = make("spft", net, make_context, top_k=0)  # the ablation's "head only"
    assert all(s.trainable_blocks(e) == {5} for e in range(10))
    s = make("spft", net, make_context, head_epochs=2, top_k=2)
    s.apply_freezing(2)
    for n, block, _, p in net.named_block_parameters():
        assert p.requires_grad == (block in {4, 5}), n


def test_spft_count_weights():
    """Eq. 4-5: w_c = N_neg,c / N_pos,c, normalised to mean 1; for multi-class data one class against the rest."""
    y = np.eye(3)[[0] * 6 + [1] * 3 + [2] * 1]
    w = count_weights("multiclass", y)  # negatives/positives: 4/6, 7/3, 9/1
    np.testing.assert_allclose(w, np.array([4 / 6, 7 / 3, 9.0]) / np.mean([4 / 6, 7 / 3, 9.0]))
    assert w.mean() == pytest.approx(1.0)
    assert w[2] > w[1] > w[0]

    ml = np.array([[1, 1, 0], [1, 0, 0], [1, 0, 0], [0, 1, 1], [0, 0, 0], [1, 0, 0]])
    w = count_weights("multilabel", ml)  # negatives/positives: 2/4, 4/2, 5/1
    np.testing.assert_allclose(w, np.array([0.5, 2.0, 5.0]) / 2.5)
    assert w.mean() == pytest.approx(1.0)


def test_weighted_loss_multiplies_each_class_whole_term():
    """Eq. 6: w_c multiplies the whole binary cross-entropy of class c (positives and negatives alike), not
    only its positive term (``pos_weight``); multi-class: the cross-entropy of the images of class c."""
    from medtl.training.trainer import task_loss

    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 3, generator=gen)
    y = torch.tensor([[1, 0, 0], [0, 1, 1], [0, 0, 1], [1, 1, 0], [0, 0, 0], [1, 0, 1]], dtype=torch.float32)
    w = torch.tensor([0.2, 1.0, 1.8])
    p = torch.sigmoid(logits)
    by_hand = -(w * (y * torch.log(p) + (1 - y) * torch.log(1 - p))).mean()
    torch.testing.assert_close(task_loss("multilabel", logits, y, w), by_hand)

    yc = torch.eye(3)[[0, 1, 2, 2, 1, 0]]
    logp = torch.log_softmax(logits, dim=1)
    wi = w[yc.argmax(1)]
    by_hand = -(wi * (logp * yc).sum(1)).sum() / wi.sum()
    torch.testing.assert_close(task_loss("multiclass", logits, yc, w), by_hand)


def _spft_fit(store, make_context, epochs, **settings):
    """SPFT through Trainer.fit from a real job's start (pretrained backbone, new head); the network,
    the strategy and every class-weight vector the loss received."""
    from medtl.training import trainer as trainer_module

    net = _job_start_net("resnet_tiny", store.targets("train").shape[1], store)
    strategy = make("spft", net, make_context, store, **settings)
    seen = []
    original = trainer_module.task_loss

    def spy(task, logits, y, weights):
        seen.append(None if weights is None else weights.detach().cpu().numpy().copy())
        return original(task, logits, y, weights)

    trainer_module.task_loss = spy
    try:
        strategy.outcome = trainer_for(strategy, store, epochs=epochs, batch_size=8).fit()
    finally:
        trainer_module.task_loss = original
    return net, strategy, seen


def test_spft_class_weights_enter_training_in_stage2(make_context, tiny_multilabel_store):
    """Through fit: stage 1 trains the head with the plain loss; from stage 2 on, the loss receives the
    count weights, then their refinements; and they change what is learned."""
    store = tiny_multilabel_store
    kw = dict(head_epochs=1, top_k=1, ema=False, refine_gamma=1.0)
    net, s, seen = _spft_fit(store, make_context, 3, **kw)
    n_batches = -(-len(store.indices("train")) // 8)
    stage1, stage2 = seen[:n_batches], seen[n_batches:]
    assert all(w is None for w in stage1)
    assert stage2 and all(w is not None for w in stage2)
    np.testing.assert_allclose(stage2[0], count_weights("multilabel", store.targets("train")), rtol=1e-6)
    # refined after the first stage-2 validation: the last epoch trains with other weights
    assert not np.allclose(stage2[0], stage2[-1])
    assert stage2[-1].mean() == pytest.approx(1.0, rel=1e-5)

    _, plain, seen_plain = _spft_fit(store, make_context, 3, **{**kw, "class_weights": False})
    assert all(w is None for w in seen_plain)
    losses = [[h["train_loss"] for h in run.outcome.history] for run in (s, plain)]
    assert losses[0][0] == losses[1][0] and losses[0][1] != losses[1][1]  # same stage 1, weighted stage 2


def test_spft_refinement_runs_only_in_stage2(make_context, tiny_multilabel_store):
    store = tiny_multilabel_store
    start = count_weights("multilabel", store.targets("train"))
    _, s, _ = _spft_fit(store, make_context, 2, head_epochs=2, ema=False, refine_gamma=1.0)
    np.testing.assert_allclose(s._weights, start)  # stage 1 only: never refined
    _, s, _ = _spft_fit(store, make_context, 3, head_epochs=2, ema=False, refine_gamma=1.0)
    assert not np.allclose(s._weights, start)
    _, s, seen = _spft_fit(store, make_context, 2, head_epochs=2, ema=False, components_from="start")
    assert all(w is not None for w in seen) and not np.allclose(s._weights, start)


def test_spft_validation_refines_the_loss_weights(make_net, make_context):
    net = make_net("resnet_tiny")
    targets = np.eye(3, dtype=np.float32)[[0] * 6 + [1] * 3 + [2]]
    s = make("spft", net, lambda n, _: make_context(n, train_targets=targets), refine_gamma=1.0, head_epochs=0)
    before = s.class_weights().numpy()
    np.testing.assert_allclose(before, count_weights("multiclass", targets), rtol=1e-6)
    s.on_validation(0, [0.95, 0.5, 0.9])
    after = s.class_weights().numpy()
    assert after.mean() == pytest.approx(1.0, rel=1e-6)
    assert after[1] / before[1] > max(after[0] / before[0], after[2] / before[2])
    assert make("spft", net, make_context, class_weights=False).class_weights() is None


def test_spft_evaluates_the_ema_weights_from_stage2(make_net, make_context, make_trainer, tiny_store):
    net = make_net("resnet_tiny")
    s = make("spft", net, make_context, tiny_store, head_epochs=1, top_k="all", ema_decay=0.9)
    trainer = make_trainer(s, tiny_store)
    start = params_of(net)
    optimizer = s.build_optimizer()
    trainer.run_epoch(0, optimizer, None)  # stage 1: no EMA yet, the live network is evaluated
    assert s.ema.module is None and s.eval_model() is net
    after_stage1 = params_of(net)
    trainer.run_epoch(1, optimizer, None)  # stage 2: head + top block
    live, ema = params_of(net), {n: p.detach() for n, p in s.ema.module.net.named_parameters()}
    trained = changed(after_stage1, live)
    assert trained == block_names(net, {4, 5}) and changed(start, after_stage1) == block_names(net, {5})
    assert changed(live, ema) == trained  # the average lags behind every trained parameter
    # ... but it started from stage 1's weights, not from the random head
    head = [n for n in live if net.is_head(n)]
    for n in head:
        assert (ema[n] - after_stage1[n]).norm() < (ema[n] - start[n]).norm(), n

    scores, probs = trainer.evaluate(trainer.val)
    from medtl.training.trainer import predict
    ema_probs = predict(s.ema.module, trainer.val, trainer.norm, tiny_store.task, 256)
    live_probs = predict(net, trainer.val, trainer.norm, tiny_store.task, 256)
    np.testing.assert_array_equal(probs, ema_probs)
    assert not np.array_equal(probs, live_probs)
    assert s.uses_amp() and not trainer.amp  # mixed precision only on CUDA


def test_spft_multilabel_trains_with_class_weights(make_net, make_context, make_trainer, tiny_multilabel_store):
    store = tiny_multilabel_store
    net = make_net("densenet_tiny")
    s = make("spft", net, make_context, store, head_epochs=0)
    targets = store.targets("train")
    np.testing.assert_allclose(s.class_weights().numpy(), count_weights("multilabel", targets), rtol=1e-6)
    trainer = make_trainer(s, store)
    optimizer = s.build_optimizer()
    loss = trainer.run_epoch(0, optimizer, s.build_scheduler(optimizer))
    assert math.isfinite(loss)
    scores, _ = trainer.evaluate(trainer.val)
    assert set(scores) >= {"auroc", "map"}


def test_spft_ema_update_rule_is_eq7(make_net, make_context):
    """Eq. 7 with a fixed α, no warm-up: θ_EMA = α θ_EMA + (1 − α) θ at every update, from a copy of the weights
    when the average starts (here: at its first update, as nothing started it before)."""
    net = make_net("vgg_tiny")
    decay = 0.8
    s = make("spft", net, make_context, ema_decay=decay, head_epochs=0)
    before = params_of(net)
    s.after_step()
    assert s.ema_decay_now() == decay
    for n, p in s.ema.module.net.named_parameters():  # a copy, then one update with the same weights
        torch.testing.assert_close(p.detach(), before[n])
    for _ in range(2, 6):
        first = {n: p.detach().clone() for n, p in s.ema.module.net.named_parameters()}
        with torch.no_grad():
            for p in net.parameters():
                p.add_(1.0)
        live = params_of(net)
        s.after_step()
        assert s.ema_decay_now() == decay
        for n, p in s.ema.module.net.named_parameters():
            torch.testing.assert_close(p.detach(), decay * first[n] + (1 - decay) * live[n])
    assert make("spft", net, make_context, ema=False).eval_model() is net


def _state64(module) -> dict[str, torch.Tensor]:
    """Every entry of ``module``'s state dict, floating point ones in float64."""
    return {k: (v.detach().double() if v.is_floating_point() else v.detach()).clone()
            for k, v in module.state_dict().items()}


@pytest.mark.parametrize("alpha", [0.9, 0.999])
def test_spft_ema_through_fit_is_eq7_from_the_stage1_weights(alpha, make_context, tiny_store):
    """Through Trainer.fit from a real job's start (pretrained backbone, new head): no EMA in stage 1; when
    stage 2 begins, θ_EMA is a copy of the weights stage 1 left, and after every stage-2 optimizer step
    θ_EMA = α θ_EMA + (1 − α) θ with the configured α (eq. 7), recomputed here, in float64, from the live
    weights after each step. Parameters and BatchNorm statistics alike; the step counter is copied.
    Fails if the decay is another constant (0.99), warms up, or the average starts from other weights."""
    store = tiny_store
    net = _job_start_net("resnet_tiny", store.targets("train").shape[1], store)
    strategy = make("spft", net, make_context, store, head_epochs=1, top_k=1, ema_decay=alpha)
    stage2_start, live, average, stage1_steps = {}, [], [], []
    on_epoch_start, after_step = strategy.on_epoch_start, strategy.after_step

    def spy_epoch_start(epoch, optimizer, probe):
        if epoch == 1:  # stage 2 begins: the weights stage 1 left
            stage2_start.update(_state64(net.net))
        on_epoch_start(epoch, optimizer, probe)

    def spy_after_step():
        after_step()
        if strategy._epoch == 0:
            stage1_steps.append(strategy.ema.module)
        else:
            live.append(_state64(net.net))
            average.append(_state64(strategy.ema.module.net))

    strategy.on_epoch_start, strategy.after_step = spy_epoch_start, spy_after_step
    trainer_for(strategy, store, epochs=3, batch_size=8).fit()

    n_batches = -(-len(store.indices("train")) // 8)
    assert stage1_steps == [None] * n_batches  # stage 1: no average yet
    assert len(live) == 2 * n_batches and strategy.ema.updates == 2 * n_batches
    expected = dict(stage2_start)
    for t, (theta, got) in enumerate(zip(live, average), start=1):
        for k, v in got.items():
            if v.is_floating_point():
                expected[k] = alpha * expected[k] + (1 - alpha) * theta[k]
                torch.testing.assert_close(v, expected[k], rtol=1e-5, atol=1e-7, msg=f"update {t}: {k}")
            else:
                assert torch.equal(v, theta[k]), f"update {t}: {k}"
    # the check had something to check: the average is neither the live weights nor stage 1's
    moved = [k for k in expected if expected[k].is_floating_point() and not torch.equal(live[-1][k], stage2_start[k])]
    assert moved
    assert any(not torch.allclose(average[-1][k], live[-1][k], rtol=1e-4, atol=1e-6) for k in moved)
    assert any(not torch.allclose(average[-1][k], stage2_start[k], rtol=1e-4, atol=1e-6) for k in moved)


def test_spft_optimizer_groups(make_net, make_context):
    net = make_net("vgg_tiny")  # classifier.0/.3 sit in the head block but are pretrained, not the head
    s = make("spft", net, lambda n, _: make_context(n, lr=0.02), encoder_lr_ratio=0.1, weight_decay=0.03)
    opt = s.build_optimizer()
    assert isinstance(opt, torch.optim.AdamW)
    groups = {g["name"]: g for g in opt.param_groups}
    assert groups["encoder"]["lr"] == pytest.approx(0.002)
    assert groups["head"]["lr"] == pytest.approx(0.02)
    head_ids = {id(p) for p in net.head_module().parameters()}
    assert {id(p) for p in groups["head"]["params"]} == head_ids
    assert {id(p) for p in groups["encoder"]["params"]} == {id(p) for p in net.parameters()} - head_ids
    assert all(g["weight_decay"] == pytest.approx(0.03) for g in opt.param_groups)


def test_spft_cosine_schedule_decays_to_zero(make_net, make_context):
    net = make_net("vgg_tiny")
    epochs, steps = 4, 5
    s = make("spft", net, lambda n, _: make_context(n, lr=0.1, epochs=epochs, steps_per_epoch=steps))
    opt = s.build_optimizer()
    sched = s.build_scheduler(opt)
    head_lr = []
    for _ in range(epochs * steps):
        head_lr.append(opt.param_groups[1]["lr"])
        opt.step()
        sched.step()
    end = opt.param_groups[1]["lr"]
    assert head_lr[0] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(head_lr, head_lr[1:]))
    assert head_lr[len(head_lr) // 2] == pytest.approx(0.05, rel=1e-6)  # cosine midpoint
    assert head_lr[-1] < 0.01 * 0.1 and end == pytest.approx(0.0, abs=1e-12)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)  # encoder decays the same way


def test_spft_warmup_then_cosine(make_net, make_context):
    net = make_net("vgg_tiny")
    s = make("spft", net, lambda n, _: make_context(n, lr=0.1, epochs=4, steps_per_epoch=2), warmup_epochs=1)
    opt = s.build_optimizer()
    sched = s.build_scheduler(opt)
    lrs = []
    for _ in range(8):
        lrs.append(opt.param_groups[1]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.05) and lrs[1] == pytest.approx(0.1) and lrs[2] == pytest.approx(0.1)
    assert lrs[-1] < lrs[2] and opt.param_groups[1]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_spft_state_round_trip(make_net, make_context):
    net = make_net("resnet_tiny")
    s = make("spft", net, make_context, head_epochs=0)
    s.after_step()
    s.after_step()
    s.on_validation(0, [0.9, 0.5, 0.7])
    state = s.state_dict()
    other = make("spft", make_net("resnet_tiny", seed=5), make_context, head_epochs=0)
    other.after_step()
    assert not torch.equal(other.ema.module.net.conv1.weight, s.ema.module.net.conv1.weight)
    other.load_state_dict(state)
    assert other.ema.updates == 2 and other.ema_decay_now() == s.ema_decay_now()
    np.testing.assert_allclose(other.class_weights().numpy(), s.class_weights().numpy())
    for (n, a), (_, b) in zip(s.ema.module.state_dict().items(), other.ema.module.state_dict().items()):
        assert torch.equal(a, b), n


# -- registry and settings ---------------------------------------------------------------------------------
def test_every_strategy_is_registered():
    assert set(ALL_STRATEGIES) <= set(STRATEGIES.names())


def test_unknown_strategy_lists_known_names():
    with pytest.raises(UnknownNameError) as err:
        STRATEGIES.get("surgical")
    message = str(err.value)
    assert "surgical" in message
    for name in ALL_STRATEGIES:
        assert name in message


@pytest.mark.parametrize("name", ALL_STRATEGIES)
def test_unknown_setting_is_refused_by_name(name, make_net, make_context):
    net = make_net("vgg_tiny")
    with pytest.raises(ValueError, match="unfreez_every"):
        STRATEGIES.get(name)(make_context(net), unfreez_every=2)
    # "type" is the config key naming the strategy and is always accepted
    strategy = STRATEGIES.get(name)(make_context(net), type=name)
    assert "type" not in strategy.describe()


def test_settings_override_defaults(make_net, make_context):
    net = make_net("vgg_tiny")
    s = STRATEGIES.get("g_lf")(make_context(net), unfreeze_every=3)
    assert s.describe() == {"unfreeze_every": 3}
    s = STRATEGIES.get("l2_sp")(make_context(net), alpha=0.5)
    assert s.describe() == {"alpha": 0.5, "beta": 0.01}
    assert STRATEGIES.get("spft").defaults["head_epochs"] == make("spft", net, make_context).settings["head_epochs"]
    assert math.isclose(STRATEGIES.get("spft")(make_context(net), encoder_lr_ratio=0.5).settings["encoder_lr_ratio"],
                        0.5)


def test_spft_trains_multiclass_data_with_eq6_bce(make_context, tiny_store):
    """loss: bce (default): through fit, every SPFT batch of a multi-class dataset is scored with the per-class
    binary cross-entropy of eq. 6 on one-hot targets (class weights in stage 2); loss: task keeps the softmax
    cross-entropy. Predictions stay a softmax either way."""
    from medtl.training import trainer as trainer_module

    assert tiny_store.task == "multiclass"
    for loss, expected in (("bce", "multilabel"), ("task", "multiclass")):
        net = _job_start_net("resnet_tiny", 3, tiny_store)
        strategy = make("spft", net, make_context, tiny_store, head_epochs=1, top_k=1, ema=False, loss=loss)
        seen = []
        original = trainer_module.task_loss

        def spy(task, logits, y, weights):
            seen.append((task, weights is not None))
            return original(task, logits, y, weights)

        trainer_module.task_loss = spy
        try:
            trainer = trainer_for(strategy, tiny_store, epochs=2, batch_size=8)
            trainer.fit()
        finally:
            trainer_module.task_loss = original
        assert {t for t, _ in seen} == {expected}
        assert any(w for _, w in seen) and not all(w for _, w in seen)  # weights in stage 2 only
        _, probs = trainer.evaluate(trainer.val)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)  # softmax predictions


def test_spft_defaults_are_the_papers_values_where_it_gives_them():
    """Paper 2 §II: the top 10 layers (Table VI), encoder 3e-6 against head 5e-5, progressive unfreezing,
    class-aware weights, EMA, mixed precision, cosine annealing (no warm-up named), early stopping on validation
    AUC, eq. 6's loss, class weights and EMA from stage 2 (Fig. 6). The values it does not give are ours
    (docs/fidelity.md)."""
    d = STRATEGIES.get("spft").defaults
    assert d["top_k"] == 10
    assert d["encoder_lr_ratio"] == pytest.approx(3e-6 / 5e-5)
    assert d["progressive"] and d["class_weights"] and d["ema"] and d["amp"]
    assert d["warmup_epochs"] == 0 and d["monitor"] == "auroc" and d["loss"] == "bce"
    assert d["components_from"] == "stage2"


# -- the early-stopping monitor ---------------------------------------------------------------------------
def _imbalanced_store(root, task="multiclass"):
    """A 100-image store (train, val, test: 60, 20, 20) whose validation split is imbalanced: 16 / 2 / 2 images
    of the three classes (multi-class), or labels with 18, 4 and 2 positives among 20 (multi-label)."""
    from conftest import tiny_store_arrays
    from medtl.data.store import write_store

    images, table, meta = tiny_store_arrays(task=task, n=100)
    val = table["split"].to_numpy() == "val"
    assert val.sum() == 20
    if task == "multilabel":
        rows = np.arange(100)
        y = np.eye(3, dtype=int)[rows % 3] | np.eye(3, dtype=int)[(rows + 1) % 3] * (rows % 2)[:, None]
        y[val] = [[1, 0, 0]] * 16 + [[1, 1, 0]] * 2 + [[0, 1, 1]] * 2
    else:
        labels = np.arange(100) % 3
        labels[val] = [0] * 16 + [1] * 2 + [2] * 2
        y = np.eye(3, dtype=int)[labels]
    for c, name in enumerate(meta["classes"]):
        table[name] = y[:, c]

    def fill(out):
        out[:] = images

    return write_store(root, len(images), images.shape[1:3], images.shape[3], fill, table, meta)


def test_monitor_balanced_accuracy_selects_another_epoch_than_accuracy(tmp_path, make_context, monkeypatch):
    """Through the trainer's selection (Trainer.fit: validation metrics, the best epoch): on an imbalanced
    validation split the network predicts, epoch by epoch, (0) the majority class everywhere, (1) every
    minority image right and 10 of the 16 majority images, (2) a minority class everywhere. Accuracy
    (0.80, 0.70, 0.10) keeps epoch 0; balanced accuracy (1/3, 0.875, 1/3) keeps epoch 1. The history's
    values are scikit-learn's balanced_accuracy_score of the predicted labels."""
    from sklearn.metrics import accuracy_score, balanced_accuracy_score

    from medtl.training import trainer as trainer_module

    store = _imbalanced_store(tmp_path / "store")
    y_val = store.targets("val").argmax(axis=1)
    assert np.bincount(y_val).tolist() == [16, 2, 2]
    predicted = [np.zeros(20, int), np.r_[[0] * 10, [1] * 6, 1, 1, 2, 2], np.ones(20, int)]
    outcomes = {}
    for monitor in ("accuracy", "balanced_accuracy"):
        net = _job_start_net("resnet_tiny", 3, store)
        calls = iter(range(3))

        def scripted(model, data, norm, task, batch_size, autocast=None):
            labels = predicted[next(calls)]
            return np.eye(3)[labels] * 0.8 + 0.1  # rows sum to 1, argmax = labels

        monkeypatch.setattr(trainer_module, "predict", scripted)
        strategy = make("ft", net, make_context, store)
        outcomes[monitor] = trainer_for(strategy, store, epochs=3, monitor=monitor,
                                        metrics=["accuracy", "balanced_accuracy"]).fit()
    for monitor, outcome in outcomes.items():
        for epoch, row in enumerate(outcome.history):
            assert row["val_accuracy"] == pytest.approx(accuracy_score(y_val, predicted[epoch]))
            assert row["val_balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y_val, predicted[epoch]))
    assert [r["val_balanced_accuracy"] for r in outcomes["accuracy"].history] == pytest.approx([1 / 3, 0.875, 1 / 3])
    assert outcomes["accuracy"].best_epoch == 0 and outcomes["balanced_accuracy"].best_epoch == 1
    assert outcomes["balanced_accuracy"].best_score == pytest.approx(0.875)


@pytest.mark.parametrize("task", ["multiclass", "multilabel"])
def test_monitored_balanced_accuracy_is_sklearns_through_fit(task, tmp_path, make_context):
    """Real training, monitor balanced_accuracy: each epoch's monitored value (history, best score) is computed
    here independently from the validation probabilities: scikit-learn's balanced_accuracy_score of the argmax
    (multi-class); the mean over labels with both positive and negative images of each label's
    balanced_accuracy_score at threshold 0.5 (multi-label)."""
    from sklearn.metrics import balanced_accuracy_score

    from medtl.training import trainer as trainer_module

    store = _imbalanced_store(tmp_path / "store", task)
    y = np.asarray(store.targets("val"))
    seen = []
    original = trainer_module.predict

    def spy(*args, **kwargs):
        probs = original(*args, **kwargs)
        seen.append(probs)
        return probs

    trainer_module.predict = spy
    try:
        net = _job_start_net("resnet_tiny", 3, store)
        strategy = make("ft", net, make_context, store)
        outcome = trainer_for(strategy, store, epochs=3, monitor="balanced_accuracy").fit()
    finally:
        trainer_module.predict = original
    assert len(seen) == 3
    expected = []
    for probs in seen:
        if task == "multiclass":
            expected.append(balanced_accuracy_score(y.argmax(1), probs.argmax(1)))
        else:
            both = [c for c in range(y.shape[1]) if 0 < y[:, c].sum() < len(y)]
            expected.append(np.mean([balanced_accuracy_score(y[:, c], probs[:, c] >= 0.5) for c in both]))
    assert [r["val_balanced_accuracy"] for r in outcome.history] == pytest.approx(expected, abs=1e-12)
    assert outcome.best_score == pytest.approx(max(expected)) and outcome.best_epoch == int(np.argmax(expected))
