"""A run's output folder: checked before any work, filled only once every input has been checked.

Every command that fills a folder (`train`, `pretrain`, `evaluate`, `tokenizer`) goes through one
`OutputFolder`, in three moves:

1. `OutputFolder.check(...)`, before anything is read or built: a used folder is refused unless the
   run resumes from it, or --overwrite_output_dir names an earlier run of the same kind in it;
2. the command reads and checks every input (data, labels, tokenizer, config, the checkpoint it
   resumes from), writing nothing;
3. `with folder.opened(is_main):` only then the earlier run's files move aside into `.previous-run/`
   (just the files such a run writes: a user's own files stay where they are) and the new run writes.
   When the block ends, the earlier run is deleted if the new one finished or saved something it can
   resume from; if it failed before that (an error, Ctrl-C), what it wrote is removed and the earlier
   run moved back, so the folder is as the user left it and a corrected rerun is not refused.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UsageError

logger = logging.getLogger("albert_pytorch")

PREVIOUS_RUN = ".previous-run"
_MODEL_FILES = ("config.json", "model.safetensors", "model-*.safetensors", "model.safetensors.index.json",
                "pytorch_model.bin")
TOKENIZER_OUTPUTS = ("spiece.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                     "added_tokens.json")
_GLUE_SUBMISSIONS = ("CoLA.tsv", "SST-2.tsv", "MRPC.tsv", "STS-B.tsv", "QQP.tsv", "MNLI-m.tsv", "MNLI-mm.tsv",
                     "QNLI.tsv", "RTE.tsv", "WNLI.tsv", "predict_results.tsv")


@dataclass(frozen=True)
class RunKind:
    """What one kind of run writes into its folder."""

    name: str
    marker: str | None  # the file that shows a folder holds such a run; None: any of `outputs`
    outputs: tuple[str, ...]  # glob patterns of every file and folder it writes
    resumable: tuple[str, ...] = ()  # patterns of what a failed run leaves to resume from


TRAINING = RunKind("training run", "train_config.json", (
    "train_config.json", "train_log.jsonl", "trainer_state.json", "eval_results.json", "all_results.json",
    "training_curves.png", "tensorboard", "checkpoint-*", ".checkpoint-*", "sample_model", *_MODEL_FILES,
    *TOKENIZER_OUTPUTS, *_GLUE_SUBMISSIONS), resumable=("checkpoint-*",))
EVALUATION = RunKind("evaluation", "eval_config.json",
                     ("eval_config.json", "eval_results.json", "all_results.json", *_GLUE_SUBMISSIONS))
TOKENIZER = RunKind("tokenizer", None, TOKENIZER_OUTPUTS)


@dataclass
class OutputFolder:
    """An output folder a run has been cleared to use; see the module's docstring."""

    path: Path
    kind: RunKind
    earlier_run: list[str] = field(default_factory=list)  # names to move aside when the folder opens

    @classmethod
    def check(cls, path: str | Path, kind: RunKind, overwrite: bool = False, resume: bool = False,
              sources: tuple[str | Path | None, ...] = ()) -> OutputFolder:
        """Refuse (UsageError) a folder this run must not write into; reads, never writes.

        `sources` are folders the run reads from (the model it loads): clearing one of them is refused.
        """
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise UsageError(f"--output_dir {path} is a file; give a folder (new or empty)")
        entries = sorted(p.name for p in path.iterdir()) if path.is_dir() else []
        if kind is EVALUATION and (path / TRAINING.marker).is_file():
            raise UsageError(f"--output_dir {path} holds a training run; an evaluation writes its results into a "
                             "folder of its own, so that run's results and settings stay as they are. Choose "
                             "another --output_dir.")
        if not entries or (resume and kind is not TOKENIZER):
            return cls(path, kind)
        if not overwrite:
            hint = (", or --resume_from_checkpoint latest to continue that run" if kind is TRAINING else "")
            raise UsageError(f"--output_dir {path} is not empty: it may hold another run, whose files this "
                             f"{kind.name} would mix with its own. Choose a new folder, add --overwrite_output_dir "
                             f"to replace the earlier {kind.name}'s files{hint}.")
        earlier = [name for name in entries if _is_output(name, kind)]
        if kind.marker is not None and kind.marker not in entries:
            raise UsageError(f"--output_dir {path} is not empty and holds no earlier {kind.name} (no {kind.marker}); "
                             "--overwrite_output_dir replaces only such a run's files. Choose a new or empty folder.")
        resolved = path.resolve()
        if any(source is not None and Path(source).is_dir() and Path(source).resolve() == resolved
               for source in sources):
            raise UsageError(f"--output_dir {path} is the model this run loads; --overwrite_output_dir would "
                             "remove it. Write the new run into another folder.")
        return cls(path, kind, earlier)

    @contextlib.contextmanager
    def opened(self, is_main: bool = True) -> Iterator[Path]:
        """The folder, ready to write (on the main process: created, the earlier run moved aside); on leaving,
        the earlier run is deleted or, if this run failed before saving anything, restored."""
        if not is_main:
            yield self.path
            return
        created = not self.path.exists()
        aside = self.path / PREVIOUS_RUN
        if self.earlier_run:
            logger.info("--overwrite_output_dir: the earlier %s's files in %s move aside to %s and are deleted once "
                        "this run saves", self.kind.name, self.path, aside)
            if aside.exists():  # left by a run killed while it had the earlier one aside: that one was replaced
                shutil.rmtree(aside)
            aside.mkdir()
            for name in self.earlier_run:
                if name != PREVIOUS_RUN:
                    (self.path / name).rename(aside / name)
        self.path.mkdir(parents=True, exist_ok=True)
        before = {p.name for p in self.path.iterdir()}
        try:
            yield self.path
        except BaseException:
            if not self._left_something_to_resume(before):
                self._restore(before, aside, created)
            elif aside.exists():
                shutil.rmtree(aside)
            raise
        if aside.exists():
            shutil.rmtree(aside)

    def _left_something_to_resume(self, before: set[str]) -> bool:
        return any(_matches(p.name, self.kind.resumable) for p in self.path.iterdir() if p.name not in before)

    def _restore(self, before: set[str], aside: Path, created: bool) -> None:
        """Remove what this run wrote and move the earlier run back."""
        for child in self.path.iterdir():
            if child.name not in before and child.name != PREVIOUS_RUN:
                _remove(child)
        if aside.exists():
            for child in aside.iterdir():
                if not (self.path / child.name).exists():
                    child.rename(self.path / child.name)
            shutil.rmtree(aside)
        if created and not any(self.path.iterdir()):
            self.path.rmdir()


def _is_output(name: str, kind: RunKind) -> bool:
    return name == PREVIOUS_RUN or _matches(name, kind.outputs)


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    return any(Path(name).match(pattern) for pattern in patterns)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()
