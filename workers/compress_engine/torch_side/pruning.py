"""Structured (channel) pruning with torch-pruning's dependency graph, and unstructured
magnitude pruning, on a module rebuilt from ONNX.

Channel pruning removes whole output channels and every weight that reads them, so the
exported graph is smaller; the layers that produce the model's outputs are never pruned,
so the interface is unchanged. Before it prunes the module it prunes a copy and runs it
(`keep_consistent`): channel groups torch-pruning cannot remove consistently (coupling.py)
are kept whole and named in the report, and a model where that is not enough is refused
with the layer that breaks, never left to fail later.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from compress_engine.errors import EngineError, short_message
from compress_engine.report import PrunedLayer, PruneSearchPoint
from compress_engine.torch_configs import PruneConfig
from compress_engine.torch_side import coupling
from compress_engine.torch_side.layer_errors import LayerFailure, describe, layer_errors

if TYPE_CHECKING:
    import torch
    from torch import nn

_NOTHING_TO_PRUNE = (
    "Channel pruning found no layer it may remove channels from: it works on Conv and "
    "Gemm (fully connected) layers, and the layers producing the outputs, and any in "
    "prune.ignore, stay whole. MatMul layers with constant weights are not supported yet; "
    "method magnitude or quantization still apply."
)
# Binary-search steps over the amount when a MACs/parameter target is given.
SEARCH_STEPS = 10
MAX_AMOUNT = 0.95
# Dry runs before giving up on keeping the pruned graph consistent, and the most groups
# pruned one by one to find the one that breaks it (each is a copy and a traced forward).
MAX_REPAIRS = 6
MAX_PROBES = 64
_WHAT_TO_DO = "List the layer in prune.ignore, or use method magnitude."


class PruneFailure(EngineError):
    """torch-pruning itself failed on the graph (not a setting the user chose)."""


@dataclass
class ChannelPlan:
    """Everything pruning needs besides the config."""

    example: tuple  # example inputs (torch tensors), batch of at least 1
    names: dict[str, str]  # module name -> ONNX node name
    # Scores channels for taylor importance: a loss to backpropagate, on a few batches.
    loss_fn: Callable[[nn.Module], torch.Tensor] | None = None
    # Between iterative steps: recover the model (distillation from the unpruned one).
    recover: Callable[[nn.Module, int], None] | None = None
    search: list[PruneSearchPoint] = field(default_factory=list)
    # Layers kept whole because removing their channels would break the graph: module name
    # -> why (keep_consistent fills it).
    whole: dict[str, str] = field(default_factory=dict)
    # The unpruned module's output shapes on `example`: pruning must keep them.
    output_shapes: list[tuple[int, ...]] | None = None


def prunable_layers(module: nn.Module) -> dict[str, nn.Module]:
    """Conv and Linear modules by name, in graph order."""
    from torch import nn

    # Transposed convs too: torch-pruning prunes them, so an output one must be known to
    # stay whole.
    kinds = (nn.modules.conv._ConvNd, nn.Linear)
    return {n: m for n, m in module.named_modules() if isinstance(m, kinds)}


def output_layers(module: nn.Module) -> list[str]:
    """Names of the weighted layers whose results reach a graph output without passing
    another weighted layer: pruning them would change the model's outputs' shapes."""
    import torch.fx

    if not isinstance(module, torch.fx.GraphModule):
        return []
    layers = prunable_layers(module)
    found: list[str] = []
    output = next(n for n in module.graph.nodes if n.op == "output")
    stack = list(output.all_input_nodes)
    seen = set()
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        if node.op == "call_module" and node.target in layers:
            found.append(str(node.target))
            continue
        stack.extend(node.all_input_nodes)
    return sorted(set(found))


def resolve_ignored(module: nn.Module, cfg: PruneConfig, names: dict[str, str]) -> list[str]:
    """Module names left whole: the output layers and the ones the user named."""
    user = user_ignored(cfg, prunable_layers(module), names)
    return list(dict.fromkeys([*output_layers(module), *user]))


def user_ignored(
    cfg: PruneConfig, layers: dict[str, nn.Module], names: dict[str, str]
) -> list[str]:
    """Module names of the layers in prune.ignore (torch or ONNX node names); EngineError
    naming the prunable layers if one is not among them."""
    by_onnx = {onnx: mod for mod, onnx in names.items()}
    found, unknown = [], []
    for name in cfg.ignore:
        mod = name if name in layers else by_onnx.get(name) or by_onnx.get("/" + name.lstrip("/"))
        if mod is None or mod not in layers:
            unknown.append(name)
        else:
            found.append(mod)
    if unknown:
        shown = ", ".join(names.get(m, m) for m in list(layers)[:12])
        raise EngineError(
            f"prune.ignore names {', '.join(map(repr, unknown))}, which are not prunable layers "
            f"of this model; its Conv/Gemm layers are: {shown}"
        )
    return found


def count(module: nn.Module, example: tuple) -> tuple[int, int]:
    """(MACs, parameters) of one forward pass on `example`, torch-pruning's counter."""
    import torch_pruning as tp

    macs, params = tp.utils.count_ops_and_params(module, _one(example))
    return int(macs), int(params)


