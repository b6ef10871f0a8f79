#!/usr/bin/python3
"""The graph ONNX Runtime's dynamic int8 quantizer makes, built with onnx.

`onnxruntime.quantization.quantize_dynamic(..., per_channel=True,
weight_type=QInt8)` turns each dense layer with constant weights into

    DynamicQuantizeLinear(A) -> A_q (uint8), A_scale, A_zero_point
    MatMulInteger(A_q, W_q, A_zero_point, W_zero_point) -> int32
    Cast(to float) -> Mul(A_scale * W_scale) -> Add(bias)

with W_q int8, symmetric, one scale per output column, and ORT's graph
optimizer fuses the chain into DynamicQuantizeMatMul / MatMulIntegerToFloat.
Its Python quantizer cannot be installed here (npm carries only the runtime),
so this writes the same graph with python3-onnx. Two differences from that
tool, both in the peer's favour or neutral: `Gemm` (how torch exports
nn.Linear, and which the dynamic mode skips, leaving almost nothing
quantized) is quantized as MatMul + bias; and every dense layer is quantized,
the logit layers included, as ORT does for MatMul.

DynamicQuantizeLinear picks one scale and zero point for the whole tensor,
i.e. per batch: a row's score depends on the other rows of its batch.

    /usr/bin/python3 bench/peers/quantize_onnx.py IN.onnx OUT.onnx
"""

import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _attributes(node):
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _quantizable(node, initializers):
    """(W [K, N] float32, bias name or None) of a dense layer with constant
    weights, or None when the node is not one."""
    if node.op_type == "MatMul" and node.input[1] in initializers:
        weight = numpy_helper.to_array(initializers[node.input[1]])
        return (weight, None) if weight.ndim == 2 else None
    if node.op_type != "Gemm" or node.input[1] not in initializers:
        return None
    a = _attributes(node)
    if a.get("transA", 0) or a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0:
        return None
    weight = numpy_helper.to_array(initializers[node.input[1]])
    if a.get("transB", 0):
        weight = weight.T
    bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
    return np.ascontiguousarray(weight), bias


def quantize_weights(weight):
    """Symmetric int8, one scale per output column: (W_q, scales)."""
    scale = np.abs(weight).max(axis=0) / 127.0
    scale[scale == 0] = 1.0
    quantized = np.clip(np.rint(weight / scale), -127, 127).astype(np.int8)
    return quantized, scale.astype(np.float32)


def quantize_dynamic(model):
    """The model with every constant-weight MatMul and Gemm dynamically
    quantized; returns (model, number of layers quantized)."""
    graph = model.graph
    initializers = {i.name: i for i in graph.initializer}
    nodes, new_initializers, count = [], [], 0
    for index, node in enumerate(graph.node):
        found = _quantizable(node, initializers)
        if found is None:
            nodes.append(node)
            continue
        weight, bias = found
        count += 1
        p = f"q{index}_{node.name or node.output[0]}".replace("/", "_").replace(":", "_")
        w_q, w_scale = quantize_weights(weight.astype(np.float32))
        new_initializers += [
            numpy_helper.from_array(w_q, p + "_W_q"),
            numpy_helper.from_array(w_scale, p + "_W_scale"),
            numpy_helper.from_array(np.zeros(w_q.shape[1], np.int8), p + "_W_zero_point"),
        ]
        output = node.output[0]
        product = output if bias is None else p + "_product"
        nodes += [
            helper.make_node("DynamicQuantizeLinear", [node.input[0]],
                             [p + "_A_q", p + "_A_scale", p + "_A_zero_point"], name=p + "_quantize"),
            helper.make_node("MatMulInteger", [p + "_A_q", p + "_W_q", p + "_A_zero_point", p + "_W_zero_point"],
                             [p + "_int32"], name=p + "_matmul"),
            helper.make_node("Cast", [p + "_int32"], [p + "_float"], to=TensorProto.FLOAT, name=p + "_cast"),
            helper.make_node("Mul", [p + "_A_scale", p + "_W_scale"], [p + "_scale"], name=p + "_scale_product"),
            helper.make_node("Mul", [p + "_float", p + "_scale"], [product], name=p + "_dequantize"),
        ]
        if bias is not None:
            nodes.append(helper.make_node("Add", [product, bias], [output], name=p + "_bias"))
    used = {name for n in nodes for name in n.input}
    kept = [i for i in graph.initializer if i.name in used]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    graph.initializer.extend(kept + new_initializers)
    if not any(o.domain in ("", "ai.onnx") and o.version >= 10 for o in model.opset_import):
        raise ValueError("MatMulInteger and DynamicQuantizeLinear need opset >= 10")
    onnx.checker.check_model(model)
    return model, count


def main(argv):
    if len(argv) != 3:
        sys.exit(__doc__)
    model, count = quantize_dynamic(onnx.load(argv[1]))
    if count == 0:
        sys.exit(f"{argv[1]}: no dense layer with constant weights to quantize")
    onnx.save(model, argv[2])
    print(f"{argv[2]}: {count} dense layers quantized")


if __name__ == "__main__":
    main(sys.argv)
