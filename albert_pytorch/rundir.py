"""A run's output folder: held by one run at a time, checked before any work, filled only once every input
has been checked, and never left without the last finished run.

Every command that fills a folder (`train`, `pretrain`, `evaluate --output_dir`, `tokenizer`) goes through
one `OutputFolder`:

1. `with claimed(path):` before anything is read or built, the folder is locked for this run (a second run
   into it is refused, naming the holder's pid);
2. the command reads and checks every input (data, labels, tokenizer, config, the checkpoint it resumes
   from), writing nothing, so a typo is named first; then `OutputFolder.check` refuses a used folder unless the
   run resumes a checkpoint in it, or --overwrite_output_dir names an earlier run of the same kind in it;
3. `with folder.opened(is_main):` only then the earlier run's files move aside into `.previous-run/` (just
   the files such a run writes: a user's own files stay where they are) and the new run writes. The earlier
   run is deleted only when the new one finishes. If the new run fails (an error, Ctrl-C, SIGTERM) having
   saved a checkpoint, both stay: its checkpoints to resume, the earlier run in `.previous-run/`; if it fails
   before that, what it wrote is removed and the earlier run moved back, so the folder is as the user left it.

A `.previous-run/` found at step 3 was left by a run killed before it finished: the files beside it are that
unfinished run's, which --overwrite_output_dir replaces, while the finished run in `.previous-run/` stays.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UsageError

logger = logging.getLogger("albert_pytorch")

PREVIOUS_RUN = ".previous-run"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
LOCK_NAME = ".albert_pytorch.lock"
MODEL_FILES = ("config.json", "model.safetensors", "model-*.safetensors", "model.safetensors.index.json",
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
    finished: str  # the file such a run writes last: a folder without it holds an unfinished run
    outputs: tuple[str, ...]  # glob patterns of every file and folder it writes


TRAINING = RunKind("training run", "train_config.json", "trainer_state.json", (
    "train_config.json", "train_log.jsonl", "trainer_state.json", "eval_results.json", "all_results.json",
    "training_curves.png", "tensorboard", "checkpoint-*", ".checkpoint-*", ".model-*", "sample_model",
    *MODEL_FILES, *TOKENIZER_OUTPUTS, *_GLUE_SUBMISSIONS))
EVALUATION = RunKind("evaluation", "eval_config.json", "all_results.json",
                     ("eval_config.json", "eval_results.json", "all_results.json", *_GLUE_SUBMISSIONS))
TOKENIZER = RunKind("tokenizer", None, "spiece.model", TOKENIZER_OUTPUTS)


@contextlib.contextmanager
def claimed(path: str | os.PathLike, holder: bool = True) -> Iterator[Path]:
    """The output folder, locked for this run while the block runs (`holder`: the process that writes; the
    others lock nothing) and removed again if it was made for the lock and holds nothing. Inside, the command
    reads its inputs first, so that a typo among them is named before anything about the folder, then
    `OutputFolder.check`s the folder."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"--output_dir {path} is a file; give a folder (new or empty)")
    if not holder:
        yield path
        return
    created = not path.exists()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"--output_dir {path}: cannot create it ({err.strerror})") from None
    try:
        with FolderLock(path):
            yield path
    finally:
        if created and path.is_dir() and not any(path.iterdir()):
            path.rmdir()


