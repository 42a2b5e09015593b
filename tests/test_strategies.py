"""Each fine-tuning strategy checked for the property that defines it."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

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
@pytest.mark.parametrize("arch", ["resnet_tiny", "densenet_tiny"])
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
def _rgn_net(make_net):
    """A network without all-zero tensors (as after pretraining; fresh BatchNorm biases are exactly 0)."""
    net = make_net("resnet_tiny")
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in net.parameters():
            if float(p.norm()) == 0:
                p.add_(torch.randn(p.shape, generator=gen) * 0.1)
    return net


def _batch_probe(net, store, rows):
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


def test_auto_rgn_rates_follow_relative_gradient_norms(make_net, make_context, tiny_store):
    net = _rgn_net(make_net)
    strategy = make("auto_rgn", net, make_context, tiny_store)
    optimizer = strategy.build_optimizer()
    probe = _batch_probe(net, tiny_store, np.arange(8))
    strategy.on_epoch_start(0, optimizer, probe)
    rates = {g["name"]: g["lr"] for g in optimizer.param_groups}
    assert all(p.grad is None for p in net.parameters())  # the probe leaves no gradient behind

    # relative gradient norms computed independently, on the same batch
    probe()
    rgn = {n: float(p.grad.norm()) / float(p.detach().norm()) for n, p in net.net.named_parameters()}
    net.zero_grad(set_to_none=True)
    top = max(rgn, key=rgn.get)
    lr = strategy.ctx.lr
    assert rates[top] == pytest.approx(lr, rel=1e-9)
    assert max(rates, key=rates.get) == top
    assert max(rates.values()) == pytest.approx(lr)
    for n in rgn:
        assert rates[n] == pytest.approx(lr * rgn[n] / rgn[top], rel=1e-4, abs=1e-12), n
    assert len(set(np.round(list(rates.values()), 12))) > len(rates) // 2  # genuinely per-tensor rates


def test_auto_rgn_recomputes_rates_every_epoch(make_net, make_context, make_trainer, tiny_store):
    net = _rgn_net(make_net)
    strategy = make("auto_rgn", net, make_context, tiny_store)
    trainer = make_trainer(strategy, tiny_store)
    optimizer = strategy.build_optimizer()
    seen = []
    for epoch in range(2):
        trainer.run_epoch(epoch, optimizer, None)
        assert {g["name"]: g["lr"] for g in optimizer.param_groups} == strategy.last_rates
        seen.append(dict(strategy.last_rates))
    assert seen[0] != seen[1]
    assert max(seen[1].values()) == pytest.approx(strategy.ctx.lr)


def test_auto_rgn_probes_distinct_batches(make_net, make_context, make_trainer, tiny_store):
    """probe_batches=2 must look at two different training batches, not the first one twice."""
    net = _rgn_net(make_net)
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
    s = make("spft", net, make_context, progressive=False)
    assert all(s.trainable_blocks(e) == {5} for e in range(10))
    s = make("spft", net, make_context, head_epochs=2, top_k=2)
    s.apply_freezing(2)
    for n, block, _, p in net.named_block_parameters():
        assert p.requires_grad == (block in {4, 5}), n


def test_spft_count_weights():
    y = np.eye(3)[[0] * 6 + [1] * 3 + [2] * 1]
    w = count_weights("multiclass", y)
    assert w.mean() == pytest.approx(1.0)
    np.testing.assert_allclose(w, [1 / 3, 2 / 3, 2.0])  # inverse frequency 1/6 : 1/3 : 1, mean 1
    assert w[2] > w[1] > w[0]

    ml = np.array([[1, 1, 0], [1, 0, 0], [1, 0, 0], [0, 1, 1], [0, 0, 0], [1, 0, 0]])
    w = count_weights("multilabel", ml)  # negatives/positives: 2/4, 4/2, 5/1
    np.testing.assert_allclose(w, np.array([0.5, 2.0, 5.0]) / 2.5)
    assert w.mean() == pytest.approx(1.0)
    assert w[2] > w[1] > w[0]


def test_spft_refine_weights_favours_the_weakest_class():
    w = np.array([0.5, 1.0, 1.5])
    out = refine_weights(w, [0.9, 0.6, 0.8], gamma=0.5)
    assert out.mean() == pytest.approx(1.0)
    assert out[1] / w[1] > out[0] / w[0] and out[1] / w[1] > out[2] / w[2]
    assert out[1] > w[1]
    np.testing.assert_allclose(refine_weights(w, [0.9, 0.6, 0.8], gamma=0.0), w)
    np.testing.assert_allclose(refine_weights(w, [float("nan")] * 3, gamma=0.5), w)
    part = refine_weights(w, [0.9, float("nan"), 0.7], gamma=0.5)  # a class absent from validation
    assert part.mean() == pytest.approx(1.0) and part[2] / w[2] > part[0] / w[0]


def test_spft_validation_refines_the_loss_weights(make_net, make_context):
    net = make_net("resnet_tiny")
    targets = np.eye(3, dtype=np.float32)[[0] * 6 + [1] * 3 + [2]]
    s = make("spft", net, lambda n, _: make_context(n, train_targets=targets), refine_gamma=1.0)
    before = s.class_weights().numpy()
    np.testing.assert_allclose(before, [1 / 3, 2 / 3, 2.0], rtol=1e-6)
    s.on_validation(0, [0.95, 0.5, 0.9])
    after = s.class_weights().numpy()
    assert after.mean() == pytest.approx(1.0, rel=1e-6)
    assert after[1] / before[1] > max(after[0] / before[0], after[2] / before[2])
    assert make("spft", net, make_context, class_weights=False).class_weights() is None


def test_spft_evaluates_the_ema_weights(make_net, make_context, make_trainer, tiny_store):
    net = make_net("resnet_tiny")
    s = make("spft", net, make_context, tiny_store, head_epochs=0, top_k="all", ema_decay=0.9)
    assert s.eval_model() is s.ema.module and s.eval_model() is not net
    trainer = make_trainer(s, tiny_store)
    start = params_of(net)
    train_epochs(trainer, range(2))  # head + top block, then head + top two blocks
    live, ema = params_of(net), {n: p.detach() for n, p in s.ema.module.net.named_parameters()}
    trained = changed(start, live)
    assert trained == block_names(net, {3, 4, 5})
    assert changed(live, ema) == trained  # the average lags behind every trained parameter

    # evaluation goes through the EMA model
    scores, probs = trainer.evaluate(trainer.val)
    from medtl.training.trainer import predict
    ema_probs = predict(s.ema.module, trainer.val, trainer.norm, tiny_store.task, 256)
    live_probs = predict(net, trainer.val, trainer.norm, tiny_store.task, 256)
    np.testing.assert_array_equal(probs, ema_probs)
    assert not np.array_equal(probs, live_probs)
    assert s.uses_amp() and not trainer.amp  # mixed precision only on CUDA


def test_spft_multilabel_uses_positive_weights(make_net, make_context, make_trainer, tiny_multilabel_store):
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


def test_spft_ema_update_rule(make_net, make_context):
    net = make_net("vgg_tiny")
    decay = 0.8
    s = make("spft", net, make_context, ema_decay=decay)
    s.after_step()  # first update copies
    first = params_of(net)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    s.after_step()
    for n, p in s.ema.module.net.named_parameters():
        torch.testing.assert_close(p.detach(), decay * first[n] + (1 - decay) * (first[n] + 1.0))
    assert make("spft", net, make_context, ema=False).eval_model() is net


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
    s = make("spft", net, make_context)
    s.after_step()
    s.on_validation(0, [0.9, 0.5, 0.7])
    state = s.state_dict()
    other = make("spft", make_net("resnet_tiny", seed=5), make_context)
    assert not torch.equal(other.ema.module.net.conv1.weight, s.ema.module.net.conv1.weight)
    other.load_state_dict(state)
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
