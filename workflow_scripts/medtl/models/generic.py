"""Any timm or torchvision classification model by name (``timm.<model>``, ``torchvision.<model>``): how
it is built and where its parameter blocks are, found from the model itself rather than written per family.

- timm: the model's own ``group_matcher(coarse=True)`` (timm's ``group_parameters``), the grouping timm
  uses for layer-wise learning-rate decay: stem, one block per stage, head. ResNet-18 gives 6 blocks
  (stem, 4 stages, fc), ConvNeXt-T 6 (stem, 4 stages, norm + fc), EfficientNet-B0 9 (stem, 7 stages with
  the last conv, classifier).
- torchvision (which has no such grouping): the stride stages, found by one forward pass in eval mode:
  a new block starts where the feature map gets smaller; everything after the last feature map larger than
  1 x 1 (pooling, classifier) is the head's block. ResNet-18 gives 6 blocks, as timm's grouping does.

The head, the layer replaced for the task, is the model's classifier: timm's ``pretrained_cfg["classifier"]``
(several for models with a distillation head, whose outputs the model averages), else the last linear layer.
"""
from __future__ import annotations

import torch
from torch import nn

#: input of the forward pass that finds torchvision's stages (some models need exactly 224 px)
PROBE_SIZE = 224


def build_timm(num_classes: int, model: str) -> nn.Module:
    import timm

    try:
        return timm.create_model(model, pretrained=False, num_classes=num_classes)
    except RuntimeError as err:  # "Unknown model"
        raise ValueError(f"timm cannot build '{model}': {err}") from None


def build_torchvision(num_classes: int, model: str) -> nn.Module:
    from torchvision import models

    if model not in models.list_models(module=models):
        raise ValueError(f"torchvision has no classification model '{model}'")
    return models.get_model(model, weights=None, num_classes=num_classes)


def classifier_names(net: nn.Module, num_classes: int | None = None) -> tuple[str, ...]:
    """The modules replaced for the task: timm's declared classifier(s) (``pretrained_cfg["classifier"]``, a
    tuple for models with a distillation head: deit / levit / efficientformer ``('head', 'head_dist')``,
    crossvit ``('head.0', 'head.1')``; timm's own ``reset_classifier`` replaces them all), else the last
    linear layer."""
    declared = (getattr(net, "pretrained_cfg", None) or {}).get("classifier")
    names = (declared,) if isinstance(declared, str) else tuple(declared or ())
    modules = dict(net.named_modules())
    if names and all(n in modules for n in names):
        return names
    linear = [n for n, m in net.named_modules() if isinstance(m, nn.Linear)]
    if not linear or (num_classes is not None and net.get_submodule(linear[-1]).out_features != num_classes):
        raise ValueError(f"{type(net).__name__}: no final linear classifier (with {num_classes} outputs) found; "
                         "its head cannot be replaced")
    return (linear[-1],)


def covering_prefixes(net: nn.Module, groups: list[list[str]]) -> list[list[str]]:
    """Block prefixes from groups of parameter names: the largest modules whose parameters all fall in one
    group (so that a frozen block's BatchNorm layers can be found and kept in eval mode), and the names of
    parameters held directly by a module that spans groups (a ViT's ``cls_token``)."""
    block_of = {name: i for i, names in enumerate(groups) for name in names}
    out: list[list[str]] = [[] for _ in groups]

    def visit(prefix: str, module: nn.Module) -> None:
        blocks = {block_of[prefix + n] for n, _ in module.named_parameters()}
        if not blocks:
            return
        if prefix and len(blocks) == 1:
            out[blocks.pop()].append(prefix[:-1])
            return
        for n, _ in module.named_parameters(recurse=False):
            out[block_of[prefix + n]].append(prefix + n)
        for child, sub in module.named_children():
            visit(f"{prefix}{child}.", sub)

    visit("", net)
    return [p for p in out if p]


