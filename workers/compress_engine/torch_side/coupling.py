"""Which channel groups torch-pruning can remove from a rebuilt module without breaking it.

torch-pruning couples the channels that must go together (a conv's outputs, the BatchNorm
after it, the inputs of every layer reading them, both sides of an add or of a
squeeze-excite multiply) by tracing the module's forward. Some structures it prunes
inconsistently:

- grouped convolutions other than the two shapes it knows: a depthwise conv (groups = input
  channels = output channels) and a grouped conv whose groups hold several input and output
  channels each. A conv with groups = output channels < input channels is taken for depthwise,
  and a depthwise conv with a channel multiplier (groups = input channels < output channels)
  is pruned as if it were dense; either leaves the weights and `groups` disagreeing
  ("Given groups=1, weight of size [4, 1, 1, 1], expected input[1, 2, 1, 1] to have 1
  channels");
- per-channel constants that onnx2torch keeps outside any layer (a scale multiplied in, a
  Reshape to a constant channel count): torch-pruning cannot see them, so they keep the old
  channel count.

Such layers are kept whole, and so is every group whose channels reach them. What the rules
miss, a dry run finds: prune a copy, run it, and keep whole the groups that touch the layer it
fails in (or, when the failing op belongs to no group, the groups that break it when pruned
alone).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn


def unsupported_convs(layers: dict[str, nn.Module]) -> dict[str, str]:
    """Grouped convolutions torch-pruning does not prune consistently, with the reason."""
    from torch import nn

    found = {}
    for name, m in layers.items():
        if not isinstance(m, nn.modules.conv._ConvNd) or m.groups == 1:
            continue
        depthwise = m.groups == m.in_channels == m.out_channels
        grouped = m.groups < m.in_channels and m.groups < m.out_channels
        if depthwise or (grouped and not m.transposed):
            continue
        found[name] = (
            f"a grouped convolution ({m.in_channels} -> {m.out_channels} channels in "
            f"{m.groups} groups) whose channels torch-pruning cannot remove consistently"
        )
    return found


def group_members(
    module: nn.Module, example: Any, roots: dict[str, nn.Module]
) -> dict[str, set[str]]:
    """Per root layer, the names of the modules whose channels change when its output
    channels are pruned (the root, the layers coupled with it and the layers reading it)."""
    import torch_pruning as tp

    graph = tp.DependencyGraph().build_dependency(module, example_inputs=example)
    named = {m: n for n, m in module.named_modules()}
    members: dict[str, set[str]] = {}
    for name, layer in roots.items():
        pruner = graph.get_pruner_of_module(layer)
        if pruner is None or layer not in graph.module2node or not pruner.get_out_channels(layer):
            continue
        group = graph.get_pruning_group(layer, pruner.prune_out_channels, idxs=[0])
        found = {name}
        for dep, _ in group:
            for node in (dep.source, dep.target):
                if node.module in named:
                    found.add(named[node.module])
        members[name] = found
    return members


def roots_touching(layer: str, members: dict[str, set[str]], exclude: set[str]) -> list[str]:
    """The roots whose group changes `layer`'s channels, except those in `exclude`."""
    return [root for root, names in members.items() if layer in names and root not in exclude]


def roots_breaking(
    module: nn.Module,
    candidates: list[str],
    members: dict[str, set[str]],
    prune_only: Callable[[nn.Module, set[str]], None],
) -> list[str]:
    """Of `candidates`, the roots whose group alone breaks the module when pruned.

    `prune_only(copy, names)` prunes a copy leaving every layer outside `names` whole, and
    raises (or the check inside it does) when the pruned copy does not run."""
    from compress_engine.errors import EngineError

    breaking = []
    for root in candidates:
        trial = copy.deepcopy(module)
        try:
            prune_only(trial, members.get(root, {root}))
        except EngineError:
            breaking.append(root)
    return breaking
