""""Any timm or torchvision model by name", held to its word: one model of every family each library
registers is built as a job builds it (classifier found and replaced, parameter blocks from the model's own
grouping or its stride stages), or refused by name while planning (``TIMM_REFUSED``, ``TORCHVISION_REFUSED``).
Built on the ``meta`` device (no memory, no weights); models with several classifiers, and small ones, also
run a two-class forward on the CPU."""
from __future__ import annotations

import collections

import pytest
import torch

from medtl.models import build_network
from medtl.models.spec import ARCHS, TIMM_REFUSED, TORCHVISION_REFUSED
from medtl.registry import UnknownNameError

#: models with fewer parameters than this run a real two-class forward (a few seconds in all)
SMALL = 6e6


def _families(names_by_module: dict[str, list[str]], several_heads=lambda name: False) -> dict[str, list[str]]:
    """Per family: its shortest-named model, and its shortest-named model with several classifiers."""
    picks = {}
    for family, names in sorted(names_by_module.items()):
        names = sorted(names, key=lambda n: (len(n), n))
        multi = [n for n in names if several_heads(n)]
        picks[family] = list(dict.fromkeys(names[:1] + multi[:1]))
    return picks


def _check(arch: str, input_size) -> str:
    """Build as a job does; returns 'built' or 'forward' (also ran a real forward)."""
    try:
        with torch.device("meta"):
            net = build_network(arch, 2)
    except NotImplementedError:  # an initialiser that copies tensors (torchvision's regnet): build for real
        net = build_network(arch, 2)
    assert net.n_blocks >= 3, f"{arch}: {net.n_blocks} blocks"
    last = net.block_prefixes[-1]
    for head in net.head_names:
        module = net.net.get_submodule(head)
        assert getattr(module, "out_features", 2) == 2, f"{arch}: classifier {head} not replaced"
        assert any(head == p or head.startswith(p + ".") for p in last), f"{arch}: {head} not in the last block"
    params = sum(p.numel() for p in net.parameters())
    if len(net.head_names) == 1 and params > SMALL:
        return "built"
    net = build_network(arch, 2).eval()
    x = torch.randn(2, *input_size)
    with torch.no_grad():
        out = net(x)
        assert out.shape == (2, 2)
        # the cached-features path (linear probing) computes what the model computes
        torch.testing.assert_close(net.head_module()(net.features(x).flatten(1)), out, atol=1e-5, rtol=1e-4)
    return "forward"


def test_every_timm_family_builds_or_is_refused_by_name(capsys):
    import timm
    from timm.models import _registry, get_pretrained_cfg

    by_module = collections.defaultdict(list)
    for name in timm.list_models():
        by_module[_registry._model_to_module[name]].append(name)
    assert set(TIMM_REFUSED) <= set(by_module), "a refused family is no longer in timm"

    def several_heads(name):
        cfg = get_pretrained_cfg(name)
        return cfg is not None and isinstance(cfg.classifier, (tuple, list))

    counts = collections.Counter()
    crashed = []
    for family, names in _families(by_module, several_heads).items():
        for name in names:
            if family in TIMM_REFUSED:
                with pytest.raises(UnknownNameError, match=f"family '{family}'"):
                    ARCHS.get(f"timm.{name}")
                counts["refused"] += 1
                continue
            cfg = get_pretrained_cfg(name)
            try:
                counts[_check(f"timm.{name}", (cfg.input_size if cfg else (3, 224, 224)))] += 1
            except Exception as err:  # collected, so that one run names every family that breaks
                crashed.append(f"{family} ({name}): {type(err).__name__}: {err}")
    with capsys.disabled():
        print(f"\n[timm sweep] timm {timm.__version__}: {len(by_module)} families, "
              f"{sum(counts.values())} models checked: {counts['forward']} built and run, {counts['built']} "
              f"built, {counts['refused']} refused by name ({len(TIMM_REFUSED)} families); {len(crashed)} crashed")
    assert not crashed, "\n".join(crashed)


def test_every_torchvision_family_builds_or_is_refused_by_name(capsys):
    from torchvision import models

    by_module = collections.defaultdict(list)
    for name in models.list_models(module=models):
        by_module[models.get_model_builder(name).__module__.rsplit(".", 1)[1]].append(name)
    assert set(TORCHVISION_REFUSED) <= set(by_module)
    counts = collections.Counter()
    crashed = []
    for family, names in _families(by_module).items():
        name = names[0]
        if family in TORCHVISION_REFUSED:
            with pytest.raises(UnknownNameError, match=f"family '{family}'"):
                ARCHS.get(f"torchvision.{name}")
            counts["refused"] += 1
            continue
        try:
            counts[_check(f"torchvision.{name}", (3, 224, 224))] += 1
        except Exception as err:
            crashed.append(f"{family} ({name}): {type(err).__name__}: {err}")
    with capsys.disabled():
        print(f"\n[torchvision sweep] {len(by_module)} families: {counts['forward']} built and run, "
              f"{counts['built']} built, {counts['refused']} refused by name; {len(crashed)} crashed")
    assert not crashed, "\n".join(crashed)
