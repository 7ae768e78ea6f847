"""ALBERT's architecture: `AlbertConfig`, the model's `config.json`.

It uses Hugging Face's field names, so one `config.json` serves both libraries. Fields we do not model
(architectures, torch dtype, tokenizer hints, ...) are kept in `extra` and written back. The settings of
a run (`train_config.json`) are `run_config.py`'s.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .io import atomic_write_text, to_json

CONFIG_NAME = "config.json"

# Sizes above these are refused before anything is allocated: a config from an untrusted
# source must not be able to make us reserve terabytes. albert-xxlarge is well inside them.
_LIMITS = {
    "vocab_size": 1_000_000,
    "embedding_size": 16_384,
    "hidden_size": 16_384,
    "num_hidden_layers": 256,
    "num_hidden_groups": 256,
    "num_attention_heads": 1_024,
    "intermediate_size": 65_536,
    "inner_group_num": 64,
    "max_position_embeddings": 65_536,
    "type_vocab_size": 1_024,
    "num_labels": 100_000,
}
_MAX_PARAMETERS = 5_000_000_000

ACTIVATIONS = ("gelu", "gelu_new", "gelu_fast", "gelu_pytorch_tanh", "quick_gelu", "relu", "silu",
               "swish", "tanh", "mish")
ATTENTION_IMPLEMENTATIONS = ("sdpa", "eager")
# Whose kernels run the element-wise and layout work in training and PyTorch inference: torch's own, or
# torch.compile's (a run setting, not the model's: modeling.use_kernels)
KERNEL_IMPLEMENTATIONS = ("eager", "compiled")


class ConfigError(ValueError):
    """A config.json that cannot describe a valid ALBERT model."""


@dataclass
class AlbertConfig:
    vocab_size: int = 30000
    embedding_size: int = 128
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_hidden_groups: int = 1
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    inner_group_num: int = 1
    hidden_act: str = "gelu_new"
    # "sdpa": torch's fused attention kernels; "eager": matmul, softmax, matmul spelled out, as transformers names
    # them. The same numbers; which is faster depends on the device and precision (run_config.default_attention).
    attn_implementation: str = "sdpa"
    hidden_dropout_prob: float = 0.0
    attention_probs_dropout_prob: float = 0.0
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    classifier_dropout_prob: float = 0.1
    pad_token_id: int = 0
    bos_token_id: int = 2
    eos_token_id: int = 3
    id2label: dict[int, str] = field(default_factory=lambda: {0: "LABEL_0", 1: "LABEL_1"})
    problem_type: str | None = None
    finetuning_task: str | None = None
    model_type: str = "albert"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.id2label = {int(k): str(v) for k, v in self.id2label.items()}
        self.validate()

    @property
    def num_labels(self) -> int:
        return len(self.id2label)

    @property
    def label2id(self) -> dict[str, int]:
        return {v: k for k, v in self.id2label.items()}

    @property
    def is_regression(self) -> bool:
        return self.num_labels == 1

    def set_labels(self, labels: list[str] | None) -> None:
        """Name the classifier's outputs; `None` means regression (one output)."""
        self.id2label = {0: "score"} if labels is None else dict(enumerate(labels))
        self.problem_type = "regression" if labels is None else "single_label_classification"

    def validate(self) -> None:
        for name, limit in _LIMITS.items():
            value = self.num_labels if name == "num_labels" else getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= limit:
                raise ConfigError(f"{name}={value!r} is outside the accepted range 1..{limit}")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(f"hidden_size={self.hidden_size} is not a multiple of "
                              f"num_attention_heads={self.num_attention_heads}")
        if self.attn_implementation not in ATTENTION_IMPLEMENTATIONS:
            raise ConfigError(f"attn_implementation={self.attn_implementation!r} is not one of "
                              f"{', '.join(ATTENTION_IMPLEMENTATIONS)}")
        if self.hidden_act not in ACTIVATIONS:
            raise ConfigError(f"hidden_act={self.hidden_act!r} is not one of {', '.join(ACTIVATIONS)}")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout_prob"):
            if not 0.0 <= float(getattr(self, name)) < 1.0:
                raise ConfigError(f"{name}={getattr(self, name)!r} must be in [0, 1)")
        if self.parameter_count() > _MAX_PARAMETERS:
            raise ConfigError(f"this config describes {self.parameter_count():,} parameters, "
                              f"more than the {_MAX_PARAMETERS:,} accepted")

    def check_sequence_length(self, max_seq_length: int) -> None:
        """Refuse sequences longer than the position table before any work is done on them."""
        if max_seq_length > self.max_position_embeddings:
            raise ConfigError(f"--max_seq_length {max_seq_length} exceeds the model's max_position_embeddings "
                              f"({self.max_position_embeddings})")

    def parameter_count(self) -> int:
        """Parameters of AlbertForSequenceClassification with this config (no allocation)."""
        e, h, i = self.embedding_size, self.hidden_size, self.intermediate_size
        embeddings = (self.vocab_size + self.max_position_embeddings + self.type_vocab_size + 2) * e
        layer = 4 * (h * h + h) + 2 * h + (h * i + i) + (i * h + h) + 2 * h
        encoder = e * h + h + self.num_hidden_groups * self.inner_group_num * layer
        head = h * h + h + h * self.num_labels + self.num_labels
        return embeddings + encoder + head

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AlbertConfig:
        data = dict(data)
        known = {f.name for f in dataclasses.fields(cls)} - {"extra", "id2label"}
        kwargs = {k: data.pop(k) for k in list(data) if k in known}
        if "id2label" in data:
            kwargs["id2label"] = data.pop("id2label")
        elif "num_labels" in data:
            kwargs["id2label"] = {i: f"LABEL_{i}" for i in range(int(data["num_labels"]))}
        for derived in ("num_labels", "label2id"):
            data.pop(derived, None)
        return cls(**kwargs, extra=data)

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> AlbertConfig:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ConfigError(f"{path}: cannot read a JSON config ({err})") from err
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a JSON object")
        try:
            return cls.from_dict(data)
        except (ConfigError, TypeError, ValueError) as err:
            raise ConfigError(f"{path}: {err}") from err

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> AlbertConfig:
        return cls.from_json_file(Path(directory) / CONFIG_NAME)

    def to_dict(self) -> dict[str, Any]:
        data = dict(self.extra)
        data.update({f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"})
        data["id2label"] = {str(k): v for k, v in self.id2label.items()}
        data["label2id"] = self.label2id
        return data

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        Path(directory).mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(directory) / CONFIG_NAME, to_json(self.to_dict(), sort_keys=True) + "\n")

    def with_overrides(self, overrides: str) -> AlbertConfig:
        """Apply `"hidden_size=256,num_hidden_layers=4"`-style overrides, type-checked per field."""
        data = self.to_dict()
        types = {f.name: f.type for f in dataclasses.fields(self)}
        for item in filter(None, (part.strip() for part in overrides.split(","))):
            key, sep, value = item.partition("=")
            key = key.strip()
            if not sep or key not in types or key in ("extra", "id2label"):
                raise ConfigError(f"bad config override {item!r}: expected name=value with a name from "
                                  f"{', '.join(sorted(set(types) - {'extra', 'id2label'}))}")
            caster = {"int": int, "float": float}.get(str(types[key]), str)
            try:
                data[key] = caster(value.strip())
            except ValueError as err:
                raise ConfigError(f"bad config override {item!r}: {err}") from err
        return AlbertConfig.from_dict(data)