def _one(example: tuple) -> Any:
    return example[0] if len(example) == 1 else example


def _importance(cfg: PruneConfig) -> Any:
    import torch_pruning as tp

    if cfg.importance == "l1":
        return tp.importance.MagnitudeImportance(p=1)
    if cfg.importance == "l2":
        return tp.importance.MagnitudeImportance(p=2)
    if cfg.importance == "taylor":
        return tp.importance.TaylorImportance()
    return tp.importance.RandomImportance()


def channel_prune(
    module: nn.Module, cfg: PruneConfig, plan: ChannelPlan
) -> tuple[float, str | None]:
    """Prune `module` in place; returns (amount applied, target text or None)."""
    target = _target(cfg)
    amount = cfg.amount
    if target is not None:
        amount = _search_amount(module, cfg, plan, *target)
    _prune(module, cfg, plan, amount, cfg.iterations, plan.recover)
    check_pruned(module, plan)
    label = None if target is None else f"{target[0]}<={target[1]:g}"
    return amount, label


def keep_consistent(module: nn.Module, cfg: PruneConfig, plan: ChannelPlan) -> None:
    """Fill `plan.whole` with the layers pruning must leave whole for the pruned module to
    run, proven by pruning a copy at `cfg.amount` and running it on `plan.example`.

    EngineError naming the layer when no set of whole layers makes the copy run."""
    layers = prunable_layers(module)
    user_kept = set(resolve_ignored(module, cfg, plan.names))
    roots = {n: m for n, m in layers.items() if n not in user_kept}
    plan.output_shapes = _output_shapes(module, plan)
    try:
        members = coupling.group_members(module, _one(plan.example), roots)
    except Exception as exc:
        raise EngineError(
            "Channel pruning cannot trace this model's graph (torch-pruning: "
            f"{short_message(exc)}); use method magnitude, or quantization steps alone."
        ) from None
    whole = coupling.unsupported_convs(layers)
    for layer in list(whole):
        for root in coupling.roots_touching(layer, members, {*whole, *user_kept}):
            whole[root] = f"its channels feed {_name(module, layer, plan)}, which stays whole"
    plan.whole = whole
    # Which channels go does not change which layers couple: score by magnitude, no data.
    dry = cfg.model_copy(update={"importance": "l2", "iterations": 1})
    failed: EngineError | None = None
    for _ in range(MAX_REPAIRS):
        try:
            _prune(copy.deepcopy(module), dry, plan, cfg.amount, 1, None, check=True)
            return
        except (PruneFailure, LayerFailure) as exc:
            failed = exc
        kept = {*user_kept, *plan.whole}
        layer = failed.layer if isinstance(failed, LayerFailure) else None
        culprits = coupling.roots_touching(layer, members, kept) if layer else []
        candidates = [r for r in members if r not in kept]
        if not culprits and len(candidates) <= MAX_PROBES:
            culprits = coupling.roots_breaking(
                module,
                candidates,
                members,
                lambda trial, names: _prune_only(trial, dry, plan, names),
            )
        if not culprits:
            break
        where = f"the pruned model failed at {_name(module, layer, plan)}" if layer else str(failed)
        for root in culprits:
            plan.whole[root] = f"removing its channels breaks the graph ({where})"
    raise EngineError(
        f"Channel pruning cannot keep this model's graph consistent: {failed} Quantization "
        "steps alone still work on it."
    )


