"""Each ATC pass on a tiny graph: the rewrite it promises, and the same outputs in ONNX Runtime."""

import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper

from albert_pytorch.deploy.optimize import (
    Graph,
    OptimizeError,
    check_standard_ops,
    expand_additive_mask,
    flatten_weight_matmuls,
    name_gelus,
    prune_unused_constants,
    scale_by_reciprocal,
)


def model_of(nodes, inputs, outputs, initializers=()):
    graph = helper.make_graph(nodes, "tiny",
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs],
                              [numpy_helper.from_array(np.asarray(v, dtype=np.float32), n) for n, v in initializers])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)], ir_version=8)
    return onnx.shape_inference.infer_shapes(model)


def outputs_of(model, feed):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feed)


def rewritten(model, rewrite):
    """(rewritten model, rewrite count), the rewritten model checked against the original on random inputs."""
    rng = np.random.default_rng(0)
    feed = {i.name: rng.standard_normal([d.dim_value for d in i.type.tensor_type.shape.dim]).astype(np.float32)
            for i in model.graph.input}
    before = outputs_of(model, feed)
    graph = Graph(onnx.ModelProto.FromString(model.SerializeToString()))
    count = rewrite(graph)
    onnx.checker.check_model(graph.model)
    for a, b in zip(before, outputs_of(graph.model, feed), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    return graph.model, count


def ops(model):
    return [node.op_type for node in model.graph.node]


def test_scale_by_reciprocal_rewrites_attention_scaling_only():
    nodes = [helper.make_node("Constant", [], ["eight"], value=numpy_helper.from_array(np.float32(8.0))),
             helper.make_node("MatMul", ["q", "k"], ["scores"], name="qk"),
             helper.make_node("Div", ["scores", "eight"], ["scaled"], name="scale"),
             helper.make_node("Div", ["q", "two"], ["halved"], name="not_attention")]
    model = model_of(nodes, [("q", [2, 3]), ("k", [3, 4])], ["scaled", "halved"], [("two", 2.0)])
    model, count = rewritten(model, scale_by_reciprocal)
    assert count == 1 and ops(model).count("Div") == 1 and "Mul" in ops(model)
    (mul,) = [n for n in model.graph.node if n.op_type == "Mul"]
    inverse = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}[mul.input[1]]
    assert inverse == pytest.approx(0.125)


def test_flatten_weight_matmuls_goes_through_2d_for_static_activations():
    weight = np.arange(12, dtype=np.float32).reshape(4, 3) / 10
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"], name="dense"),
             helper.make_node("MatMul", ["x", "x_t"], ["gram"], name="activation_by_activation")]
    model = model_of(nodes, [("x", [2, 5, 4]), ("x_t", [2, 4, 5])], ["y", "gram"], [("w", weight)])
    model, count = rewritten(model, flatten_weight_matmuls)
    assert count == 1
    assert ops(model) == ["Reshape", "MatMul", "Reshape", "MatMul"]


def test_expand_additive_mask_to_the_scores_shape():
    nodes = [helper.make_node("Add", ["scores", "mask"], ["masked"], name="add_mask")]
    model = model_of(nodes, [("scores", [2, 3, 5, 5]), ("mask", [2, 1, 1, 5])], ["masked"])
    model, count = rewritten(model, expand_additive_mask)
    assert count == 1 and ops(model) == ["Expand", "Add"]
    (shape,) = [numpy_helper.to_array(i) for i in model.graph.initializer]
    assert shape.tolist() == [2, 1, 5, 5]


def test_prune_unused_constants():
    nodes = [helper.make_node("Constant", [], ["used"], value=numpy_helper.from_array(np.float32(1.0))),
             helper.make_node("Constant", [], ["orphan"], value=numpy_helper.from_array(np.float32(2.0))),
             helper.make_node("Add", ["x", "used"], ["y"])]
    model, count = rewritten(model_of(nodes, [("x", [3])], ["y"]), prune_unused_constants)
    assert count == 1 and [n.output[0] for n in model.graph.node] == ["used", "y"]


class TwoGelus(torch.nn.Module):
    """Layer 0's tanh GELU written as our explicit implementation exports it, layer 1's erf GELU."""

    def forward(self, x):
        tanh_gelu = x * (0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0)))))
        return F.gelu(tanh_gelu * 2.0)


def test_name_gelus_names_each_layers_anchor_as_precision_ini_does(tmp_path):
    path = tmp_path / "gelus.onnx"
    torch.onnx.export(TwoGelus(), (torch.randn(2, 4),), str(path), input_names=["x"], output_names=["y"],
                      opset_version=14, dynamo=False)
    model, count = rewritten(onnx.shape_inference.infer_shapes(onnx.load(str(path))), name_gelus)
    named = {node.name: node.op_type for node in model.graph.node}
    assert count == 2
    assert named["albert/layer0/gelu"] == "Pow"  # ATC names the tanh form's Gelu after its Pow
    assert named["albert/layer1/gelu"] == "Mul"  # and the erf form's after its last Mul


def test_check_standard_ops_refuses_other_domains():
    node = helper.make_node("FastGelu", ["x"], ["y"], domain="com.microsoft")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    with pytest.raises(OptimizeError, match="com.microsoft"):
        check_standard_ops(helper.make_model(graph))
