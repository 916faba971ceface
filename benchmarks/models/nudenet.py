"""NudeNet's `320n.onnx`: a YOLOv8n-style detector (18 body-part classes) shipped in the
nudenet wheel, used as it ships (dynamic batch; 320 x 320 is the size nudenet feeds it).

nudenet itself is never imported (its import needs OpenCV): the file is found through the
package's import spec. Inputs are prepared the way nudenet prepares them: the crop padded with
black at the bottom/right to a square, resized to 320, RGB scaled to 0..1, NCHW. Fidelity is
measured on decoded detections (benchmarks.detections), with nudenet's own thresholds.
"""

from __future__ import annotations

import importlib.util
import shutil
import time
from pathlib import Path

import numpy as np

from benchmarks import detections
from benchmarks.models import BenchModel
from benchmarks.models import natural_images as ni

NAME = "nudenet-320n"
SIDE = 320
EVAL_SAMPLES = 200
CALIB_SAMPLES = 128
LARGE_BATCH = 4
SEED = 0


def model_file() -> Path:
    spec = importlib.util.find_spec("nudenet")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("nudenet is not installed (pip install --no-deps nudenet==3.4.2)")
    path = Path(next(iter(spec.submodule_search_locations))) / "320n.onnx"
    if not path.is_file():
        raise RuntimeError(f"the nudenet package has no {path.name}")
    return path


def preprocess(images: np.ndarray) -> np.ndarray:
    """Letterboxed uint8 NHWC crops -> float NCHW in 0..1 (no mean/std: nudenet uses none)."""
    return ni.to_nchw(images, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


def postprocess(output: np.ndarray) -> list[detections.Detections]:
    """nudenet's own post-processing: score >= 0.25, class-agnostic NMS at IoU 0.45."""
    return detections.decode(output, 0.25, 0.45, per_class=False)


def build(work: Path) -> BenchModel:
    start = time.perf_counter()
    path = work / f"{NAME}.onnx"
    shutil.copyfile(model_file(), path)
    # Photos with people only: the others give (almost) no detections to compare.
    crops = {"square": False, "letterbox": True, "among": ni.PEOPLE}
    x_eval = preprocess(ni.crops("evaluation", EVAL_SAMPLES, SIDE, seed=SEED, **crops))
    x_calib = preprocess(ni.crops("calibration", CALIB_SAMPLES, SIDE, seed=SEED + 1, **crops))
    calib_path = work / f"{NAME}-calib.npz"
    np.savez(calib_path, images=x_calib)
    return BenchModel(
        name=NAME,
        onnx_path=path,
        kind="detector",
        eval_inputs={"images": x_eval},
        calib_inputs={"images": x_calib},
        calib_path=calib_path,
        large_batch=LARGE_BATCH,
        postprocess=postprocess,
        wall_s=time.perf_counter() - start,
        info={
            "weights": "nudenet 3.4.2 wheel, 320n.onnx as shipped (YOLOv8n-style, 18 classes)",
            "input": f"3x{SIDE}x{SIDE}, letterboxed (black bottom/right), RGB / 255",
            "eval_inputs": f"{EVAL_SAMPLES} seeded crops (no labels); "
            f"{ni.describe('evaluation', ni.PEOPLE)}",
            "calibration_samples": f"{CALIB_SAMPLES}; {ni.describe('calibration', ni.PEOPLE)}",
            "split": "by source photo: no photo gives both calibration and evaluation crops",
            "detections": "score >= 0.25, class-agnostic NMS at IoU 0.45 (nudenet's own); "
            "agreement = fp32 detections matched by the variant (same class, IoU >= 0.5)",
        },
    )
