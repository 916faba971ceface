"""The quality floor of a recipe's evaluate section (kept apart so configs.py stays small;
configs re-exports it). Imports only pydantic: the web validates forms with it."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class QualityFloor(BaseModel):
    """The least a result must keep of the original's behaviour to be recommended. A result
    below it is still offered for download, marked *not recommended* with the reasons, and
    `auto` and accuracy-aware quantization never pick it. Every output is judged by its
    task-aware agreement (top-1 for class scores, nearest neighbour for embeddings, per-step
    argmax for sequences, thresholded-map IoU for dense maps, else cosine) and by the share
    of samples that each score below a floor (so a few dead samples cannot hide behind a good
    average)."""

    model_config = ConfigDict(extra="forbid")

    min_agreement: float = Field(
        default=0.9,
        ge=0.0,
        le=1.0,
        description=(
            "Lowest task-aware agreement of any output with the original (0..1), e.g. top-1 "
            "agreement 0.9 = nine samples in ten keep the original's class."
        ),
    )
    min_sequence_match: float = Field(
        default=0.7,
        ge=0.0,
        le=1.0,
        description=(
            "Sequence outputs [N, T, C]: lowest share of samples whose whole argmax sequence, "
            "collapsed CTC-style, equals the original's (what a recogniser decodes)."
        ),
    )
    min_sample_score: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description=(
            "A sample whose own score (cosine of its output, share of its steps that agree, "
            "or IoU of its map) is below this counts as broken."
        ),
    )
    max_broken_samples: float = Field(
        default=0.05,
        ge=0.0,
        le=1.0,
        description="Largest share of broken samples in any output (0.05 = 5%).",
    )
