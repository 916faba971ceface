"""A model that int8 quantization breaks on purpose, for the quality-floor tests (engine and
web): one head quantizes fine, the other dies.

torch is imported inside the function, so importing this module is cheap.
"""

from __future__ import annotations

import warnings
from pathlib import Path


def export_two_heads(path: Path, *, opset: int = 12) -> Path:
    """`two_heads.onnx`: input [batch, 16] -> scores [batch, 10] (quantizes fine) and
    aux_scores [batch, 10] (int8 leaves it only its bias: a dead head).

    Hidden unit 31 is never active, so its huge weight in `aux` costs nothing in float; in
    int8 it sets the scale of every output channel of `aux`, rounding the rest to zero.
    """
    import torch
    from torch import nn

    class TwoHeads(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.body = nn.Linear(16, 32)
            self.scores = nn.Linear(32, 10)
            self.aux = nn.Linear(32, 10)
            with torch.no_grad():
                self.body.weight[31] = 0.0
                self.body.bias[31] = -1.0
                self.aux.weight[:, 31] = 1e4

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            h = torch.relu(self.body(x))
            return self.scores(h), self.aux(h)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # The legacy exporter is deprecated but ~50 ms instead of seconds for dynamo.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            TwoHeads().eval(),
            (torch.randn(1, 16),),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=["input"],
            output_names=["scores", "aux_scores"],
            dynamic_axes={axis: {0: "batch"} for axis in ("input", "scores", "aux_scores")},
        )
    return path
