"""The worker fetches a job's dataset under the uploaded file's name (made safe), with the
stored suffix the engine reads the format from, in a folder of its own."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobrunner.runner import _dataset_scratch_path
from jobs.models import Job
from registry.models import Dataset


def _job(original: str, stored: str, name: str = "text") -> Job:
    dataset = Dataset(name=name, original_filename=original, file=f"datasets/t/u/{stored}")
    return Job(dataset=dataset)


@pytest.mark.parametrize(
    ("original", "stored", "name", "want"),
    [
        ("prose.txt", "data.txt", "prose", "prose.txt"),
        ("Support Chats.JSONL", "data.jsonl", "chats", "Support Chats.jsonl"),
        ("calib.npz", "data.npz", "calib", "calib.npz"),
        ("../../etc/passwd.txt", "data.txt", "p", "passwd.txt"),
        ("rés/umé$.txt", "data.txt", "r", "umé.txt"),
        # Nothing usable left of the file's name: the dataset's name, then "data".
        ("….txt", "data.txt", "Shop reviews", "Shop reviews.txt"),
        ("$$$.txt", "data.txt", "%%%", "data.txt"),
        # A .zip of image folders named like a model file stays apart from the model.
        ("model.onnx.zip", "data.zip", "m", "model.onnx.zip"),
    ],
)
def test_it_names_the_scratch_file_after_the_upload(original, stored, name, want):
    scratch = Path("/scratch/job")
    path = _dataset_scratch_path(_job(original, stored, name), scratch)
    assert path == scratch / "dataset" / want