@dataclass
class OutputFolder:
    """An output folder a run holds and has been cleared to use; see the module's docstring."""

    path: Path
    kind: RunKind
    earlier_run: list[str] = field(default_factory=list)  # names to move aside when the folder opens

    @classmethod
    def check(cls, path: str | os.PathLike, kind: RunKind, overwrite: bool = False, resume: str | None = None,
              sources: tuple[str | os.PathLike | None, ...] = ()) -> OutputFolder:
        """Refuse (UsageError) a folder this run must not write into; reads, never writes.

        A run resumes into a folder only when it holds a training run with a checkpoint to resume; resuming
        where there is none is a fresh run under a fresh run's rules. `sources` are folders the run reads
        from (the model it loads): clearing one of them is refused.
        """
        path = Path(path)  # `claimed` has refused a file
        entries = sorted(p.name for p in path.iterdir() if p.name != LOCK_NAME) if path.is_dir() else []
        if kind is EVALUATION and (path / TRAINING.marker).is_file():
            raise UsageError(f"--output_dir {path} holds a training run; an evaluation writes its results into a "
                             "folder of its own, so that run's results and settings stay as they are. Choose "
                             "another --output_dir.")
        if kind is TOKENIZER and any(_matches(name, MODEL_FILES) for name in entries):
            raise UsageError(f"--output_dir {path} holds a model (config.json or weights): a new tokenizer there "
                             "would no longer match its embeddings. Write the tokenizer into a folder of its own.")
        checkpoints = list_checkpoints(path) if kind is TRAINING else []
        if not entries or (resume and checkpoints):
            return cls(path, kind)
        state = describe(path, kind)
        if not overwrite:
            if resume:
                raise UsageError(f"--resume_from_checkpoint {resume}: --output_dir {path} holds no checkpoint to "
                                 f"resume (it holds {state}). Choose a new folder, or add --overwrite_output_dir to "
                                 "start this run afresh in its place.")
            hint = ", or --resume_from_checkpoint latest to continue it" if checkpoints else ""
            raise UsageError(f"--output_dir {path} is not empty: it holds {state}, whose files this {kind.name} "
                             f"would mix with its own. Choose a new folder, add --overwrite_output_dir to replace "
                             f"the earlier {kind.name}'s files{hint}.")
        earlier = [name for name in entries if _is_output(name, kind)]
        if kind.marker is not None and kind.marker not in entries and PREVIOUS_RUN not in entries:
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
        """The folder, ready to write (on the main process: the earlier run moved aside); on leaving, the earlier
        run is deleted if this run finished, kept if it failed having saved a checkpoint, else restored."""
        if not is_main:
            yield self.path
            return
        aside = self.path / PREVIOUS_RUN
        if self.earlier_run:
            self._move_earlier_run_aside(aside)
        self.path.mkdir(parents=True, exist_ok=True)
        before = {p.name for p in self.path.iterdir()}
        try:
            yield self.path
        except BaseException as err:
            left = self._left_to_resume(before)
            if left:
                outcome = f"This run's last checkpoint is {left[-1]}: continue with --resume_from_checkpoint latest."
            else:
                outcome = self._restore(before, aside)
                earlier = list_checkpoints(self.path) if (self.path / TRAINING.marker).is_file() else []
                if earlier and not (self.path / self.kind.finished).is_file():
                    outcome += f" The last checkpoint is {earlier[-1]}: continue with --resume_from_checkpoint latest."
            if aside.exists():
                outcome += f" The earlier finished run stays in {aside} until a run there finishes."
            # said on the command's one error line, whatever stopped the run (an error, Ctrl-C, SIGTERM)
            err.__notes__ = [*getattr(err, "__notes__", []), outcome]
            raise
        if aside.exists():
            shutil.rmtree(aside)

    def _move_earlier_run_aside(self, aside: Path) -> None:
        if aside.exists():  # left by a run killed before it finished: the files beside it are that run's
            logger.info("--overwrite_output_dir: replacing the unfinished run in %s; the earlier finished run "
                        "stays in %s until this run finishes", self.path, aside)
            for name in self.earlier_run:
                if name != PREVIOUS_RUN:
                    _remove(self.path / name)
            return
        logger.info("--overwrite_output_dir: the earlier %s's files in %s move aside to %s and are deleted once "
                    "this run finishes", self.kind.name, self.path, aside)
        aside.mkdir()
        for name in self.earlier_run:
            (self.path / name).rename(aside / name)

    def _left_to_resume(self, before: set[str]) -> list[Path]:
        """What this run saved that a rerun can resume from (its checkpoints, oldest first)."""
        return [p for p in list_checkpoints(self.path) if p.name not in before]

    def _restore(self, before: set[str], aside: Path) -> str:
        """Remove what this run wrote and, where no other run's files are left, move the earlier run back;
        returns what the folder holds now, in words."""
        for child in self.path.iterdir():
            if child.name not in before and child.name not in (PREVIOUS_RUN, LOCK_NAME):
                _remove(child)
        if not aside.exists():
            return "Nothing of this run was kept, so the output folder is as it was."
        if any(_is_output(p.name, self.kind) and p.name != PREVIOUS_RUN for p in self.path.iterdir()):
            return "Nothing of this run was kept."
        for child in aside.iterdir():
            child.rename(self.path / child.name)
        aside.rmdir()
        return f"Nothing of this run was kept; the earlier {self.kind.name} is back in place in {self.path}."


