"""`python -m benchmarks.large_model`: a model over 2 GB through the engine, no overrides.

Builds an MLP whose fp32 weights pass protobuf's 2 GB limit (so it can only exist in the
external-data form), zips it as a user would upload it, and runs `compress()` on the zip:
dynamic int8 (the result fits one file again) and a quantize step that finds nothing to
quantize (the result stays over 2 GB, so it leaves as an `onnx-external` zip). Torch-side
steps are refused for such models (onnx2torch serialises through protobuf). Prints a table
and writes `benchmarks/results/large.json`. Needs about 15 GB of memory and 15 GB of disk;
not part of `make bench` (it takes minutes and gigabytes).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shutil
import sys
import time
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
RECIPES = {
    "dynamic-int8": {"steps": [{"quantize": {"mode": "dynamic-int8"}}]},
    # Conv only, and the MLP has none: nothing is quantized, so the result is the original's
    # 2.4 GB again and must leave in the external-data form.
    "copy-through": {"steps": [{"quantize": {"mode": "dynamic-int8", "op_types": ["Conv"]}}]},
}


def build_model(folder: Path, *, width: int, layers: int, seed: int = 0) -> Path:
    """An MLP [batch, width] -> Gemm+Relu x layers -> [batch, 10], weights in model.onnx.data."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    prev = "x"
    for i in range(layers):
        # Scaled so activations neither vanish nor explode through the stack.
        w = (rng.standard_normal((width, width), dtype=np.float32) / np.sqrt(width)).astype(
            np.float32
        )
        inits += [
            numpy_helper.from_array(w, f"w{i}"),
            numpy_helper.from_array(np.zeros(width, np.float32), f"b{i}"),
        ]
        nodes += [
            helper.make_node("Gemm", [prev, f"w{i}", f"b{i}"], [f"g{i}"], name=f"fc{i}"),
            helper.make_node("Relu", [f"g{i}"], [f"r{i}"], name=f"relu{i}"),
        ]
        prev = f"r{i}"
    head = (rng.standard_normal((width, 10), dtype=np.float32) / np.sqrt(width)).astype(np.float32)
    inits.append(numpy_helper.from_array(head, "head"))
    nodes.append(helper.make_node("MatMul", [prev, "head"], ["logits"], name="head"))
    graph = helper.make_graph(
        nodes,
        "large-mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "large.onnx"
    onnx.save_model(
        model,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="large.onnx.data",
        size_threshold=1024,
    )
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=8192)
    parser.add_argument("--layers", type=int, default=9, help="9 x 8192^2 fp32 = 2.4 GB")
    parser.add_argument("--recipes", default=",".join(RECIPES))
    parser.add_argument("--work", type=Path, default=ROOT / ".cache" / "large")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "large.json")
    args = parser.parse_args(argv)

    from compress_engine import compress
    from compress_engine.onnx_files import model_bytes, pack_zip

    shutil.rmtree(args.work, ignore_errors=True)
    start = time.perf_counter()
    model = build_model(args.work / "model", width=args.width, layers=args.layers)
    upload = args.work / "large.onnx.zip"
    pack_zip(model, upload)
    built_s = time.perf_counter() - start
    rows = []
    for name in args.recipes.split(","):
        recipe = {
            **RECIPES[name],
            "evaluate": {"latency_runs": 5, "warmup": 1, "fidelity_samples": 16, "batch_sizes": []},
        }
        start = time.perf_counter()
        report = compress(upload, recipe, out_dir=args.work / name)
        wall = time.perf_counter() - start
        (artifact,) = [a for a in report.artifacts if a.name.startswith("model.")]
        with zipfile.ZipFile(upload) as zf:
            members = zf.namelist()
        rows.append(
            {
                "recipe": name,
                "input": {"file": upload.name, "members": members, "bytes": upload.stat().st_size},
                "original_bytes": report.original.size_bytes,
                "artifact": artifact.name,
                "format": artifact.format,
                "status": artifact.status,
                "artifact_bytes": artifact.size_bytes,
                "result_bytes": report.result.size_bytes,
                "size_ratio": report.size_ratio,
                "cosine": report.fidelity.summary.cosine_similarity,
                "max_abs_diff": report.fidelity.summary.max_abs_diff,
                "p50_ms_original": report.original.latency.p50_ms,
                "p50_ms_result": report.result.latency.p50_ms,
                "wall_s": round(wall, 1),
                "steps": {s.name: round(s.wall_s, 1) for s in report.steps},
            }
        )
        shutil.rmtree(args.work / name, ignore_errors=True)
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    meta = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
        "python": sys.version.split()[0],
        "model": {"width": args.width, "layers": args.layers, "bytes": model_bytes(model)},
        "build_s": round(built_s, 1),
        "peak_rss_gb": round(peak_gb, 2),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": rows, "meta": meta}, indent=2) + "\n")
    print(
        f"model: {meta['model']['bytes'] / 1e9:.2f} GB fp32 in {upload.name}; "
        f"peak RSS {meta['peak_rss_gb']} GB"
    )
    print("| recipe | artifact | format | size | ratio | cosine | p50 ms before / after | wall s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['recipe']} | {r['artifact']} | {r['format']} | "
            f"{r['artifact_bytes'] / 1e9:.2f} GB | {r['size_ratio']:.3f} | {r['cosine']:.5f} | "
            f"{r['p50_ms_original']:.1f} / {r['p50_ms_result']:.1f} | {r['wall_s']} |"
        )
    shutil.rmtree(args.work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
