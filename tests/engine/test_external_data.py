"""Models over 2 GB: the external-data form, end to end.

Protobuf cannot write more than 2 GB, so such models keep their weights in a data file beside
the `.onnx`. The tests lower the switch-over point (MODELPRESS_ONNX_EXTERNAL_DATA_BYTES) so
small models take the same path a 3 GB model would.
"""

from __future__ import annotations

import io
import stat
import zipfile
from functools import partial
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import model_builders
from compress_engine import EngineError, Recipe, compress
from compress_engine.bundle import write_bundle
from compress_engine.export import tflite as tflite_export
from compress_engine.export_configs import TfliteConfig
from compress_engine.onnx_files import (
    THRESHOLD_ENV,
    external_threshold,
    has_external_data,
    model_bytes,
    model_files,
    pack_zip,
    save_model,
    unpack_zip,
)
from compress_engine.torch_side import convert as torch_convert

FAST = {"latency_runs": 3, "warmup": 1, "fidelity_samples": 8}


@pytest.fixture
def small_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(THRESHOLD_ENV, "1024")


def _run(path: Path, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)


def _feed(path: Path, seed: int = 0) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    return {
        i.name: rng.standard_normal([d if isinstance(d, int) else 2 for d in i.shape]).astype(
            np.float32
        )
        for i in session.get_inputs()
    }


def test_it_switches_to_external_data_above_the_threshold(
    mlp_path: Path, tmp_path: Path, small_threshold: None
) -> None:
    proto = onnx.load(str(mlp_path))

    assert save_model(proto, tmp_path / "big.onnx") is True

    files = model_files(tmp_path / "big.onnx")
    assert [f.name for f in files] == ["big.onnx", "big.onnx.data"]
    assert model_bytes(tmp_path / "big.onnx") == sum(f.stat().st_size for f in files)
    # Only the graph is left in the .onnx; the weights moved out.
    assert files[0].stat().st_size < files[1].stat().st_size
    feed = _feed(mlp_path)
    np.testing.assert_array_equal(_run(tmp_path / "big.onnx", feed)[0], _run(mlp_path, feed)[0])


def test_it_keeps_one_file_below_the_threshold_and_clears_a_stale_data_file(
    mlp_path: Path, tmp_path: Path
) -> None:
    target = tmp_path / "m.onnx"
    (tmp_path / "m.onnx.data").write_bytes(b"left over from an earlier save")

    assert save_model(onnx.load(str(mlp_path)), target) is False

    assert not (tmp_path / "m.onnx.data").exists()
    assert not has_external_data(target)


def test_the_threshold_cannot_be_raised_past_protobufs_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(THRESHOLD_ENV, str(10 * 2**30))
    assert external_threshold() < 2**31
    monkeypatch.setenv(THRESHOLD_ENV, "lots")
    with pytest.raises(EngineError, match="number of bytes"):
        external_threshold()