def describe(path: Path, kind: RunKind) -> str:
    """What a used folder holds, in words: a finished or unfinished run (and its last checkpoint), or files of
    its own; and a finished run waiting in .previous-run."""
    names = {p.name for p in path.iterdir()} - {LOCK_NAME}
    checkpoints = list_checkpoints(path)
    held = next((k for k in (kind, TRAINING, EVALUATION) if k.marker is not None and k.marker in names), None)
    if held is not None and held.finished in names:
        what = f"a finished {held.name}"
    elif held is not None and checkpoints:
        what = f"an unfinished {held.name} (its last checkpoint: {checkpoints[-1].name})"
    elif held is not None:
        what = f"an unfinished {held.name} with no checkpoint to resume"
    elif kind.marker is None and any(_is_output(name, kind) for name in names - {PREVIOUS_RUN}):
        what = f"a {kind.name}'s files"
    elif names - {PREVIOUS_RUN}:
        shown = sorted(names - {PREVIOUS_RUN})
        what = f"files of its own ({', '.join(shown[:3])}{' ...' if len(shown) > 3 else ''})"
    else:
        what = "nothing else"
    if PREVIOUS_RUN in names:
        what += f", and an earlier finished run kept in {path / PREVIOUS_RUN} (deleted once a run there finishes)"
    return what


class FolderLock:
    """An exclusive lock on a folder, held by one process: `.albert_pytorch.lock` inside it, with the holder's
    pid. The kernel drops the lock when the process ends, so a crashed run leaves no stale lock."""

    def __init__(self, folder: Path, subject: str | None = None):
        self.folder, self.file = folder, folder / LOCK_NAME
        self.subject = subject or f"--output_dir {folder}"  # what the refusal names
        self.fd: int | None = None

    def __enter__(self) -> FolderLock:
        for _ in range(100):
            fd = os.open(self.file, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder_pid(fd)
                os.close(fd)
                raise UsageError(f"{self.subject} is in use by another run (pid {holder}); two runs there would "
                                 "mix their files. Wait for it, or choose another place.") from None
            if _same_file(fd, self.file):  # not a lock file its last holder removed while this one opened it
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                self.fd = fd
                return self
            os.close(fd)
        raise UsageError(f"{self.subject}: could not lock it (its lock file keeps changing)")

    def __exit__(self, *exc) -> None:
        with contextlib.suppress(OSError):
            self.file.unlink()  # before unlocking: a waiter that opened this file sees it gone and retries
        os.close(self.fd)


def _holder_pid(fd: int) -> str:
    """The pid in a held lock file; its holder writes it just after locking, so an empty file is read again
    for a moment."""
    for _ in range(100):
        pid = os.pread(fd, 64, 0).decode(errors="replace").strip()
        if pid:
            return pid
        time.sleep(0.01)
    return "unknown"


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def list_checkpoints(output_dir: Path) -> list[Path]:
    """`checkpoint-<step>` directories, oldest first."""
    found = [(int(m.group(1)), p) for p in output_dir.glob("checkpoint-*") if (m := _CHECKPOINT.match(p.name))]
    return [p for _, p in sorted(found)]


def _is_output(name: str, kind: RunKind) -> bool:
    return name == PREVIOUS_RUN or _matches(name, kind.outputs)


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    return any(Path(name).match(pattern) for pattern in patterns)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()
