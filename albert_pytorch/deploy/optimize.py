"""Graph optimization for two targets, each checked against the input model on the same inputs.

- `ort`: ONNX Runtime's transformer optimizer (Attention, SkipLayerNormalization, FastGelu, ...
  fusions; its code, not ours), optionally fp16.
- `atc`: standard ai.onnx ops only, for Ascend ATC: onnxsim's constant folding, then named passes
  (`ATC_PASSES`): the ModelZoo script's rewrites for ATC's fused-attention pattern (attention scaling
  as Mul by 1/sqrt(d), 2-D [-1, hidden] inputs to the weight MatMuls, the additive mask expanded to
  [batch, 1, seq, seq]), then pruning and the GELU names that precision.ini addresses.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from ..data import INPUT_NAMES
from ..errors import UsageError
from .export import max_abs_diff

logger = logging.getLogger(__name__)


class OptimizeError(RuntimeError):
    """An optimized model that no longer computes what its input did."""


def _check_is_onnx(path: Path) -> None:
    """A file that onnx cannot parse is a bad argument, named, before any optimizer reads it."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, OSError) as err:
        raise UsageError(f"--input_file {path}: not an ONNX model ({err})") from None


def optimize(input_file: str | os.PathLike, output_file: str | os.PathLike, target: str = "ort",
             fp16: bool = False, int8: bool = False) -> dict:
    """Optimize, save, check; returns a report with the op counts and the measured difference.

    `int8` (ort target) adds dynamic int8 quantization of the fused graph's weights; its check is
    the argmax agreement and difference it reports, since int8 is not meant to match fp32 to 1e-4.
    """
    import onnx

    input_file, output_file = Path(input_file), Path(output_file)
    _check_is_onnx(input_file)
    rewrites: dict[str, int] = {}
    if int8 and (fp16 or target != "ort"):
        raise ValueError("--int8 goes with --target ort and without --fp16")
    if target == "ort":
        model = _ort_fusions(input_file, fp16)
        if int8:
            model = _quantize_int8(model)
    elif target == "atc":
        if fp16:
            raise ValueError("--fp16 with --target atc: ATC chooses precision itself (see precision.ini)")
        model, rewrites = _atc_rewrites(onnx.load(str(input_file)))
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
              "domains": domains, "ops": dict(ops.most_common()), "rewrites": rewrites}
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
        with _root_logger_above(logging.WARNING):
            quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8,
                             op_types_to_quantize=["MatMul", "Attention"],
                             extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        return onnx.load(str(target))


@contextlib.contextmanager
def _root_logger_above(level: int):
    """The quantizer logs to the root logger on every call, advising "pre-processing" (shape inference and graph
    optimization, which the fused graph has had) with a link: unless --debug opened the root logger, it says
    nothing above `level` while the block runs."""
    root = logging.getLogger()
    previous = root.level
    if previous >= logging.WARNING:
        root.setLevel(level + 1)
    try:
        yield
    finally:
        root.setLevel(previous)


def _atc_rewrites(model) -> tuple[Any, dict[str, int]]:
    """onnxsim, then the ATC passes in order; returns the model and how many rewrites each pass made."""
    import onnx
    from onnxsim import simplify

    model, ok = simplify(model)
    if not ok:
        raise OptimizeError("onnxsim could not validate the simplified model")
    graph = Graph(onnx.shape_inference.infer_shapes(model))
    counts = {rewrite.__name__: rewrite(graph) for rewrite in ATC_PASSES}
    logger.info("%d GELUs in the form ATC fuses; their Gelu ops will be named albert/layer<i>/gelu/Gelu "
                "(see precision.ini)", counts["name_gelus"])
    check_standard_ops(graph.model)
    onnx.checker.check_model(graph.model)
    return graph.model, counts


class Graph:
    """An ONNX model under rewrite, with the look-ups the passes share. Shapes are those inferred before
    the first pass; passes keep every tensor name they do not remove, so the shapes stay valid."""

    def __init__(self, model):
        self.model = model
        values = list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output)
        self.shapes = {v.name: [d.dim_value or None for d in v.type.tensor_type.shape.dim] for v in values}

    @property
    def nodes(self) -> list:
        return list(self.model.graph.node)

    def set_nodes(self, nodes: list) -> None:
        del self.model.graph.node[:]
        self.model.graph.node.extend(nodes)

    def initializers(self) -> dict:
        return {i.name: i for i in self.model.graph.initializer}

    def constants(self) -> dict:
        """Initializers and Constant nodes' values (TensorProtos), by output name."""
        return self.initializers() | {node.output[0]: node.attribute[0].t for node in self.model.graph.node
                                      if node.op_type == "Constant" and node.attribute[0].name == "value"}

    def producers(self) -> dict:
        return {out: node for node in self.model.graph.node for out in node.output}

    def add_initializer(self, name: str, values, dtype=np.int64) -> str:
        from onnx import numpy_helper

        self.model.graph.initializer.append(numpy_helper.from_array(np.asarray(values, dtype=dtype), name))
        return name


