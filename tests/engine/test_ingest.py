"""Ingest: format detection by content, refusals that never unpickle, conversions to ONNX
checked numerically against the source model (torch / Keras outputs vs ONNX Runtime)."""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest

from compress_engine import EngineError
from compress_engine.ingest import (
    InputSpec,
    ModelFormat,
    convert_to_onnx,
    detect_format,
    parse_input_shapes,
)
from compress_engine.ingest.convert import _verify
from compress_engine.onnx_files import THRESHOLD_ENV, pack_zip, save_model
from conftest import tiny_torch_net

MAX = 50_000_000
TOL = 1e-4


def _ort(path: Path, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, feed)


def _torch_out(module, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


def test_it_detects_formats_by_content_not_extension(
    torch_model_files: dict[str, Path], tmp_path: Path, cnn_path: Path
) -> None:
    disguised = tmp_path / "model.bin"
    disguised.write_bytes(torch_model_files["torchscript"].read_bytes())
    onnx_as_pt = tmp_path / "model.pt"
    onnx_as_pt.write_bytes(cnn_path.read_bytes())

    assert detect_format(disguised, "model.bin") is ModelFormat.TORCHSCRIPT
    assert detect_format(torch_model_files["export"], "net.zip") is ModelFormat.TORCH_EXPORT
    assert detect_format(onnx_as_pt, "model.pt") is ModelFormat.ONNX


@pytest.mark.parametrize("kind", ["state_dict", "module"])
def test_it_refuses_torch_save_checkpoints(torch_model_files: dict[str, Path], kind: str) -> None:
    with pytest.raises(EngineError, match=r"torch\.save checkpoint") as err:
        detect_format(torch_model_files[kind], "weights.pt")
    assert "torch.jit.save" in str(err.value) and "torch.export.save" in str(err.value)
    assert "torch.onnx.export" in str(err.value)


class _Touch:
    """Unpickling this creates a file: proof of whether a loader ran the pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_it_refuses_a_raw_pickle_without_unpickling_it(tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(_Touch(marker), protocol=4))

    with pytest.raises(EngineError, match="Python pickle") as err:
        detect_format(path, "model.pth")
    assert "never loads them" in str(err.value)
    assert not marker.exists()


def test_it_converts_torchscript_with_given_shapes(
    torch_model_files: dict[str, Path], tmp_path: Path
) -> None:
    net = tiny_torch_net()
    specs = parse_input_shapes("1x3x16x16")

    result = convert_to_onnx(
        torch_model_files["torchscript"],
        ModelFormat.TORCHSCRIPT,
        tmp_path / "out",
        input_shapes=specs,
        max_bytes=MAX,
        timeout_s=300,
    )

    assert result.model == (tmp_path / "out" / "model.onnx").resolve()
    # Named after forward's argument (a traced nn.Sequential's is `input`).
    assert [t.name for t in result.info.inputs] == ["input"]
    name = "input"
    assert result.info.inputs[0].shape[1:] == [3, 16, 16]
    assert result.info.parameters == sum(p.numel() for p in net.parameters())
    # The batch dim is dynamic: checked at a batch the example did not use.
    x = np.random.default_rng(1).standard_normal((3, 3, 16, 16)).astype(np.float32)
    (got,) = _ort(result.model, {name: x})
    np.testing.assert_allclose(got, _torch_out(net, x), atol=TOL, rtol=0)
    assert "dynamic batch" in result.log
    assert not (tmp_path / "out" / "work").exists()


def test_it_asks_for_torchscript_input_shapes(
    torch_model_files: dict[str, Path], tmp_path: Path
) -> None:
    with pytest.raises(EngineError, match="does not record the shapes of its inputs") as err:
        convert_to_onnx(
            torch_model_files["torchscript"], ModelFormat.TORCHSCRIPT, tmp_path, max_bytes=MAX
        )
    assert "input shapes field" in str(err.value)


def test_it_names_wrong_input_names(torch_model_files: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="forward takes"):
        convert_to_onnx(
            torch_model_files["torchscript"],
            ModelFormat.TORCHSCRIPT,
            tmp_path,
            input_shapes=parse_input_shapes("image: 1x3x16x16"),
            max_bytes=MAX,
        )


def test_it_converts_a_torch_export_program(
    torch_model_files: dict[str, Path], tmp_path: Path
) -> None:
    net = tiny_torch_net()

    result = convert_to_onnx(
        torch_model_files["export"], ModelFormat.TORCH_EXPORT, tmp_path / "out", max_bytes=MAX
    )

    x = np.random.default_rng(2).standard_normal((1, 3, 16, 16)).astype(np.float32)
    (got,) = _ort(result.model, {result.info.inputs[0].name: x})
    np.testing.assert_allclose(got, _torch_out(net, x), atol=TOL, rtol=0)
    assert result.source_format is ModelFormat.TORCH_EXPORT


def _with_pickled_weight(source: Path, target: Path, payload: bytes) -> None:
    """Copy a .pt2, flagging its first weight as pickled and replacing it with `payload`."""
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename.endswith("model_weights_config.json"):
                config = json.loads(data)
                first = next(iter(config["config"].values()))
                first["use_pickle"] = True
                data = json.dumps(config).encode()
                weight_name = first["path_name"]
            zout.writestr(info, data)
    with zipfile.ZipFile(target) as zf:
        names = zf.namelist()
    member = next(n for n in names if n.endswith(f"data/weights/{weight_name}"))
    rebuilt = target.with_suffix(".tmp")
    with zipfile.ZipFile(target) as zin, zipfile.ZipFile(rebuilt, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info, payload if info.filename == member else zin.read(info.filename))
    rebuilt.replace(target)


def test_it_never_unpickles_a_torch_export_payload(
    torch_model_files: dict[str, Path], tmp_path: Path
) -> None:
    marker = tmp_path / "unpickled"
    crafted = tmp_path / "crafted.pt2"
    _with_pickled_weight(
        torch_model_files["export"], crafted, pickle.dumps(_Touch(marker), protocol=2)
    )

    with pytest.raises(EngineError, match="pickled object"):
        detect_format(crafted, "crafted.pt2")
    # Past detection too (the converter forbids unpickling in its own process).
    with pytest.raises(EngineError, match="never unpickles"):
        convert_to_onnx(crafted, ModelFormat.TORCH_EXPORT, tmp_path / "out", max_bytes=MAX)
    assert not marker.exists()


def _external_data_zip(cnn_path: Path, folder: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(THRESHOLD_ENV, "1024")
    src = folder / "src"
    src.mkdir()
    assert save_model(onnx.load(str(cnn_path)), src / "cnn.onnx")
    archive = folder / "cnn.zip"
    pack_zip(src / "cnn.onnx", archive)
    return archive


def test_it_converts_an_onnx_zip_with_external_data(
    cnn_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = _external_data_zip(cnn_path, tmp_path, monkeypatch)
    assert detect_format(archive, "cnn.zip") is ModelFormat.ONNX_ZIP

    result = convert_to_onnx(archive, ModelFormat.ONNX_ZIP, tmp_path / "out", max_bytes=MAX)

    assert result.external_data
    assert (tmp_path / "out" / "model.onnx.data").is_file()
    x = np.random.default_rng(3).standard_normal((2, 1, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(
        _ort(result.model, {"input": x})[0], _ort(cnn_path, {"input": x})[0], atol=TOL, rtol=0
    )


def test_it_refuses_an_onnx_zip_without_its_data(
    cnn_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = _external_data_zip(cnn_path, tmp_path, monkeypatch)
    stripped = tmp_path / "stripped.zip"
    with zipfile.ZipFile(archive) as zin, zipfile.ZipFile(stripped, "w") as zout:
        zout.writestr("cnn.onnx", zin.read("cnn.onnx"))

    with pytest.raises(EngineError, match="external data the zip does not hold"):
        convert_to_onnx(stripped, ModelFormat.ONNX_ZIP, tmp_path / "out", max_bytes=MAX)


def test_it_refuses_a_zip_member_outside_the_archive(tmp_path: Path, cnn_path: Path) -> None:
    archive = tmp_path / "slip.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../../evil.onnx", cnn_path.read_bytes())

    with pytest.raises(EngineError, match="points outside"):
        detect_format(archive, "slip.zip")
    assert not (tmp_path.parent / "evil.onnx").exists()


def test_it_refuses_a_zip_that_unpacks_past_the_limit(tmp_path: Path) -> None:
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("model.onnx", b"\0" * 2_000_000)

    with pytest.raises(EngineError, match=r"unpacks to 2\.0 MB"):
        detect_format(archive, "bomb.zip", max_bytes=1_000_000)


def test_it_refuses_a_converted_model_that_computes_something_else(
    cnn_path: Path, tmp_path: Path
) -> None:
    x = np.zeros((1, 1, 8, 8), np.float32)
    (out,) = _ort(cnn_path, {"input": x})
    np.savez(tmp_path / "ref.npz", **{"in:input": x, "out:0": out + 0.5})

    with pytest.raises(EngineError, match="does not compute what the source model computes"):
        _verify(cnn_path, tmp_path / "ref.npz")


def test_it_parses_hand_written_input_shapes() -> None:
    assert parse_input_shapes("input: 1x3x224x224") == [
        InputSpec(name="input", shape=[1, 3, 224, 224])
    ]
    assert parse_input_shapes("ids: 1x128 int64\nmask: 1x128 int64") == [
        InputSpec(name="ids", shape=[1, 128], dtype="int64"),
        InputSpec(name="mask", shape=[1, 128], dtype="int64"),
    ]
    assert parse_input_shapes("1x3x32x32, 1x10") == [
        InputSpec(shape=[1, 3, 32, 32]),
        InputSpec(shape=[1, 10]),
    ]
    assert parse_input_shapes("[1, 3, 8, 8]") == [InputSpec(shape=[1, 3, 8, 8])]
    assert parse_input_shapes("  ") == []
    for bad, message in [
        ("input: 1xax3", "Cannot read"),
        ("x: 0x3", "zero dimension"),
        ("x: 1x3 complex64", "Unknown dtype"),
        ("x: 1x3\n1x4", "every input shape or none"),
        ("x: 100000x100000", "at most"),
    ]:
        with pytest.raises(EngineError, match=message):
            parse_input_shapes(bad)


# TensorFlow formats: built in the converter environment (.venv-tflite), see conftest.


@pytest.mark.parametrize(
    ("file", "fmt"),
    [("net.keras", ModelFormat.KERAS), ("saved.zip", ModelFormat.SAVEDMODEL)],
)
def test_it_converts_tensorflow_formats(
    keras_model_files: Path, tmp_path: Path, file: str, fmt: ModelFormat
) -> None:
    assert detect_format(keras_model_files / file, file) is fmt

    result = convert_to_onnx(keras_model_files / file, fmt, tmp_path / "out", max_bytes=MAX)

    reference = np.load(keras_model_files / "reference.npz")
    (got,) = _ort(result.model, {result.info.inputs[0].name: reference["x"]})
    np.testing.assert_allclose(got, reference["y"], atol=TOL, rtol=0)
    assert "tf2onnx" in result.log


def test_it_refuses_a_legacy_keras_h5(tmp_path: Path) -> None:
    path = tmp_path / "model.h5"
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)

    with pytest.raises(EngineError, match=r"model.save\('model.keras'\)"):
        detect_format(path, "model.h5")


def test_it_stops_a_converter_that_runs_past_its_limit(
    torch_model_files: dict[str, Path], tmp_path: Path
) -> None:
    # The converter is a subprocess: a hang costs the conversion, never the worker.
    with pytest.raises(EngineError, match="ran past its 0 s limit"):
        convert_to_onnx(
            torch_model_files["torchscript"],
            ModelFormat.TORCHSCRIPT,
            tmp_path / "out",
            input_shapes=parse_input_shapes("1x3x16x16"),
            timeout_s=0.2,
        )
    assert not (tmp_path / "out" / "model.onnx").exists()
