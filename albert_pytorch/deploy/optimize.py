"""Graph optimization for two targets, each checked against the input model on the same inputs.

- `ort`: ONNX Runtime's transformer optimizer (Attention, SkipLayerNormalization, FastGelu, ...
  fusions; its code, not ours), optionally fp16.
- `atc`: standard ai.onnx ops only, for Ascend ATC: onnxsim's constant folding, then the rewrites
  the ModelZoo script makes for ATC's fused-attention pattern: 2-D [-1, hidden] inputs to the
  weight MatMuls, attention scaling as Mul by 1/sqrt(d) instead of Div, and the additive mask
  expanded to [batch, 1, seq, seq].
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

from .export import INPUT_NAMES, max_abs_diff

logger = logging.getLogger(__name__)


class OptimizeError(RuntimeError):
    """An optimized model that no longer computes what its input did."""


def optimize(input_file: str | os.PathLike, output_file: str | os.PathLike, target: str = "ort",
             fp16: bool = False, int8: bool = False) -> dict:
    """Optimize, save, check; returns a report with the op counts and the measured difference.

    `int8` (ort target) adds dynamic int8 quantization of the fused graph's weights; its check is
    the argmax agreement and difference it reports, since int8 is not meant to match fp32 to 1e-4.
    """
    import onnx

    input_file, output_file = Path(input_file), Path(output_file)
    if int8 and (fp16 or target != "ort"):
        raise ValueError("--int8 goes with --target ort and without --fp16")
    if target == "ort":
        model = _ort_fusions(input_file, fp16)
        if int8:
            model = _quantize_int8(model)
    elif target == "atc":
        model = _atc_rewrites(onnx.load(str(input_file)))
        if fp16:
            raise ValueError("--fp16 with --target atc: ATC chooses precision itself (see precision.ini)")
    else:
        raise ValueError(f"--target {target!r}: use ort or atc")
    output_file.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(output_file))
    ops = Counter(node.op_type for node in model.graph.node)
    domains = sorted({node.domain or "ai.onnx" for node in model.graph.node})
    diff, agree = _compare(input_file, output_file)
    tolerance = 5e-2 if fp16 else 1e-4
    if not int8 and not diff < tolerance:
        raise OptimizeError(f"{output_file}: differs from {input_file} by {diff:.2e} (limit {tolerance:.0e})")
    report = {"target": target, "fp16": fp16, "int8": int8, "max_abs_diff": diff, "argmax_agreement": agree,
              "domains": domains, "ops": dict(ops.most_common())}
    fused = {k: v for k, v in ops.items() if k in ("Attention", "SkipLayerNormalization", "FastGelu", "Gelu",
                                                   "BiasGelu", "EmbedLayerNormalization", "LayerNormalization")}
    logger.info("%s: fused ops %s; max |diff| vs input %.2e", output_file.name, fused or "none", diff)
    return report


def _ort_fusions(input_file: Path, fp16: bool):
    from onnxruntime.transformers.optimizer import optimize_model

    # ALBERT's encoder is BERT's; num_heads/hidden_size 0 lets the optimizer read them off the graph.
    optimized = optimize_model(str(input_file), model_type="bert", num_heads=0, hidden_size=0)
    if fp16:
        optimized.convert_float_to_float16(keep_io_types=True)
    return optimized.model


def _quantize_int8(model):
    """Dynamic int8 weights for the fused graph's MatMuls and Attention.

    The fused graph holds com.microsoft ops whose outputs ONNX shape inference cannot type, which
    makes a plain quantize_dynamic fail; they are all float, so we say so (DefaultTensorType).
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        source, target = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save(model, str(source))
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8,
                         op_types_to_quantize=["MatMul", "Attention"],
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        return onnx.load(str(target))


