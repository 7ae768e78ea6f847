"""Fine-tune ALBERT on GLUE on CPU, CUDA or Ascend NPU, and ship it through ONNX."""

from .config import AlbertConfig, ConfigError
from .modeling import AlbertForPreTraining, AlbertForSequenceClassification, AlbertModel
from .weights import WeightsError

__all__ = [
    "AlbertConfig",
    "AlbertForPreTraining",
    "AlbertForSequenceClassification",
    "AlbertModel",
    "ConfigError",
    "WeightsError",
]
__version__ = "0.1.0"
