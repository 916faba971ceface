"""Re-pack blocked DequantizeLinear + MatMul pairs into ONNX Runtime's MatMulNBits.

NNCF writes int4 weights of an opset >= 21 model as DequantizeLinear(int4/uint4 [K, N], scales
[K/block, N], zero points, axis=0, block_size) feeding a MatMul: the standard form, which
ONNX Runtime's CPU provider runs by dequantizing the whole matrix on every call (slower than
fp32). MatMulNBits holds the same integers in its own layout (see ONNX Runtime's
ContribOperators.md and its quantizer's `qbits_block_quant`):
- B: uint8 [N, K/block, block * bits / 8], column n's block j, element pairs (2i, 2i+1) in the
  low and high nibble of byte i (4 bits), or one byte each (8 bits);
- scales: [N, K/block] (the transpose of DequantizeLinear's);
- zero_points: uint8 [N, ceil(K/block * bits / 8)], packed like B; absent = the middle of the
  range (8 or 128), which is exactly a signed format's implicit zero.
Signed integers are stored offset by that middle value. The arithmetic is unchanged, so the
re-packed node computes the same product; `check_repack` proves it on random input, and
`repack_to_matmulnbits` runs that check on the first pair it rewrites.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

_SIGNED = {onnx.TensorProto.INT4: 4, onnx.TensorProto.INT8: 8}
_UNSIGNED = {onnx.TensorProto.UINT4: 4, onnx.TensorProto.UINT8: 8}


def repack_to_matmulnbits(
    model: onnx.ModelProto, *, accuracy_level: int | None = None, check: bool = True
) -> onnx.ModelProto:
    """Every DequantizeLinear(blocked constant) -> MatMul pair becomes one MatMulNBits, in place.

    Pairs in another shape (per-channel, a dequantized weight read by several nodes) stay as
    they are; `weight_quant.weight_form` then reports the slow form. Nodes NNCF inserted for
    AWQ (Mul by per-channel scales) are ordinary graph nodes and stay.
    """
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    checked = not check
    replaced: set[str] = set()
    for dq in [n for n in graph.node if n.op_type == "DequantizeLinear"]:
        users = readers.get(dq.output[0], [])
        if len(users) != 1 or users[0].op_type != "MatMul" or users[0].input[1] != dq.output[0]:
            continue
        packed = _packed(dq, inits)
        if packed is None:
            continue
        matmul = users[0]
        nbits, new_inits = _nbits_node(dq, matmul, packed, accuracy_level)
        if not checked:
            err = check_repack(dq, matmul, nbits, inits, new_inits)
            if err > 1e-4:
                raise RuntimeError(f"MatMulNBits re-pack of {matmul.name} differs by {err:.2e}")
            checked = True
        index = list(graph.node).index(matmul)
        graph.node.insert(index, nbits)
        graph.node.remove(matmul)
        graph.node.remove(dq)
        graph.initializer.extend(new_inits)
        replaced.update(dq.input)
    used = {name for node in graph.node for name in node.input}
    for init in [t for t in graph.initializer if t.name in replaced and t.name not in used]:
        graph.initializer.remove(init)
    if replaced and not any(op.domain == "com.microsoft" for op in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return model


def _packed(
    dq: onnx.NodeProto, inits: dict[str, onnx.TensorProto]
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, int, int] | None:
    """(unsigned ints [K, N], scales [K/block, N], unsigned zero points or None, bits, block)
    for a blocked axis-0 DequantizeLinear on constants; None for any other."""
    attrs = {a.name: helper.get_attribute_value(a) for a in dq.attribute}
    block = int(attrs.get("block_size", 0))
    if block < 16 or block & (block - 1) or int(attrs.get("axis", 1)) != 0:
        return None
    if any(name and name not in inits for name in dq.input):
        return None
    weight = inits[dq.input[0]]
    bits = _SIGNED.get(weight.data_type) or _UNSIGNED.get(weight.data_type)
    if bits is None or len(weight.dims) != 2:
        return None
    offset = (1 << (bits - 1)) if weight.data_type in _SIGNED else 0
    q = numpy_helper.to_array(weight).astype(np.int32) + offset
    scales = numpy_helper.to_array(inits[dq.input[1]])
    zero = None
    if len(dq.input) > 2 and dq.input[2]:
        zero = numpy_helper.to_array(inits[dq.input[2]]).astype(np.int32) + offset
    elif offset == 0:
        zero = np.zeros(scales.shape, dtype=np.int32)  # unsigned, no zero point: zero is 0
    return q, scales, zero, bits, block


def _nbits_node(
    dq: onnx.NodeProto,
    matmul: onnx.NodeProto,
    packed: tuple[np.ndarray, np.ndarray, np.ndarray | None, int, int],
    accuracy_level: int | None,
) -> tuple[onnx.NodeProto, list[onnx.TensorProto]]:
    q, scales, zero, bits, block = packed
    k, n = q.shape
    blocks = -(-k // block)
    middle = 1 << (bits - 1)
    padded = np.full((blocks * block, n), middle, dtype=np.int32)
    padded[:k] = q
    rows = padded.T.reshape(n, blocks, block)
    base = dq.input[0]
    b = numpy_helper.from_array(_pack(rows, bits), f"{base}_Q{bits}")
    s = numpy_helper.from_array(np.ascontiguousarray(scales.T), f"{base}_scales")
    inputs, new_inits = [matmul.input[0], b.name, s.name], [b, s]
    if zero is not None and not np.all(zero == middle):
        z = numpy_helper.from_array(_pack(zero.T, bits), f"{base}_zero_points")
        inputs.append(z.name)
        new_inits.append(z)
    kwargs = {"accuracy_level": accuracy_level} if accuracy_level else {}
    node = helper.make_node(
        "MatMulNBits",
        inputs,
        list(matmul.output),
        name=f"{matmul.name}_Q{bits}",
        domain="com.microsoft",
        K=k,
        N=n,
        bits=bits,
        block_size=block,
        **kwargs,
    )
    return node, new_inits


def _pack(values: np.ndarray, bits: int) -> np.ndarray:
    """Unsigned ints along the last axis into bytes: two per byte, low nibble first, at 4 bits."""
    values = values.astype(np.uint8)
    if bits == 8:
        return np.ascontiguousarray(values)
    if values.shape[-1] % 2:
        values = np.concatenate([values, np.zeros_like(values[..., :1])], axis=-1)
    return np.ascontiguousarray(values[..., 0::2] | (values[..., 1::2] << 4))


def check_repack(
    dq: onnx.NodeProto,
    matmul: onnx.NodeProto,
    nbits: onnx.NodeProto,
    inits: dict[str, onnx.TensorProto],
    new_inits: list[onnx.TensorProto],
    *,
    rows: int = 8,
    seed: int = 0,
) -> float:
    """Largest difference, relative to the output's scale, between DequantizeLinear + MatMul
    and the MatMulNBits replacing them, on random input (accuracy_level left unset so both
    compute in float)."""
    import onnxruntime as ort

    k = int(helper.get_attribute_value(next(a for a in nbits.attribute if a.name == "K")))
    x = np.random.default_rng(seed).standard_normal((rows, k)).astype(np.float32)
    plain = helper.make_node("MatMulNBits", list(nbits.input), ["y"], domain="com.microsoft")
    plain.attribute.extend(a for a in nbits.attribute if a.name != "accuracy_level")
    plain.input[0] = "x"
    pair = [
        helper.make_node(dq.op_type, list(dq.input), ["w"], **_attrs(dq)),
        helper.make_node("MatMul", ["x", "w"], ["y"]),
    ]
    options = ort.SessionOptions()
    # Unoptimized: ONNX Runtime would otherwise fuse the reference pair into MatMulNBits itself,
    # with int8 activations (session.qdq_matmulnbits_accuracy_level defaults to 4).
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    outputs = []
    for nodes, tensors in ((pair, [inits[i] for i in dq.input if i]), ([plain], new_inits)):
        graph = helper.make_graph(
            nodes,
            "check",
            [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [rows, k])],
            [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
            initializer=tensors,
        )
        model = helper.make_model(
            graph,
            ir_version=10,  # what ONNX Runtime reads; onnx's newest may be ahead of it
            opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)],
        )
        session = ort.InferenceSession(
            model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        outputs.append(session.run(["y"], {"x": x})[0])
    ref, got = outputs
    return float(np.abs(ref - got).max() / max(float(np.abs(ref).max()), 1e-12))


def _attrs(node: onnx.NodeProto) -> dict[str, object]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}
