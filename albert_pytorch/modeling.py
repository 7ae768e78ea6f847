"""ALBERT in PyTorch, one file, top to bottom.

ALBERT is BERT with two savings (Lan et al., 2019):
- factorized embeddings: tokens are embedded in a small space (embedding_size, 128) and projected
  up to hidden_size once, so the vocabulary matrix stays small;
- cross-layer sharing: `num_hidden_layers` layer applications reuse `num_hidden_groups` groups of
  `inner_group_num` layers, so albert-base has the weights of one BERT layer, run 12 times.

Parameter names match Hugging Face's `modeling_albert.py` exactly (`LayerNorm` included), so a state
dict moves between the two libraries without renaming.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from . import gemm_rows
from .config import KERNEL_IMPLEMENTATIONS, AlbertConfig
from .gemm_rows import RowSplit
from .io import atomic_write
from .weights import WEIGHTS_NAME, WeightsError, load_state_dict, normalize_keys, resolve_model_dir

logger = logging.getLogger(__name__)


_GELU_C = math.sqrt(2.0 / math.pi)


def _gelu_tanh_pow(x: torch.Tensor) -> torch.Tensor:
    """GELU, tanh approximation, written with Pow(x, 3): the form ONNX Runtime fuses into FastGelu and
    Ascend ATC into Gelu (the exporter's own decomposition of F.gelu, x*x*x, is not ATC's pattern)."""
    return x * (0.5 * (1.0 + torch.tanh(_GELU_C * (x + 0.044715 * torch.pow(x, 3.0)))))


def _gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


def _gelu_tanh_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """The tanh GELU as x * sigmoid(2z), since 0.5 * (1 + tanh(z)) = sigmoid(2z), in fp32 whatever x's dtype:
    the form inductor turns into one vectorized loop (torch's tanh-GELU kernel spends 2.2 ms on 2.4 M bf16 values,
    where a whole fp32 tanh takes 0.5)."""
    x32 = x.float()
    return (x32 * _sigmoid_2z(x32)).to(x.dtype)


def _sigmoid_2z(x32: torch.Tensor) -> torch.Tensor:
    """sigmoid(2z), z = sqrt(2/pi) (x + 0.044715 x^3): the tanh GELU's gate, 0.5 * (1 + tanh z)."""
    return torch.sigmoid(2 * _GELU_C * (x32 + 0.044715 * x32 * x32 * x32))


