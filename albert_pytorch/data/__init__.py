"""The data, in three parts.

Fine-tuning: a task's description and the one label parser (`tasks`), GLUE's nine tasks and their TSV
reader (`glue`), a user's own CSV/TSV/JSON files (`files`), `readers.read_split` choosing between them,
token ids cached per split and collated per batch (`features`), and GLUE's archives (`download`).
Pretraining: raw text cut into parts and sentence-order pairs in memory-mapped shards (`corpus`), each
part prepared once per job by a pool, torchrun's ranks or Ray tasks (`prepare`), and ALBERT's n-gram
masking (`masking`). Both: the length-grouped and evaluation batch samplers (`samplers`) and the
one padding routine both collators use (`padding`).
"""

from .features import INPUT_NAMES, Collator, Features, build_features, load_or_build_features
from .glue import TASKS, get_task, read_file
from .readers import read_split
from .samplers import EvalShardSampler, LengthGroupedBatchSampler
from .tasks import DataError, Example, ReadReport, Task

__all__ = [
    "INPUT_NAMES", "TASKS", "Collator", "DataError", "EvalShardSampler", "Example", "Features",
    "LengthGroupedBatchSampler", "ReadReport", "Task", "build_features", "get_task", "load_or_build_features",
    "read_file", "read_split",
]