def _prune_only(module: nn.Module, cfg: PruneConfig, plan: ChannelPlan, names: set[str]) -> None:
    """Prune `module` leaving every layer outside `names` whole, then check it runs."""
    others = {n: "probe" for n in prunable_layers(module) if n not in names}
    probe = ChannelPlan(
        example=plan.example,
        names=plan.names,
        whole={**plan.whole, **others},
        output_shapes=plan.output_shapes,
    )
    _prune(module, cfg, probe, cfg.amount, 1, None, check=True)


def check_pruned(module: nn.Module, plan: ChannelPlan) -> None:
    """LayerFailure (an EngineError) naming the layer when the pruned `module` does not run
    on the example, or returns other shapes than before."""
    import torch

    from compress_engine.torch_side.convert import as_outputs

    training = module.training
    module.eval()
    try:
        with torch.no_grad(), layer_errors(module, plan.names, "The pruned model", _WHAT_TO_DO):
            shapes = [tuple(o.shape) for o in as_outputs(module(*_on_device(module, plan)))]
    finally:
        module.train(training)
    if plan.output_shapes is not None and shapes != plan.output_shapes:
        raise LayerFailure(
            f"Channel pruning changed the model's output shapes from {plan.output_shapes} to "
            f"{shapes}. {_WHAT_TO_DO}",
            None,
        )


def _output_shapes(module: nn.Module, plan: ChannelPlan) -> list[tuple[int, ...]]:
    import torch

    from compress_engine.torch_side.convert import as_outputs

    module.eval()
    with torch.no_grad(), layer_errors(module, plan.names, "The model before pruning", ""):
        return [tuple(o.shape) for o in as_outputs(module(*_on_device(module, plan)))]


def _on_device(module: nn.Module, plan: ChannelPlan) -> tuple:
    """The example on the module's device (recovery may have trained it on a GPU)."""
    device = next((p.device for p in module.parameters()), None)
    return tuple(t.to(device) for t in plan.example) if device is not None else plan.example


def _name(module: nn.Module, layer: str | None, plan: ChannelPlan) -> str:
    if layer is None:
        return "an op outside the layers"
    try:
        return describe(module, layer, plan.names)
    except AttributeError:
        return repr(plan.names.get(layer, layer))


def whole_note(plan: ChannelPlan) -> str | None:
    """The report's word on the layers kept whole for consistency, if any."""
    if not plan.whole:
        return None
    shown = "; ".join(f"{plan.names.get(n, n)}: {why}" for n, why in plan.whole.items())
    return (
        f"Channel pruning kept {len(plan.whole)} layer(s) whole so that the pruned graph stays "
        f"consistent ({shown})."
    )


def _whole_reasons(plan: ChannelPlan) -> str:
    note = whole_note(plan)
    return f" {note}" if note else ""


def _target(cfg: PruneConfig) -> tuple[str, float] | None:
    if cfg.target_macs is not None:
        return "macs", cfg.target_macs
    if cfg.target_params is not None:
        return "params", cfg.target_params
    return None