def scale_by_reciprocal(graph: Graph) -> int:
    """Attention's `scores / c` becomes `scores * (1/c)`, the Mul that ATC's fused-attention pattern has.

    Only a Div of a MatMul's output by a constant is attention scaling; other Divs stay (the erf
    GELU's Div by sqrt(2) is part of ATC's GELU pattern).
    """
    from onnx import helper, numpy_helper

    constants, producers = graph.constants(), graph.producers()
    nodes, count = [], 0
    for node in graph.nodes:
        source = producers.get(node.input[0]) if node.input else None
        if node.op_type == "Div" and node.input[1] in constants and source is not None and source.op_type == "MatMul":
            scale = numpy_helper.to_array(constants[node.input[1]])
            inverse = graph.add_initializer(node.name + "_inverse", 1.0 / scale, scale.dtype)
            node = helper.make_node("Mul", [node.input[0], inverse], list(node.output), name=node.name)
            count += 1
        nodes.append(node)
    graph.set_nodes(nodes)
    return count


def flatten_weight_matmuls(graph: Graph) -> int:
    """A MatMul of a static [B, S, H] activation by an [H, O] weight becomes Reshape to [B*S, H], MatMul,
    Reshape back: ATC maps 2-D MatMuls onto its matrix units directly.

    onnxsim already does this for a weight MatMul followed by a bias Add (it makes a 2-D Gemm), which is
    every one in ALBERT, so on our exports this finds nothing; it catches bias-free ones, which onnxsim
    leaves 3-D. The ModelZoo script needed it for graphs that reached it unsimplified.
    """
    from onnx import helper

    initializers = graph.initializers()
    nodes, count = [], 0
    for node in graph.nodes:
        x_shape = graph.shapes.get(node.input[0]) if node.input else None
        weight = initializers.get(node.input[1]) if node.op_type == "MatMul" else None
        if weight is None or len(weight.dims) != 2 or not x_shape or len(x_shape) != 3 or not all(x_shape):
            nodes.append(node)
            continue
        flat, flat_out = node.output[0] + "_2d_in", node.output[0] + "_2d_out"
        nodes.append(helper.make_node("Reshape", [node.input[0], graph.add_initializer(flat + "_shape",
                                                                                        [-1, x_shape[2]])],
                                      [flat], name=node.name + "_to_2d"))
        nodes.append(helper.make_node("MatMul", [flat, node.input[1]], [flat_out], name=node.name))
        back = graph.add_initializer(flat_out + "_shape", [x_shape[0], x_shape[1], weight.dims[1]])
        nodes.append(helper.make_node("Reshape", [flat_out, back], list(node.output), name=node.name + "_to_3d"))
        count += 1
    graph.set_nodes(nodes)
    return count


def expand_additive_mask(graph: Graph) -> int:
    """The additive mask [B, 1, 1, S] is expanded to [B, 1, S, S] where it is added to the static
    [B, heads, S, S] attention scores: ATC's fused attention takes the mask in that shape."""
    from onnx import helper

    nodes, count = [], 0
    for node in graph.nodes:
        a, b = (graph.shapes.get(name) for name in node.input) if len(node.input) == 2 else (None, None)
        if (node.op_type != "Add" or not a or not b or len(a) != 4 or len(b) != 4 or not all(a) or not b[0]
                or b[2] != 1 or a[2] <= 1):
            nodes.append(node)
            continue
        expanded = node.input[1] + f"_expanded_{node.name}"
        shape = graph.add_initializer(expanded + "_shape", [b[0], 1, a[2], a[3]])
        nodes.append(helper.make_node("Expand", [node.input[1], shape], [expanded], name=node.name + "_expand_mask"))
        nodes.append(helper.make_node("Add", [node.input[0], expanded], list(node.output), name=node.name))
        count += 1
    graph.set_nodes(nodes)
    return count


def prune_unused_constants(graph: Graph) -> int:
    """Drop Constant nodes that the rewrites left without a consumer."""
    nodes = graph.nodes
    used = {name for node in nodes for name in node.input} | {out.name for out in graph.model.graph.output}
    kept = [node for node in nodes if node.op_type != "Constant" or node.output[0] in used]
    graph.set_nodes(kept)
    return len(nodes) - len(kept)


def name_gelus(graph: Graph) -> int:
    """Name each layer's GELU anchor `albert/layer<i>/gelu`, so ATC's fused op is `albert/layer<i>/gelu/Gelu`
    in any export, whatever the length or batch: the names precision.ini addresses."""
    anchors = _gelu_anchors(graph.model.graph.node)
    for layer, anchor in enumerate(anchors):
        anchor.name = f"albert/layer{layer}/gelu"
    return len(anchors)


ATC_PASSES = (scale_by_reciprocal, flatten_weight_matmuls, expand_additive_mask, prune_unused_constants, name_gelus)


def check_standard_ops(model) -> None:
    foreign = sorted({n.domain for n in model.graph.node if n.domain not in ("", "ai.onnx")})
    if foreign:
        raise OptimizeError(f"ops from {foreign} are not standard ONNX; ATC cannot take them")


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