def _head_last(groups: list[list[str]], heads: tuple[str, ...]) -> list[list[str]]:
    """The heads' parameters in the last block: moved into a block of their own where the grouping put
    them elsewhere (every strategy counts the last block as the head's)."""
    in_head = lambda n: any(n == h or n.startswith(h + ".") for h in heads)  # noqa: E731
    if all(in_head(n) or i == len(groups) - 1 for i, names in enumerate(groups) for n in names if in_head(n)):
        return groups
    rest = [[n for n in names if not in_head(n)] for names in groups]
    return [g for g in rest if g] + [[n for names in groups for n in names if in_head(n)]]


def timm_blocks(net: nn.Module) -> list[list[str]]:
    """Blocks from timm's coarse grouping of the model (stem, stages, head); for the few timm models
    without a usable one (metaformer, rdnet, coat), the stride stages, as for torchvision models."""
    from timm.models._manipulate import group_parameters

    try:
        grouped = group_parameters(net, net.group_matcher(coarse=True))
    except (AttributeError, AssertionError, NotImplementedError):  # no grouping (metaformer), no coarse one (rdnet)
        return stage_blocks(net)
    if sum(len(names) for names in grouped.values()) != sum(1 for _ in net.named_parameters()):
        return stage_blocks(net)  # a grouping that misses parameters (coat)
    groups = [grouped[k] for k in sorted(grouped)]
    return covering_prefixes(net, _head_last(groups, classifier_names(net)))


_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def _units(net: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model's children, containers opened (``features``, ``layer1``, dense blocks), holding parameters."""
    out = []

    def visit(prefix: str, module: nn.Module) -> None:
        for name, child in module.named_children():
            if not any(True for _ in child.parameters()):
                continue
            if isinstance(child, _CONTAINERS):
                visit(f"{prefix}{name}.", child)
            else:
                out.append((prefix + name, child))

    visit("", net)
    return out


@torch.no_grad()
def stage_blocks(net: nn.Module) -> list[list[str]]:
    """Blocks at the model's stride stages, found by one forward pass in eval mode (see the module docstring)."""
    units = _units(net)
    order: dict[str, int] = {}
    size: dict[str, int | None] = {}

    def hook(name):
        def record(_module, _args, output):
            if name not in order:
                order[name] = len(order)
                size[name] = output.shape[-2] * output.shape[-1] if torch.is_tensor(output) and output.dim() == 4 \
                    else None
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in units]
    p = next(net.parameters())
    training = net.training
    try:
        net.eval()
        net(torch.zeros(1, 3, PROBE_SIZE, PROBE_SIZE, device=p.device, dtype=p.dtype))
    finally:
        net.train(training)
        for h in handles:
            h.remove()
    unused = [n for n, _ in units if n not in order]
    if unused:
        raise ValueError(f"{type(net).__name__}: modules {unused[:3]} do not run in evaluation mode (auxiliary "
                         "heads?); its blocks cannot be found from its stages")
    ran = sorted((n for n, _ in units), key=order.get)
    spatial = [i for i, n in enumerate(ran) if (size[n] or 0) > 1]
    last = spatial[-1] if spatial else -1
    blocks: list[list[str]] = []
    current = None
    for name in ran[:last + 1]:
        if blocks and size[name] is not None and current is not None and size[name] < current:
            blocks.append([])
        if not blocks:
            blocks.append([])
        blocks[-1].append(name)
        current = size[name] if size[name] is not None else current
    blocks.append(ran[last + 1:])
    direct = [n for n, _ in net.named_parameters(recurse=False)]
    blocks[0] = direct + blocks[0]  # e.g. a class token: with the stem
    for head in classifier_names(net):
        if not any(n == head or head.startswith(n + ".") for n in blocks[-1]):
            raise ValueError(f"{type(net).__name__}: its classifier '{head}' does not run after its last feature map")
    if len(blocks) < 3:
        raise ValueError(f"{type(net).__name__}: no stride stages found (a transformer?); use timm.<name>, whose "
                         "grouping knows its layers")
    modules = dict(net.named_modules())
    groups = [[n for unit in block for n in ([f"{unit}.{p}" for p, _ in modules[unit].named_parameters()]
                                             if unit in modules else [unit])] for block in blocks]
    return covering_prefixes(net, groups)