def _gelu_tanh_sigmoid_and_slope(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`_gelu_tanh_sigmoid` and its derivative at x, both from the one sigmoid s: d/dx x*s(2z) = s + 2x s (1 - s) z'."""
    x32 = x.float()
    s = _sigmoid_2z(x32)
    slope = s + 2 * _GELU_C * x32 * s * (1 - s) * (1 + 3 * 0.044715 * x32 * x32)
    return (x32 * s).to(x.dtype), slope.to(x.dtype)


class _GeluKeepingSlope(torch.autograd.Function):
    """The GELU whose forward keeps its derivative, in place of its input, so that backward is one multiplication
    rather than a second pass through the sigmoid: 1.3x the compiled GELU's forward and backward together, 1.02-1.09x
    whole bf16 training steps at albert-base (docs/benchmarks.md). The derivative is rounded to the input's dtype
    once more than autograd's would be; in bf16, well inside bf16's own rounding."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, kernel: Callable) -> torch.Tensor:
        y, slope = kernel(x)
        ctx.save_for_backward(slope)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (slope,) = ctx.saved_tensors
        return grad * slope, None


@functools.cache
def compiled_gelu_tanh() -> Callable[[torch.Tensor], torch.Tensor]:
    """The tanh GELU through torch.compile, built once per process (about 4 s each, cached on disk by inductor):
    where a gradient will be taken, the value and its slope from one loop (`_GeluKeepingSlope`); else the value
    alone. Shapes are dynamic, so batches of any length share one kernel."""
    value = torch.compile(_gelu_tanh_sigmoid, dynamic=True)
    value_and_slope = torch.compile(_gelu_tanh_sigmoid_and_slope, dynamic=True)

    def gelu(x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            return _GeluKeepingSlope.apply(x, value_and_slope)
        return value(x)

    return gelu


def _transposed(a: torch.Tensor) -> torch.Tensor:
    return a.t().contiguous()


@functools.cache
def compiled_transpose() -> Callable[[torch.Tensor], torch.Tensor]:
    """A matrix's transpose made contiguous, through torch.compile: inductor's tiled loop is 2-4x torch's strided
    copy on bf16 rows (0.25 against 0.8 ms for 1,312 x 768). Built once per process; shapes are dynamic."""
    return torch.compile(_transposed, dynamic=True)


_ACTIVATIONS = {
    "gelu": F.gelu,
    "gelu_new": _gelu_tanh,
    "gelu_fast": _gelu_tanh,
    "gelu_pytorch_tanh": _gelu_tanh,
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
    "tanh": torch.tanh,
    "mish": F.mish,
}
# The same functions spelled out for graph compilers, where the fused kernel's export is not their pattern.
_EXPLICIT_ACTIVATIONS = {"gelu_new": _gelu_tanh_pow, "gelu_fast": _gelu_tanh_pow, "gelu_pytorch_tanh": _gelu_tanh_pow}

# How attention, activations and the shared layer's weights are computed; all give the same numbers.
# - "shared": attention as the config's attn_implementation says (torch's fused scaled_dot_product_attention with
#   a boolean mask, or "eager" attention), the activation and the weight gradients' operands as `use_kernels` set
#   them, and each shared weight prepared once per forward (`SharedLinear`: one query-key-value GEMM, gradients
#   summed inside the GEMMs): training and batch inference.
# - "modules": the same numbers with every nn.Linear called as a module, autograd summing the shared weights'
#   gradients: no per-forward preparation, which costs more than it gives on a batch of one (`serve`), and the
#   reference that tests and the benchmark hold SharedLinear against.
# - "explicit": eager attention (MatMul/Div/Add/Softmax/MatMul with BERT's additive mask) whatever the config,
#   the tanh GELU with Pow(x, 3), and the modules' separate MatMuls: the patterns ONNX Runtime's transformer
#   fusions and Ascend ATC's passes match. For export.
IMPLEMENTATIONS = ("shared", "modules", "explicit")


def compute_dtype(weight: torch.Tensor) -> torch.dtype:
    """The dtype a matmul with `weight` computes in: autocast's where the caller turned it on for the weight's
    device (every autocast op reads the same state), else the weight's own."""
    device_type = weight.device.type
    return torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else weight.dtype


class SharedLinear:
    """One forward's view of a linear map whose weight several layer applications share (ALBERT runs one
    layer's weights 12 times): the weight and bias cast to the compute dtype once, rather than by each use,
    and the weight's gradient summed inside each use's backward GEMM (addmm with beta 1) into one buffer.
    Autograd would instead take 12 full-size gradients and add them one by one: 7-9% of a bf16 training step
    at albert-base (docs/benchmarks.md, "bf16 training nearer its ceiling"). Make a new one
    for every forward; the weights and biases of `linears` are concatenated along the output features (query,
    key and value as one GEMM).

    `row_split` runs the GEMMs whose output is its width in row chunks where the host's oneDNN would leave a
    thread idle (`gemm_rows`). `transpose`, where given, makes a contiguous transpose for the weight-gradient GEMMs:
    their operands are the uses' rows, which the GEMM reads transposed, and oneDNN's AMX GEMM runs about 2x as fast
    on a contiguous transposed copy as on the strided view (docs/benchmarks.md, "the weight gradients' operands").
    The narrower of the two operands is the one copied; where that is the input, the buffer sums the transposed
    gradient, transposed back once when handed over. Without it, the GEMMs read the strided views."""

    def __init__(self, linears: list[nn.Linear], dtype: torch.dtype,
                 transpose: Callable[[torch.Tensor], torch.Tensor] | None = None, row_split: RowSplit | None = None):
        self.weight = _joined([m.weight for m in linears], dtype)
        self.bias = _joined([m.bias for m in linears], dtype)
        self.transpose = transpose
        self.row_split = row_split
        out_features, in_features = self.weight.shape
        # the weight-gradient GEMMs' operand copied transposed: the narrower one, where the widths differ
        self.copied = None if transpose is None or in_features == out_features else \
            "input" if in_features < out_features else "gradient"
        self.uses = 0  # calls in this forward
        self.summed = 0  # backward calls since the gradient was last handed to autograd
        self.grad: torch.Tensor | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.uses += 1
        return _SummedGradientLinear.apply(x.to(self.weight.dtype), self.weight, self.bias, self)

    def add_weight_gradient(self, grad_rows: torch.Tensor, input_rows: torch.Tensor) -> None:
        """Add one use's weight gradient, grad_rows^T @ input_rows, to the buffer."""
        if self.copied == "input":  # the buffer sums the transposed gradient
            a, b = self.transpose(input_rows), grad_rows
        elif self.copied == "gradient":
            a, b = self.transpose(grad_rows), input_rows
        else:
            a, b = grad_rows.t(), input_rows
        if self.grad is None:
            self.grad = a @ b
        else:
            self.grad.addmm_(a, b)
        self.summed += 1

    def summed_gradient(self) -> torch.Tensor | None:
        """The weight's whole gradient once every use's is in (the buffer starts afresh for a rerun), else None."""
        if self.summed < self.uses:
            return None
        grad = self.transpose(self.grad) if self.copied == "input" else self.grad
        self.grad, self.summed = None, 0
        return grad


def _joined(tensors: list[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
    """`tensors` cast to `dtype` and concatenated along the output features (one alone is only cast)."""
    return torch.cat([t.to(dtype) for t in tensors]) if len(tensors) > 1 else tensors[0].to(dtype)


class _SummedGradientLinear(torch.autograd.Function):
    """F.linear whose weight gradient is added into its SharedLinear's buffer; the last use's backward (the
    first use in forward) hands the whole sum to autograd, the others give none."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, shared: SharedLinear):
        ctx.save_for_backward(x, weight)
        ctx.shared = shared
        y = gemm_rows.matmul(x.reshape(-1, x.shape[-1]), weight.t(), bias, shared.row_split)
        return y.view(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x, weight = ctx.saved_tensors
        shared: SharedLinear = ctx.shared
        rows = grad_out.reshape(-1, grad_out.shape[-1])
        shared.add_weight_gradient(rows, x.reshape(-1, x.shape[-1]))
        grad_x = gemm_rows.matmul(rows, weight, None, shared.row_split).view(x.shape)
        return grad_x, shared.summed_gradient(), rows.sum(0), None


class AlbertEmbeddings(nn.Module):
    def __init__(self, config: AlbertConfig):
        super().__init__()
        e = config.embedding_size
        self.word_embeddings = nn.Embedding(config.vocab_size, e, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, e)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, e)
        self.LayerNorm = nn.LayerNorm(e, eps=config.layer_norm_eps)  # HF/TF checkpoint name
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        # A buffer rather than torch.arange in forward: tracing then bakes no device or length in.
        self.register_buffer("position_ids", torch.arange(config.max_position_embeddings)[None], persistent=False)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        seq_len = input_ids.shape[1]
        x = (self.word_embeddings(input_ids)
             + self.token_type_embeddings(token_type_ids)
             + self.position_embeddings(self.position_ids[:, :seq_len]))
        return self.dropout(self.LayerNorm(x))  # (B, T, E)


class AlbertAttention(nn.Module):
    def __init__(self, config: AlbertConfig):
        super().__init__()
        h = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_size = h // config.num_attention_heads
        self.query = nn.Linear(h, h)
        self.key = nn.Linear(h, h)
        self.value = nn.Linear(h, h)
        self.dense = nn.Linear(h, h)
        self.LayerNorm = nn.LayerNorm(h, eps=config.layer_norm_eps)
        self.attention_dropout = config.attention_probs_dropout_prob
        self.output_dropout = nn.Dropout(config.hidden_dropout_prob)

    def shared(self, dtype: torch.dtype, transpose: Callable | None,
               row_split: RowSplit | None) -> dict[str, SharedLinear]:
        how = (dtype, transpose, row_split)  # see SharedLinear
        return {"qkv": SharedLinear([self.query, self.key, self.value], *how),
                "dense": SharedLinear([self.dense], *how)}

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, eager: bool,
                shared: dict[str, SharedLinear] | None) -> torch.Tensor:
        B, T, H = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(B, T, self.num_heads, self.head_size).transpose(1, 2)  # (B, nh, T, hs)

        if shared is None:
            q, k, v = heads(self.query(x)), heads(self.key(x)), heads(self.value(x))
        else:
            q, k, v = (heads(t) for t in shared["qkv"](x).split(H, dim=-1))
        if eager:
            # ONNX Runtime's optimizer fuses this MatMul/Div/Add/Softmax/MatMul chain into one
            # Attention op; an exported SDPA it does not. `mask` is additive here.
            scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_size)  # (B, nh, T, T)
            if mask is not None:
                scores = scores + mask
            probs = torch.softmax(scores, dim=-1)
            if self.training and self.attention_dropout:
                probs = F.dropout(probs, self.attention_dropout)
            y = probs @ v
        else:
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=self.attention_dropout if self.training else 0.0)
        y = y.transpose(1, 2).reshape(B, T, H)
        y = self.dense(y) if shared is None else shared["dense"](y)
        return self.LayerNorm(x + self.output_dropout(y))


class AlbertLayer(nn.Module):
    def __init__(self, config: AlbertConfig):
        super().__init__()
        self.attention = AlbertAttention(config)
        self.ffn = nn.Linear(config.hidden_size, config.intermediate_size)
        self.ffn_output = nn.Linear(config.intermediate_size, config.hidden_size)
        self.activation = _ACTIVATIONS[config.hidden_act]
        self.explicit_activation = _EXPLICIT_ACTIVATIONS.get(config.hidden_act, self.activation)
        self.full_layer_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def shared(self, dtype: torch.dtype, transpose: Callable | None,
               row_split: RowSplit | None) -> dict[str, SharedLinear]:
        how = (dtype, transpose, row_split)  # see SharedLinear
        return {**self.attention.shared(*how), "ffn": SharedLinear([self.ffn], *how),
                "ffn_output": SharedLinear([self.ffn_output], *how)}

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, eager: bool, explicit: bool,
                shared: dict[str, SharedLinear] | None) -> torch.Tensor:
        x = self.attention(x, mask, eager, shared)
        activation = self.explicit_activation if explicit else self.activation
        ffn, ffn_output = (self.ffn, self.ffn_output) if shared is None else (shared["ffn"], shared["ffn_output"])
        # HF applies no dropout to the FFN output (the `dropout` module exists only for its name).
        return self.full_layer_layer_norm(x + ffn_output(activation(ffn(x))))


class AlbertLayerGroup(nn.Module):
    def __init__(self, config: AlbertConfig):
        super().__init__()
        self.albert_layers = nn.ModuleList(AlbertLayer(config) for _ in range(config.inner_group_num))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, eager: bool, explicit: bool,
                shared: list[dict[str, SharedLinear]] | None) -> torch.Tensor:
        for j, layer in enumerate(self.albert_layers):
            x = layer(x, mask, eager, explicit, None if shared is None else shared[j])
        return x


class AlbertTransformer(nn.Module):
    def __init__(self, config: AlbertConfig):
        super().__init__()
        self.num_hidden_layers = config.num_hidden_layers
        self.layers_per_group = config.num_hidden_layers / config.num_hidden_groups  # may be fractional
        self.embedding_hidden_mapping_in = nn.Linear(config.embedding_size, config.hidden_size)
        self.albert_layer_groups = nn.ModuleList(AlbertLayerGroup(config) for _ in range(config.num_hidden_groups))
        self.transpose: Callable | None = None  # SharedLinear's, set by `use_kernels`
        self.row_split: RowSplit | None = None  # SharedLinear's, set by `split_gemm_rows`

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, eager: bool, explicit: bool,
                share: bool) -> torch.Tensor:
        x = self.embedding_hidden_mapping_in(x)  # (B, T, E) -> (B, T, H)
        shared = None
        if share:  # each group's weights prepared once for all its uses in this forward (SharedLinear)
            dtype = compute_dtype(self.embedding_hidden_mapping_in.weight)
            shared = [[layer.shared(dtype, self.transpose, self.row_split) for layer in group.albert_layers]
                      for group in self.albert_layer_groups]
        # Each of the num_hidden_layers steps runs a whole group; groups are reused in order. Layer i
        # uses group int(i / (layers / groups)), as Google's code and transformers compute it, which
        # also serves layer counts that are not a multiple of the group count.
        for i in range(self.num_hidden_layers):
            g = int(i / self.layers_per_group)
            x = self.albert_layer_groups[g](x, mask, eager, explicit, None if shared is None else shared[g])
        return x


class AlbertModel(nn.Module):
    def __init__(self, config: AlbertConfig):
        super().__init__()
        self.embeddings = AlbertEmbeddings(config)
        self.encoder = AlbertTransformer(config)
        self.pooler = nn.Linear(config.hidden_size, config.hidden_size)
        self.implementation = "shared"  # see IMPLEMENTATIONS; changed only through `implementation(...)`
        self.attn_implementation = config.attn_implementation

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        explicit = self.implementation == "explicit"
        eager = explicit or self.attn_implementation == "eager"
        mask = None  # no mask at all lets SDPA pick its fastest kernel for unpadded batches
        if attention_mask is not None and eager:
            # BERT's additive mask, (1 - mask) * -10000, which ONNX Runtime's fusion recognizes.
            mask = (1.0 - attention_mask[:, None, None, :].float()) * -10000.0
        elif attention_mask is not None:
            # SDPA's boolean mask, True where a query may attend: (B, 1, 1, T) broadcasts over heads and queries.
            mask = attention_mask[:, None, None, :].bool()
        sequence = self.encoder(self.embeddings(input_ids, token_type_ids), mask, eager, explicit,
                                share=self.implementation == "shared")  # (B, T, H)
        pooled = torch.tanh(self.pooler(sequence[:, 0]))  # [CLS] -> (B, H)
        return sequence, pooled


@dataclass
class SequenceClassifierOutput:
    logits: torch.Tensor
    loss: torch.Tensor | None = None


@dataclass
class PreTrainingOutput:
    """Without labels, `prediction_logits` (B, T, V). With them, instead: `mlm_loss` (the mean over the M
    predicted tokens), `mlm_correct` (M,) whether each target scored highest, and `loss` (MLM plus SOP)."""
    sop_logits: torch.Tensor
    prediction_logits: torch.Tensor | None = None
    mlm_loss: torch.Tensor | None = None
    mlm_correct: torch.Tensor | None = None
    loss: torch.Tensor | None = None


class AlbertPreTrainedModel(nn.Module):
    """Weight init and the Hugging Face directory format (config.json + model.safetensors)."""

    architecture = "AlbertPreTrainedModel"
    # Keys present in a checkpoint for another head; loading them is skipped without complaint.
    head_prefixes: tuple[str, ...] = ()
    # Keys this class may create fresh when the checkpoint is a backbone or another head.
    new_head_prefixes: tuple[str, ...] = ()
    tied_keys: tuple[str, ...] = ()

    def __init__(self, config: AlbertConfig):
        super().__init__()
        self.config = config
        self.newly_initialized: list[str] = []  # keys `from_pretrained` started fresh (a head the weights lack)

    @contextlib.contextmanager
    def implementation(self, name: str) -> Iterator[AlbertPreTrainedModel]:
        """Compute attention and activations as `name` says (see IMPLEMENTATIONS) inside the block only:
        `with model.implementation("explicit"): torch.onnx.export(model, ...)`."""
        if name not in IMPLEMENTATIONS:
            raise ValueError(f"implementation {name!r}: use one of {', '.join(IMPLEMENTATIONS)}")
        albert: AlbertModel = self.albert
        previous, albert.implementation = albert.implementation, name
        try:
            yield self
        finally:
            albert.implementation = previous

    def use_kernels(self, implementation: str) -> None:
        """Run the element-wise and layout work of training and PyTorch inference on `implementation`'s kernels
        (see KERNEL_IMPLEMENTATIONS): "compiled" computes the tanh GELU (hidden_act gelu_new and its aliases)
        through torch.compile with its slope kept for backward, and has SharedLinear feed its weight-gradient
        GEMMs a contiguous transposed copy made by a compiled kernel; "eager" uses torch's GELU kernel and the
        GEMMs read strided views. The same numbers either way, to float rounding. Export keeps its own form."""
        if implementation not in KERNEL_IMPLEMENTATIONS:
            raise ValueError(f"kernel implementation {implementation!r}: use one of "
                             f"{', '.join(KERNEL_IMPLEMENTATIONS)}")
        compiled = implementation == "compiled"
        act = self.config.hidden_act
        function = compiled_gelu_tanh() if compiled and act in _EXPLICIT_ACTIVATIONS else _ACTIVATIONS[act]
        for module in self.modules():
            if isinstance(module, AlbertLayer):
                module.activation = function
            elif isinstance(module, AlbertTransformer):
                module.transpose = compiled_transpose() if compiled else None

    def split_gemm_rows(self, split: RowSplit | None) -> None:
        """Run the shared layers' GEMMs with `split`'s output width in its row chunks (`gemm_rows`); None: whole.
        The same products, each row's sums split among threads as oneDNN chooses for each call."""
        for module in self.modules():
            if isinstance(module, AlbertTransformer):
                module.row_split = split

    def init_weights(self) -> None:
        self.apply(self._init_module)

    def _init_module(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=std)
            if module.padding_idx is not None:
                module.weight.data[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    # -- saving ---------------------------------------------------------------------------------

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write config.json and model.safetensors with Hugging Face's names, each atomically."""
        from safetensors.torch import save

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items() if k not in self.tied_keys}
        # serialized in memory and written by Python, so a full disk is a plain OSError
        data = save(state, metadata={"format": "pt"})
        atomic_write(directory / WEIGHTS_NAME, lambda tmp: tmp.write_bytes(data))
        self.config.extra["architectures"] = [self.architecture]
        self.config.save_pretrained(directory)

    # -- loading --------------------------------------------------------------------------------

    @classmethod
    def from_config(cls, config: AlbertConfig):
        model = cls(config)
        model.init_weights()
        return model

    @classmethod
    def from_pretrained(cls, path_or_hub_id: str | os.PathLike, num_labels: int | None = None,
                        labels: list[str] | None = None, config: AlbertConfig | None = None):
        """Load a Hugging Face-format ALBERT directory or hub id.

        `labels` (or `num_labels`) set the classifier's outputs; when they differ from the
        checkpoint's, the head is re-initialized and a warning names it. Backbone keys that are
        missing or mis-shaped are an error, never silently random.
        """
        directory = resolve_model_dir(path_or_hub_id)
        config = config or AlbertConfig.from_pretrained(directory)
        if labels is not None or num_labels not in (None, config.num_labels):
            config.set_labels(labels if labels is not None or num_labels == 1
                              else [f"LABEL_{i}" for i in range(num_labels)])
        state = load_state_dict(directory)
        model = cls(config)
        model.init_weights()
        model._load_checked(state, source=directory)
        return model

    def _load_checked(self, state: dict[str, torch.Tensor], source: Path) -> None:
        """Load `state`, starting a head fresh where the checkpoint lacks it or sizes it otherwise.

        A module under `new_head_prefixes` that the checkpoint lacks entirely is a head of another
        model (run_mlm's AlbertForMaskedLM has no pooler, a backbone no classifier) and starts fresh;
        one that is partly there is damage, and like any other missing or mis-shaped key an error.
        """
        state = normalize_keys(state, self.state_dict().keys())
        own = self.state_dict()
        mismatched = [k for k, v in state.items() if k in own and v.shape != own[k].shape]
        reinit_heads = [k for k in mismatched if k.startswith(self.new_head_prefixes)]
        mismatched = [k for k in mismatched if k not in reinit_heads]
        missing = [k for k in own if k not in state and k not in self.tied_keys]
        absent_heads = tuple(p for p in self.new_head_prefixes if not any(k.startswith(p) for k in state))
        fresh = [k for k in missing if k.startswith(absent_heads)]
        missing = [k for k in missing if k not in fresh]
        unexpected = [k for k in state if k not in own and not k.startswith(self.head_prefixes)]
        problems = []
        if missing:
            problems.append(f"missing keys: {', '.join(missing)}")
        if mismatched:
            problems.append("mis-shaped keys: " + ", ".join(
                f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in mismatched))
        if unexpected:
            problems.append(f"unexpected keys: {', '.join(unexpected)}")
        if problems:
            raise WeightsError(f"{source}: the weights do not fit this ALBERT config; " + "; ".join(problems))
        for key in reinit_heads + fresh:
            state.pop(key, None)
        self.newly_initialized = sorted(set(reinit_heads + fresh))
        if reinit_heads or fresh:
            logger.warning("%s: newly initialized (train them before use): %s", source,
                           ", ".join(sorted(set(reinit_heads + fresh))))
        unused = sorted(k for k in state if k not in own)
        if unused:
            logger.warning("%s: not used by %s (another model's head): %s", source, type(self).__name__,
                           ", ".join(unused))
        self.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
        self.tie_weights()

    def tie_weights(self) -> None:
        """Point tied parameters at their source; a no-op for heads without tied weights."""


class AlbertForSequenceClassification(AlbertPreTrainedModel):
    """ALBERT + dropout + linear on the pooled [CLS]: classification, or regression when num_labels == 1."""

    architecture = "AlbertForSequenceClassification"
    head_prefixes = ("predictions.", "sop_classifier.")
    new_head_prefixes = ("classifier.", "albert.pooler.")

    def __init__(self, config: AlbertConfig):
        super().__init__(config)
        self.albert = AlbertModel(config)
        self.dropout = nn.Dropout(config.classifier_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None,
                labels: torch.Tensor | None = None) -> SequenceClassifierOutput:
        _, pooled = self.albert(input_ids, attention_mask, token_type_ids)
        logits = self.classifier(self.dropout(pooled))  # (B, num_labels)
        loss = None if labels is None else self.loss(logits, labels)
        return SequenceClassifierOutput(logits=logits, loss=loss)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.config.is_regression:
            return F.mse_loss(logits.view(-1).float(), labels.view(-1).float())
        return F.cross_entropy(logits.float(), labels.view(-1))


class AlbertMLMHead(nn.Module):
    def __init__(self, config: AlbertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.embedding_size)
        self.activation = _ACTIVATIONS[config.hidden_act]
        self.LayerNorm = nn.LayerNorm(config.embedding_size, eps=config.layer_norm_eps)
        self.decoder = nn.Linear(config.embedding_size, config.vocab_size)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def transform(self, sequence: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.activation(self.dense(sequence)))  # (..., E)

    def forward(self, sequence: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.transform(sequence))  # (B, T, V)


# Vocabulary logits held at once: 8M floats (32 MB), so memory stays flat however many tokens are masked.
# Why this size: docs/benchmarks.md (the chunked vocabulary loss).
_LOGIT_CHUNK_ELEMENTS = 2 ** 23


class _VocabularyCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of `hidden @ weight.T + bias` against `targets`, chunk by chunk over the rows.

    The gradient is finished inside forward, while each chunk's softmax is at hand, so the (M, V) logits,
    their log-softmax and its gradient are never stored; backward only scales it by the incoming gradient.
    """

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, targets: torch.Tensor,
                chunk_rows: int, needs_grad: bool) -> tuple[torch.Tensor, torch.Tensor]:
        rows = hidden.shape[0]
        total_loss = torch.zeros((), device=hidden.device)
        correct = torch.empty(rows, dtype=torch.bool, device=hidden.device)
        if needs_grad:
            grad_hidden = torch.empty(hidden.shape, device=hidden.device)
            grad_weight = torch.zeros(weight.shape, device=weight.device)
            grad_bias = torch.zeros(bias.shape, device=bias.device)
            weight32 = weight.float()
        for start in range(0, rows, chunk_rows):
            h, y = hidden[start:start + chunk_rows], targets[start:start + chunk_rows]
            logits = torch.addmm(bias, h, weight.t()).float()  # in the caller's autocast precision
            top = logits.amax(dim=1)  # the max alone: an argmax pass costs several times more
            target_logit = logits.gather(1, y[:, None]).squeeze(1)
            correct[start:start + chunk_rows] = target_logit >= top
            exp = logits.sub_(top[:, None]).exp_()  # in place: the chunk's one (rows, V) buffer
            partition = exp.sum(dim=1)
            total_loss += (partition.log() + top - target_logit).sum()
            if needs_grad:
                with torch.autocast(hidden.device.type, enabled=False):
                    _accumulate_softmax_gradient(exp, partition, h.float(), y, weight32,
                                                 grad_hidden[start:start + chunk_rows], grad_weight, grad_bias)
        if needs_grad:
            ctx.save_for_backward(grad_hidden / max(rows, 1), grad_weight / max(rows, 1), grad_bias / max(rows, 1))
        ctx.mark_non_differentiable(correct)
        # a batch with nothing to predict (every word longer than its sequence's budget) adds no loss, as the
        # reference's 1e-5 in the denominator makes it, instead of 0/0
        return total_loss / max(rows, 1), correct

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor, _grad_correct: torch.Tensor):
        grad_hidden, grad_weight, grad_bias = ctx.saved_tensors
        return grad_hidden * grad_loss, grad_weight * grad_loss, grad_bias * grad_loss, None, None, None


def _accumulate_softmax_gradient(exp: torch.Tensor, partition: torch.Tensor, h: torch.Tensor, y: torch.Tensor,
                                 weight: torch.Tensor, grad_hidden: torch.Tensor, grad_weight: torch.Tensor,
                                 grad_bias: torch.Tensor) -> None:
    """Add one chunk's summed-loss gradient, (softmax - one_hot(y)), pushed through the projection. The
    softmax's 1/partition scales the small operands instead, which saves a pass over the chunk's logits."""
    inverse = partition.reciprocal()
    grad_hidden.copy_((exp @ weight).mul_(inverse[:, None]).sub_(weight[y]))
    grad_weight.addmm_(exp.t(), h * inverse[:, None]).index_add_(0, y, h, alpha=-1)
    grad_bias.addmv_(exp.t(), inverse).index_add_(0, y, torch.ones_like(inverse), alpha=-1)


def vocabulary_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                             targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`F.cross_entropy(hidden @ weight.T + bias, targets)` and whether each target has the highest logit
    (the argmax, up to exact ties), (M, E) -> (), (M,), without materializing the (M, V) logits: see
    `_VocabularyCrossEntropy`."""
    chunk_rows = max(1, _LOGIT_CHUNK_ELEMENTS // weight.shape[0])
    # forward runs with grad mode off, so whether a backward can follow is decided here
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (hidden, weight, bias))
    return _VocabularyCrossEntropy.apply(hidden, weight, bias, targets, chunk_rows, needs_grad)


class AlbertSOPHead(nn.Module):
    def __init__(self, config: AlbertConfig):
        super().__init__()
        self.dropout = nn.Dropout(config.classifier_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, 2)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(pooled))  # (B, 2): in order / swapped


class AlbertForPreTraining(AlbertPreTrainedModel):
    """Masked-LM + sentence-order prediction, ALBERT's pretraining objective."""

    architecture = "AlbertForPreTraining"
    head_prefixes = ("classifier.",)  # a fine-tuned classifier's head: its encoder pretrains on without it
    new_head_prefixes = ("predictions.", "sop_classifier.")
    # The decoder reuses the input embedding matrix and the head's bias, as in the original.
    tied_keys = ("predictions.decoder.weight", "predictions.decoder.bias")

    def __init__(self, config: AlbertConfig):
        super().__init__(config)
        self.albert = AlbertModel(config)
        self.predictions = AlbertMLMHead(config)
        self.sop_classifier = AlbertSOPHead(config)
        self.tie_weights()

    def init_weights(self) -> None:
        super().init_weights()
        nn.init.zeros_(self.predictions.bias)
        self.tie_weights()

    def tie_weights(self) -> None:
        self.predictions.decoder.weight = self.albert.embeddings.word_embeddings.weight
        self.predictions.decoder.bias = self.predictions.bias

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                sentence_order_label: torch.Tensor | None = None) -> PreTrainingOutput:
        """Without `labels`: MLM logits at every position, (B, T, V). With them (-100 where nothing is
        predicted): the MLM loss and which of the M predicted positions (in row-major order) were right, and
        the total loss. The vocabulary projection is most of the cost at small widths; Google's code
        gathers the same way."""
        sequence, pooled = self.albert(input_ids, attention_mask, token_type_ids)  # (B, T, H), (B, H)
        sop_logits = self.sop_classifier(pooled)
        if labels is None:
            return PreTrainingOutput(sop_logits=sop_logits, prediction_logits=self.predictions(sequence))
        predicted = labels != -100  # (B, T)
        decoder = self.predictions.decoder
        mlm_loss, mlm_correct = vocabulary_cross_entropy(
            self.predictions.transform(sequence[predicted]), decoder.weight, decoder.bias, labels[predicted])
        loss = mlm_loss
        if sentence_order_label is not None:
            loss = loss + F.cross_entropy(sop_logits.float(), sentence_order_label.view(-1))
        return PreTrainingOutput(sop_logits=sop_logits, mlm_loss=mlm_loss, mlm_correct=mlm_correct, loss=loss)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