def _atc_rewrites(model):
    import onnx
    from onnx import helper, numpy_helper
    from onnxsim import simplify

    model, ok = simplify(model)
    if not ok:
        raise OptimizeError("onnxsim could not validate the simplified model")
    model = onnx.shape_inference.infer_shapes(model)
    shapes = {v.name: [d.dim_value or None for d in v.type.tensor_type.shape.dim]
              for v in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output)}
    inits = {i.name: i for i in model.graph.initializer}
    constants = inits | {node.output[0]: node.attribute[0].t for node in model.graph.node
                         if node.op_type == "Constant" and node.attribute[0].name == "value"}
    nodes, extra_inits = [], []

    def const(name: str, values, dtype=np.int64) -> str:
        extra_inits.append(numpy_helper.from_array(np.asarray(values, dtype=dtype), name))
        return name

    producers = {out: node.op_type for node in model.graph.node for out in node.output}
    for node in model.graph.node:
        # attention scaling: scores / c  ->  scores * (1/c); other Divs stay (the erf GELU's is ATC's pattern)
        if node.op_type == "Div" and node.input[1] in constants and producers.get(node.input[0]) == "MatMul":
            scale = numpy_helper.to_array(constants[node.input[1]])
            inverse = const(node.name + "_inverse", 1.0 / scale, scale.dtype)
            nodes.append(helper.make_node("Mul", [node.input[0], inverse], list(node.output), name=node.name))
            continue
        x_shape = shapes.get(node.input[0]) if node.input else None
        # weight MatMuls on [B, S, H] -> MatMul on [-1, H], reshaped back
        if (node.op_type == "MatMul" and node.input[1] in inits and x_shape and len(x_shape) == 3
                and all(x_shape) and len(inits[node.input[1]].dims) == 2):
            out_features = inits[node.input[1]].dims[1]
            flat, flat_out = node.output[0] + "_2d_in", node.output[0] + "_2d_out"
            nodes.append(helper.make_node("Reshape", [node.input[0], const(flat + "_shape", [-1, x_shape[2]])],
                                          [flat], name=node.name + "_to_2d"))
            nodes.append(helper.make_node("MatMul", [flat, node.input[1]], [flat_out], name=node.name))
            nodes.append(helper.make_node(
                "Reshape", [flat_out, const(flat_out + "_shape", [x_shape[0], x_shape[1], out_features])],
                list(node.output), name=node.name + "_to_3d"))
            continue
        # additive mask [B, 1, 1, S] -> [B, 1, S, S] where it meets the [B, nh, S, S] scores
        if node.op_type == "Add" and len(node.input) == 2:
            a, b = (shapes.get(n) for n in node.input)
            if a and b and len(a) == 4 and len(b) == 4 and b[2] == 1 and a[2] and a[2] > 1 and all(a) and b[0]:
                expanded = node.input[1] + f"_expanded_{node.name}"
                nodes.append(helper.make_node("Expand", [node.input[1], const(expanded + "_shape",
                                                                               [b[0], 1, a[2], a[3]])],
                                              [expanded], name=node.name + "_expand_mask"))
                nodes.append(helper.make_node("Add", [node.input[0], expanded], list(node.output), name=node.name))
                continue
        nodes.append(node)
    used = {name for node in nodes for name in node.input} | {out.name for out in model.graph.output}
    nodes = [node for node in nodes if node.op_type != "Constant" or node.output[0] in used]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    model.graph.initializer.extend(extra_inits)
    gelus = _gelu_anchors(model.graph.node)
    for layer, anchor in enumerate(gelus):
        anchor.name = f"albert/layer{layer}/gelu"
    logger.info("%d GELUs in the form ATC fuses; their Gelu ops will be named albert/layer<i>/gelu/Gelu "
                "(see precision.ini)", len(gelus))
    foreign = sorted({n.domain for n in model.graph.node if n.domain not in ("", "ai.onnx")})
    if foreign:
        raise OptimizeError(f"ops from {foreign} are not standard ONNX; ATC cannot take them")
    onnx.checker.check_model(model)
    return model


def _gelu_anchors(nodes) -> list:
    """Each GELU's node that ATC names its fused Gelu op after (`<name>/Gelu`), in layer order.

    From ATC's fusion passes: the tanh form Pow -> Mul -> Add -> Mul -> Tanh -> Add -> Mul -> Mul is
    named after its Pow, the erf form Div -> Erf -> Add -> Mul -> Mul after its last Mul.
    """
    consumers: dict[str, list] = {}
    for node in nodes:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def follow(node, op_types: list[str]):
        for op_type in op_types:
            following = consumers.get(node.output[0], [])
            if len(following) != 1 or following[0].op_type != op_type:
                return None
            node = following[0]
        return node

    anchors = []
    for node in nodes:
        if node.op_type == "Pow" and follow(node, ["Mul", "Add", "Mul", "Tanh", "Add", "Mul", "Mul"]):
            anchors.append(node)
        elif node.op_type == "Erf" and (last := follow(node, ["Add", "Mul", "Mul"])) is not None:
            anchors.append(last)
    return anchors


def _compare(reference: Path, candidate: Path) -> tuple[float, float]:
    """Max |diff| of outputs and argmax agreement, on inputs shaped like the model's with padded rows."""
    import onnxruntime as ort

    ref = ort.InferenceSession(str(reference), providers=["CPUExecutionProvider"])
    cand = ort.InferenceSession(str(candidate), providers=["CPUExecutionProvider"])
    feed = _probe_inputs(ref)
    a, b = ref.run(None, feed)[0], cand.run(None, feed)[0].astype(np.float32)
    agree = float((a.argmax(-1) == b.argmax(-1)).mean()) if a.shape[-1] > 1 else 1.0
    return max_abs_diff(a, b), agree


def _probe_inputs(session) -> dict[str, np.ndarray]:
    """Token ids in a safe range with ragged attention masks: every row a different length."""
    shape = session.get_inputs()[0].shape
    batch = shape[0] if isinstance(shape[0], int) else 4
    seq = shape[1] if isinstance(shape[1], int) else 32
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 100, (batch, seq), dtype=np.int64)
    lengths = np.linspace(seq, max(2, seq // 4), batch).astype(int)
    mask = (np.arange(seq)[None] < lengths[:, None]).astype(np.int64)
    types = np.zeros_like(ids)
    types[:, seq // 2:] = 1
    values = dict(zip(INPUT_NAMES, (ids * mask, mask, types * mask), strict=True))
    return {i.name: values[i.name] for i in session.get_inputs()}
