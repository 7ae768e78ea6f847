"""GLUE readers, cached features, the per-batch padding collator and the batch samplers."""

from .features import INPUT_NAMES, Collator, GlueFeatures, build_features, load_or_build_features
from .glue import TASKS, Example, GlueDataError, GlueTask, ReadReport, get_task, read_file, read_split
from .samplers import EvalShardSampler, LengthGroupedBatchSampler

__all__ = [
    "INPUT_NAMES", "TASKS", "Collator", "EvalShardSampler", "Example", "GlueDataError", "GlueFeatures", "GlueTask",
    "LengthGroupedBatchSampler", "ReadReport", "build_features", "get_task", "load_or_build_features",
    "read_file", "read_split",
]