def test_a_packed_model_unpacks_and_runs(mlp_path: Path, tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    model = model_builders.save_with_external_data(mlp_path, tmp_path / "src" / "mlp.onnx")
    pack_zip(model, tmp_path / "mlp.onnx.zip")

    unpacked = unpack_zip(tmp_path / "mlp.onnx.zip", tmp_path / "out")

    assert unpacked == tmp_path / "out" / "mlp.onnx"
    assert (tmp_path / "out" / "mlp.onnx.data").is_file()
    feed = _feed(mlp_path)
    np.testing.assert_array_equal(_run(unpacked, feed)[0], _run(mlp_path, feed)[0])


def _zip(path: Path, members: dict[str, bytes], *, link: str | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        if link is not None:
            info = zipfile.ZipInfo(link)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")
    return path


@pytest.mark.parametrize(
    ("members", "link", "message"),
    [
        ({"../evil.onnx": b"x"}, None, "points outside the archive"),
        ({"/abs/model.onnx": b"x"}, None, "points outside the archive"),
        ({"a.onnx": b"x", "b.onnx": b"y"}, None, "exactly one .onnx"),
        ({"weights.bin": b"x"}, None, "exactly one .onnx"),
        ({"model.onnx": b"x"}, "model.onnx.data", "is a link"),
    ],
)
def test_it_refuses_a_hostile_or_malformed_zip(
    tmp_path: Path, members: dict[str, bytes], link: str | None, message: str
) -> None:
    archive = _zip(tmp_path / "in.zip", members, link=link)

    with pytest.raises(EngineError, match=message):
        unpack_zip(archive, tmp_path / "out")

    assert not (tmp_path / "evil.onnx").exists()


def test_it_refuses_a_zip_that_unpacks_past_the_size_limit(tmp_path: Path) -> None:
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("model.onnx", b"\0" * 2_000_000)

    with pytest.raises(EngineError, match=r"unpacks to 2\.0 MB"):
        unpack_zip(archive, tmp_path / "out", max_bytes=1_000_000)

    assert not (tmp_path / "out" / "model.onnx").exists()


def test_it_refuses_a_zip_without_the_models_data(mlp_path: Path, tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    model = model_builders.save_with_external_data(mlp_path, tmp_path / "src" / "mlp.onnx")
    archive = _zip(tmp_path / "in.zip", {"mlp.onnx": model.read_bytes()})

    with pytest.raises(EngineError, match=r"external data the zip does not hold: mlp\.onnx\.data"):
        unpack_zip(archive, tmp_path / "out")


def _recipe(step: dict) -> Recipe:
    return Recipe.parse({"steps": [step], "evaluate": FAST})


def test_a_result_over_the_limit_is_offered_as_one_checked_zip(
    mlp_path: Path, tmp_path: Path, small_threshold: None
) -> None:
    report = compress(mlp_path, _recipe({"quantize": {"mode": "fp16"}}), out_dir=tmp_path / "out")

    (artifact,) = report.artifacts
    assert (artifact.name, artifact.format, artifact.status) == (
        "model.fp16.onnx.zip",
        "onnx-external",
        "ok",
    )
    assert artifact.opset and artifact.check and artifact.check.cosine_similarity > 0.999
    archive = tmp_path / "out" / artifact.name
    assert artifact.size_bytes == archive.stat().st_size
    with zipfile.ZipFile(archive) as zf:
        assert sorted(zf.namelist()) == ["model.fp16.onnx", "model.fp16.onnx.data"]
    model = unpack_zip(archive, tmp_path / "unpacked")
    onnx.checker.check_model(str(model))
    feed = _feed(mlp_path)
    np.testing.assert_allclose(_run(model, feed)[0], _run(mlp_path, feed)[0], atol=1e-2)
    # The report's size is the model's weight, data file included (the re-saved copy only
    # names its data file differently).
    assert abs(report.result.size_bytes - model_bytes(model)) < 100


def test_onnx_runtime_quantization_writes_external_data_too(
    mlp_path: Path, tmp_path: Path, small_threshold: None
) -> None:
    report = compress(
        mlp_path, _recipe({"quantize": {"mode": "dynamic-int8"}}), out_dir=tmp_path / "out"
    )

    (artifact,) = report.artifacts
    assert artifact.format == "onnx-external" and artifact.ok
    model = unpack_zip(tmp_path / "out" / artifact.name, tmp_path / "unpacked")
    ops = {n.op_type for n in onnx.load(str(model), load_external_data=False).graph.node}
    assert "DynamicQuantizeLinear" in ops or "MatMulInteger" in ops


def test_its_bundle_unpacks_the_model_beside_its_data(
    mlp_path: Path, tmp_path: Path, small_threshold: None
) -> None:
    out = tmp_path / "out"
    report = compress(mlp_path, _recipe({"quantize": {"mode": "fp16"}}), out_dir=out)
    sink = io.BytesIO()

    write_bundle(sink, report, [(a.name, partial(open, out / a.name, "rb")) for a in report.files])

    with zipfile.ZipFile(sink) as zf:
        names = set(zf.namelist())
        zf.extractall(tmp_path / "bundle")
        readme = zf.read("README.md").decode()
        spec = zf.read("preprocessing.json").decode()
    assert {"models/model.fp16.onnx", "models/model.fp16.onnx.data"} <= names
    assert "models/model.fp16.onnx.zip" not in names
    assert "model.fp16.onnx.data` beside it" in readme
    assert '"model": "models/model.fp16.onnx"' in spec
    feed = _feed(mlp_path)
    bundled = tmp_path / "bundle" / "models" / "model.fp16.onnx"
    np.testing.assert_allclose(_run(bundled, feed)[0], _run(mlp_path, feed)[0], atol=1e-2)


def test_a_model_zip_is_accepted_as_input(
    mlp_path: Path, tmp_path: Path, small_threshold: None
) -> None:
    (tmp_path / "src").mkdir()
    model = model_builders.save_with_external_data(mlp_path, tmp_path / "src" / "mlp.onnx")
    pack_zip(model, tmp_path / "mlp.onnx.zip")

    report = compress(
        tmp_path / "mlp.onnx.zip",
        _recipe({"quantize": {"mode": "dynamic-int8"}}),
        out_dir=tmp_path / "out",
    )

    assert report.original.size_bytes == model_bytes(model)
    assert report.fidelity.summary.cosine_similarity > 0.99
    assert [p.name for p in (tmp_path / "out").iterdir()] != []
    assert not any(p.name.startswith(".work-") for p in (tmp_path / "out").iterdir())


def test_tflite_refuses_a_model_past_the_flatbuffer_limit(
    mlp_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tflite_export, "FLATBUFFER_LIMIT", 100)

    conversion = tflite_export.convert_tflite(
        mlp_path, tmp_path / "tflite", TfliteConfig(precisions=["fp32", "fp16"]), None
    )

    assert [f.error for f in conversion.files] == [
        conversion.files[0].error,
        conversion.files[0].error,
    ]
    assert "at most 2 GB (a FlatBuffers limit)" in (conversion.files[0].error or "")
    assert not (tmp_path / "tflite").exists()


def test_torch_side_steps_refuse_a_model_past_protobufs_limit_up_front(
    cnn_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # onnx2torch serialises the whole model; the real limit is 2 GB, lowered here.
    monkeypatch.setattr(torch_convert, "TORCH_SIDE_LIMIT", 1000)

    with pytest.raises(EngineError, match=r"onnx2torch.*cannot take models over 2 GB"):
        compress(
            cnn_path,
            _recipe({"prune": {"method": "magnitude", "amount": 0.5}}),
            out_dir=tmp_path / "out",
        )

    assert not any((tmp_path / "out").iterdir())


def test_a_result_that_fits_one_file_is_offered_as_one_file(mlp_path: Path, tmp_path: Path) -> None:
    # A small model that arrived with external data, and a step that copies it through.
    (tmp_path / "src").mkdir()
    model = model_builders.save_with_external_data(mlp_path, tmp_path / "src" / "mlp.onnx")
    pack_zip(model, tmp_path / "mlp.onnx.zip")

    report = compress(
        tmp_path / "mlp.onnx.zip",
        _recipe({"quantize": {"mode": "dynamic-int8", "op_types": ["Conv"]}}),
        out_dir=tmp_path / "out",
    )

    (artifact,) = report.artifacts
    assert (artifact.name, artifact.format, artifact.status) == ("model.int8.onnx", "onnx", "ok")
    assert not has_external_data(tmp_path / "out" / artifact.name)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "model.int8.onnx",
        "recipe.yaml",
        "report.json",
    ]
    feed = _feed(mlp_path)
    np.testing.assert_array_equal(
        _run(tmp_path / "out" / artifact.name, feed)[0], _run(mlp_path, feed)[0]
    )