def _prune(
    module: nn.Module,
    cfg: PruneConfig,
    plan: ChannelPlan,
    amount: float,
    steps: int,
    recover: Callable[[nn.Module, int], None] | None,
    *,
    check: bool = False,
) -> None:
    import torch
    import torch_pruning as tp

    if amount <= 0:
        return
    layers = prunable_layers(module)
    kept = dict.fromkeys([*resolve_ignored(module, cfg, plan.names), *plan.whole])
    ignored = [layers[n] for n in kept if n in layers]
    if len(ignored) == len(layers):
        raise EngineError(_NOTHING_TO_PRUNE + _whole_reasons(plan))
    torch.manual_seed(cfg.seed)
    try:
        pruner = tp.pruner.MetaPruner(
            module,
            _one(plan.example),
            importance=_importance(cfg),
            global_pruning=cfg.scope == "global",
            pruning_ratio=amount,
            iterative_steps=steps,
            ignored_layers=ignored,
            round_to=cfg.round_to,
        )
        for i in range(steps):
            if cfg.importance == "taylor":
                if plan.loss_fn is None:
                    raise EngineError("prune.importance taylor needs a dataset to score channels.")
                module.zero_grad()
                plan.loss_fn(module).backward()
            pruner.step()
            module.zero_grad()
            if check:
                check_pruned(module, plan)
            if recover is not None and i < steps - 1:
                recover(module, i)
    except EngineError:
        raise
    except Exception as exc:
        raise PruneFailure(
            "Channel pruning failed on this model's graph "
            f"({short_message(exc)}); try method magnitude, or list the layer in prune.ignore."
        ) from None


def _search_amount(
    module: nn.Module, cfg: PruneConfig, plan: ChannelPlan, what: str, limit: float
) -> float:
    """The smallest amount whose pruned copy meets `what` <= limit (binary search)."""
    macs0, params0 = count(module, plan.example)
    lo, hi = 0.0, MAX_AMOUNT
    best = None
    for _ in range(SEARCH_STEPS):
        mid = (lo + hi) / 2
        trial = copy.deepcopy(module)
        _prune(trial, cfg, plan, mid, 1, None)
        macs, params = count(trial, plan.example)
        point = PruneSearchPoint(amount=mid, macs_ratio=macs / macs0, params_ratio=params / params0)
        plan.search.append(point)
        ratio = point.macs_ratio if what == "macs" else point.params_ratio
        if ratio <= limit:
            best, hi = mid, mid
        else:
            lo = mid
    if best is None:
        raise EngineError(
            f"prune: even removing {MAX_AMOUNT:.0%} of the channels leaves {what} above "
            f"{limit:.0%} of the original (layers that produce outputs, and ignored ones, "
            "stay whole); set a higher target."
        )
    return best


def channel_counts(module: nn.Module) -> dict[str, tuple[str, int]]:
    """Output channels (conv) or features (linear) per prunable layer."""
    from torch import nn

    out = {}
    for name, m in prunable_layers(module).items():
        kind = "linear" if isinstance(m, nn.Linear) else "conv"
        width = m.out_features if isinstance(m, nn.Linear) else m.out_channels
        out[name] = (kind, int(width))
    return out


def layer_changes(
    before: dict[str, tuple[str, int]], after: dict[str, tuple[str, int]], names: dict[str, str]
) -> list[PrunedLayer]:
    return [
        PrunedLayer(name=names.get(n, n), kind=kind, before=width, after=after[n][1])
        for n, (kind, width) in before.items()
        if n in after
    ]


def magnitude_prune(
    module: nn.Module, cfg: PruneConfig, names: dict[str, str]
) -> list[PrunedLayer]:
    """Zero the smallest weights in place (global or per layer); returns per-layer counts."""
    import torch
    from torch.nn.utils import prune

    layers = prunable_layers(module)
    # Magnitude pruning keeps shapes, so output layers may be sparsified too.
    ignored = set(user_ignored(cfg, layers, names))
    targets = [(m, "weight") for n, m in layers.items() if n not in ignored]
    if not targets:
        raise EngineError("prune: this model has no Conv or Gemm/MatMul weights to prune.")
    before = {n: int(m.weight.numel()) for n, m in layers.items()}
    if cfg.scope == "global":
        prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=cfg.amount)
    else:
        for m, attr in targets:
            prune.l1_unstructured(m, attr, amount=cfg.amount)
    for m, attr in targets:
        prune.remove(m, attr)
    with torch.no_grad():
        return [
            PrunedLayer(
                name=names.get(n, n),
                kind="linear" if isinstance(m, torch.nn.Linear) else "conv",
                before=before[n],
                after=int(torch.count_nonzero(m.weight)),
            )
            for n, m in layers.items()
        ]
