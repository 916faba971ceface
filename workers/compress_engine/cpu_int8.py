"""Which int8 format suits this CPU's integer kernels, read off its instruction-set flags.

ONNX Runtime's CPU kernels multiply uint8 activations by int8 weights (U8S8). On x86 CPUs
with AVX2 or AVX-512 but no VNNI they do it with VPMADDUBSW, which adds pairs of products
into a 16-bit intermediate that can saturate; ONNX Runtime's quantization guide
(docs/performance/model-optimizations/quantization: "Data type selection" and "When to use
reduce-range") names reduce_range, 7-bit weights, as the fix for U8S8 there, and says VNNI
and ARM CPUs have no such issue. S8S8 in QDQ is no way out on those CPUs: without VNNI ONNX
Runtime turns int8 QDQ activations back into uint8 (QDQS8ToU8Transformer) and runs U8S8.

The decision is a pure function of the flags (`int8_format`), so it can be tested for any
CPU; `resolve_format` combines it with a recipe's settings into what a pass builds.
"""

from __future__ import annotations

import functools
import platform
from dataclasses import dataclass
from pathlib import Path

from compress_engine.configs import DynamicInt8Config, StaticInt8Config
from compress_engine.report import QuantChoice

CPUINFO = Path("/proc/cpuinfo")

# x86: integer dot-product instructions with a 32-bit accumulator (no 16-bit intermediate).
_X86_VNNI = {
    "avx512_vnni": "AVX512-VNNI",
    "avx_vnni": "AVX-VNNI",
    "amx_int8": "AMX-INT8",
}
# x86: the instruction sets whose U8S8 kernels use VPMADDUBSW (saturating 16-bit sums).
_X86_SATURATING = {"avx512bw": "AVX-512BW", "avx2": "AVX2"}
# ARM: int8 dot products (SDOT/UDOT) and int8 matrix multiply (SMMLA); neither saturates.
_ARM_DOT = {"asimddp": "dot-product (asimddp)", "dotprod": "dot-product", "i8mm": "I8MM"}
_X86_MACHINES = {"x86_64", "amd64", "i386", "i686", "x86"}
_ARM_MACHINES = {"aarch64", "arm64", "armv8l", "armv7l"}

U8S8 = "u8s8"
U8S8_REDUCE_RANGE = "u8s8-reduce-range"
S8S8 = "s8s8"
_SOURCE = "(worker CPU flags)"


def int8_format(flags: set[str] | frozenset[str], machine: str) -> tuple[str, str]:
    """(format, reason): "u8s8" or "u8s8-reduce-range" for ONNX Runtime's CPU kernels on a CPU
    with these /proc/cpuinfo flags and platform.machine()."""
    arch = machine.lower()
    if arch in _X86_MACHINES:
        vnni = [name for flag, name in _X86_VNNI.items() if flag in flags]
        if vnni:
            return U8S8, (
                f"this CPU has {' and '.join(vnni)}: int8 dot products accumulate in 32 bits, so "
                f"U8S8 runs without saturation {_SOURCE}."
            )
        saturating = [name for flag, name in _X86_SATURATING.items() if flag in flags]
        if saturating:
            return U8S8_REDUCE_RANGE, (
                f"this CPU has {saturating[0]} but no VNNI: ONNX Runtime's U8S8 kernels can "
                "saturate their 16-bit intermediate (VPMADDUBSW), so weights are quantized to "
                f"7 bits (reduce_range), as ONNX Runtime recommends there {_SOURCE}."
            )
        if flags:
            return U8S8, (
                "this CPU has neither AVX2 nor VNNI: ONNX Runtime's older int8 kernels widen to "
                f"32 bits and do not saturate, so U8S8 is kept {_SOURCE}."
            )
    elif arch in _ARM_MACHINES:
        dot = [name for flag, name in _ARM_DOT.items() if flag in flags]
        has = f"this ARM CPU has {' and '.join(dot)}" if dot else "this is an ARM CPU"
        return U8S8, f"{has}: ONNX Runtime's ARM int8 kernels do not saturate {_SOURCE}."
    return U8S8, (
        f"this CPU's int8 instructions are unknown (machine {machine or 'unknown'}), so ONNX "
        "Runtime's default U8S8 is used."
    )


@functools.cache
def cpu_flags() -> frozenset[str]:
    """This machine's CPU flags (x86 `flags`, ARM `Features`) from /proc/cpuinfo; empty where
    it cannot be read (macOS, Windows, a sandbox)."""
    try:
        text = CPUINFO.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            return frozenset(value.split())
    return frozenset()


def machine() -> str:
    return platform.machine()


@dataclass(frozen=True)
class BuildFormat:
    """What an int8 pass builds: activation signedness, 7-bit weights, and the choice to
    record in the report."""

    activations: str  # "uint8" or "int8"
    reduce_range: bool
    choice: QuantChoice


def resolve_format(cfg: DynamicInt8Config | StaticInt8Config) -> BuildFormat:
    """The format a config builds on this machine. An explicit format is used as given (the
    configs reject combinations that contradict it); `auto` follows `int8_format` for this
    CPU, except that the older switches (reduce_range, symmetric_activations) win when on."""
    static = isinstance(cfg, StaticInt8Config)
    signed = static and (cfg.symmetric_activations or cfg.int8_format == S8S8)
    if not static and "Conv" in cfg.op_types:
        # ConvInteger needs uint8 weights, so every weight is uint8: U8U8 has no VPMADDUBSW
        # saturation, and 7-bit weights are used only where asked for.
        reduce = cfg.reduce_range or cfg.int8_format == U8S8_REDUCE_RANGE
        reason = "Conv is quantized, and ONNX Runtime's ConvInteger needs uint8 weights"
        return _build("U8U8", "uint8", reduce, reason + (" (7-bit, as asked)." if reduce else "."))
    acts = "int8" if signed else "uint8"
    label = "S8S8" if signed else "U8S8"
    if cfg.int8_format != "auto":
        reduce = cfg.int8_format == U8S8_REDUCE_RANGE
        return _build(label, acts, reduce, f"int8_format {cfg.int8_format} in the recipe.")
    asked = [
        name
        for name, on in (
            ("reduce_range", not static and cfg.reduce_range),
            ("symmetric_activations", static and cfg.symmetric_activations),
        )
        if on
    ]
    chosen, reason = int8_format(cpu_flags(), machine())
    reduce = chosen == U8S8_REDUCE_RANGE or "reduce_range" in asked
    reason = reason[0].upper() + reason[1:]
    if asked:
        reason = f"The recipe sets {' and '.join(asked)}. For the CPU alone: {reason}"
    return _build(label, acts, reduce, reason)


def _build(label: str, activations: str, reduce: bool, reason: str) -> BuildFormat:
    chosen = f"{label} reduce-range" if reduce else label
    return BuildFormat(
        activations=activations,
        reduce_range=reduce,
        choice=QuantChoice(option="int8_format", chosen=chosen, reason=reason),
    )
