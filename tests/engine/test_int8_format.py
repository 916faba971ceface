"""The CPU's int8 format: U8S8 where the integer kernels cannot saturate (VNNI, AMX, ARM),
7-bit weights (reduce-range) on x86 with AVX2/AVX-512 but no VNNI, and the choice recorded."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from pydantic import ValidationError

from compress_engine import Recipe, compress, cpu_int8
from compress_engine.configs import DynamicInt8Config, StaticInt8Config
from compress_engine.cpu_int8 import int8_format, resolve_format

SKYLAKE_SERVER = {"sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl"}
HASWELL = {"sse4_2", "avx", "avx2", "fma"}
SAPPHIRE_RAPIDS = {*SKYLAKE_SERVER, "avx512_vnni", "avx_vnni", "amx_int8"}


@pytest.mark.parametrize(
    ("flags", "machine", "expected", "words"),
    [
        (SAPPHIRE_RAPIDS, "x86_64", "u8s8", "AVX512-VNNI"),
        ({*HASWELL, "avx_vnni"}, "x86_64", "u8s8", "AVX-VNNI"),
        ({*HASWELL, "amx_int8"}, "AMD64", "u8s8", "AMX-INT8"),
        (HASWELL, "x86_64", "u8s8-reduce-range", "AVX2 but no VNNI"),
        (SKYLAKE_SERVER, "x86_64", "u8s8-reduce-range", "AVX-512BW but no VNNI"),
        ({"sse4_2", "ssse3"}, "x86_64", "u8s8", "neither AVX2 nor VNNI"),
        ({"fp", "asimd", "asimddp", "i8mm"}, "aarch64", "u8s8", "dot-product"),
        ({"fp", "asimd"}, "aarch64", "u8s8", "ARM"),
        (set(), "arm64", "u8s8", "ARM"),
        (set(), "x86_64", "u8s8", "unknown"),
        (set(), "riscv64", "u8s8", "unknown"),
    ],
)
def test_the_format_follows_the_cpu_flags(
    flags: set[str], machine: str, expected: str, words: str
) -> None:
    chosen, reason = int8_format(flags, machine)

    assert chosen == expected
    assert words in reason


def test_it_reads_x86_and_arm_flags_from_cpuinfo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nmodel name\t: Xeon\nflags\t\t: fpu avx2 avx512_vnni\n\n")
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd asimddp\nCPU part\t: 0xd0c\n")
    for path, flags in ((x86, {"fpu", "avx2", "avx512_vnni"}), (arm, {"fp", "asimd", "asimddp"})):
        monkeypatch.setattr(cpu_int8, "CPUINFO", path)
        cpu_int8.cpu_flags.cache_clear()
        assert cpu_int8.cpu_flags() == flags
    monkeypatch.setattr(cpu_int8, "CPUINFO", tmp_path / "missing")
    cpu_int8.cpu_flags.cache_clear()
    assert cpu_int8.cpu_flags() == frozenset()
    cpu_int8.cpu_flags.cache_clear()


@pytest.fixture
def cpu(monkeypatch: pytest.MonkeyPatch) -> Callable[[set[str]], None]:
    """Pretend the worker is an x86 CPU with these flags."""

    def use(flags: set[str]) -> None:
        monkeypatch.setattr(cpu_int8, "cpu_flags", lambda: frozenset(flags))
        monkeypatch.setattr(cpu_int8, "machine", lambda: "x86_64")

    return use


def test_auto_keeps_u8s8_where_vnni_is(cpu: Callable[[set[str]], None]) -> None:
    cpu(SAPPHIRE_RAPIDS)
    static = resolve_format(StaticInt8Config(mode="static-int8"))
    dynamic = resolve_format(DynamicInt8Config())

    for fmt in (static, dynamic):
        assert (fmt.activations, fmt.reduce_range) == ("uint8", False)
        assert fmt.choice.option == "int8_format" and fmt.choice.chosen == "U8S8"
        assert "AVX512-VNNI" in fmt.choice.reason and "worker CPU flags" in fmt.choice.reason


def test_auto_reduces_the_range_without_vnni_and_old_switches_win(
    cpu: Callable[[set[str]], None],
) -> None:
    cpu(HASWELL)
    assert resolve_format(DynamicInt8Config()).choice.chosen == "U8S8 reduce-range"
    signed = resolve_format(StaticInt8Config(mode="static-int8", symmetric_activations=True))
    assert (signed.activations, signed.reduce_range) == ("int8", True)
    assert signed.choice.chosen == "S8S8 reduce-range"
    assert "The recipe sets symmetric_activations" in signed.choice.reason
    # An explicit format is used as given, whatever the CPU.
    exact = resolve_format(DynamicInt8Config(int8_format="u8s8"))
    assert (exact.reduce_range, exact.choice.chosen) == (False, "U8S8")

    cpu(SAPPHIRE_RAPIDS)
    asked = resolve_format(DynamicInt8Config(reduce_range=True))
    assert asked.reduce_range and asked.choice.chosen == "U8S8 reduce-range"
    assert "The recipe sets reduce_range" in asked.choice.reason
    s8s8 = resolve_format(StaticInt8Config(mode="static-int8", int8_format="s8s8"))
    assert (s8s8.activations, s8s8.reduce_range, s8s8.choice.chosen) == ("int8", False, "S8S8")


def test_dynamic_conv_weights_are_uint8_without_reduce_range(
    cpu: Callable[[set[str]], None],
) -> None:
    cpu(HASWELL)
    fmt = resolve_format(DynamicInt8Config(op_types=["MatMul", "Conv"]))

    assert fmt.choice.chosen == "U8U8" and not fmt.reduce_range
    assert "ConvInteger" in fmt.choice.reason


@pytest.mark.parametrize(
    ("config", "settings", "words"),
    [
        (DynamicInt8Config, {"int8_format": "s8s8"}, "needs static-int8"),
        (DynamicInt8Config, {"reduce_range": True, "int8_format": "u8s8"}, "contradicts"),
        (DynamicInt8Config, {"op_types": ["Conv"], "int8_format": "u8s8-reduce-range"}, "Conv"),
        (
            StaticInt8Config,
            {"mode": "static-int8", "symmetric_activations": True, "int8_format": "u8s8"},
            "contradicts",
        ),
    ],
)
def test_contradicting_settings_are_rejected(
    config: type[DynamicInt8Config] | type[StaticInt8Config],
    settings: dict[str, object],
    words: str,
) -> None:
    with pytest.raises(ValidationError, match=words):
        config(**settings)  # type: ignore[arg-type]


def test_a_static_build_without_vnni_stores_7_bit_weights_and_says_why(
    cnn_path: Path,
    pattern_npz: Path,
    make_recipe: Callable[..., Recipe],
    tmp_path: Path,
    cpu: Callable[[set[str]], None],
) -> None:
    cpu(HASWELL)
    report = compress(
        cnn_path, make_recipe(None, mode="static-int8"), data=pattern_npz, out_dir=tmp_path
    )

    saved = json.loads((tmp_path / "report.json").read_text())["quantization"]
    assert saved["reduce_range"] is True and saved["activation_type"] == "uint8"
    choice = next(c for c in saved["choices"] if c["option"] == "int8_format")
    assert choice["chosen"] == "U8S8 reduce-range"
    assert "AVX2 but no VNNI" in choice["reason"]
    assert report.quantization is not None and report.quantization.reduce_range
    # 7-bit symmetric weights: every stored int8 weight lies within [-64, 63].
    model = onnx.load(str(tmp_path / "model.int8.onnx"))
    weights = [
        numpy_helper.to_array(t)
        for t in model.graph.initializer
        if t.data_type == onnx.TensorProto.INT8
    ]
    assert weights and max(int(np.abs(w.astype(np.int32)).max()) for w in weights) <= 64
    assert report.fidelity.summary.cosine_similarity is not None
    assert report.fidelity.summary.cosine_similarity > 0.99
