"""Training checkpoints that survive being killed at any moment.

A checkpoint is built in a hidden temporary directory, every file fsynced, a manifest with each
file's sha256 written last, and the directory renamed to `checkpoint-<step>` in one atomic step.
So `checkpoint-*` directories are always complete; on resume the manifest is verified anyway and a
damaged checkpoint is reported and passed over for the previous one.

The manifest also holds what defines the run (its settings, data, labels and model config, as the
command builds them): a run resumes only from a checkpoint of the same run, else it is refused with
the differences named, before anything is written.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from .errors import UsageError
from .io import atomic_write_text, publish_directory, published_files, sha256_file, to_json, write_failure
from .rundir import list_checkpoints
from .weights import load_state_dict

logger = logging.getLogger(__name__)

MANIFEST = "checkpoint.json"
STATE_NAME = "training_state.pt"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, incomplete or damaged."""


def save_checkpoint(output_dir: Path, step: int, write_files, state: dict[str, Any], keep: int,
                    protect: int = 0, run: dict[str, Any] | None = None) -> Path:
    """`write_files(dir)` writes the model files; `state` (tensors and plain values) goes to training_state.pt;
    `run` (what defines the run, JSON) goes into the manifest.

    Of the older checkpoints, `keep` are kept, and checkpoint-<protect> (the best) whatever its age.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    final = output_dir / f"checkpoint-{step}"
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".checkpoint-{step}.", dir=output_dir))
        _write_checkpoint(tmp, final, step, write_files, state, run)
    # A full disk, a quota, a read-only mount: every file is written by Python (tensors serialized in
    # memory first), so the failure is an OSError that says what it is. The half-written copy is gone.
    except OSError as err:
        good = list_checkpoints(output_dir)
        then = (f"The last good checkpoint is {good[-1]}: free space, then resume with --resume_from_checkpoint "
                "latest" if good else "No checkpoint was saved before it: free space, then run the same command "
                "again")
        raise CheckpointError(f"cannot write {final}: {write_failure(err, output_dir)}; nothing of it was kept. "
                              f"{then}.") from err
    _prune(output_dir, keep, protect)
    return final


def save_model_files(output_dir: Path, write_files) -> None:
    """The run's final model files (`write_files(dir)` writes them), published into `output_dir` as a whole: a
    full disk leaves what the folder held, never a half-written tokenizer beside a complete-looking model."""
    try:
        with published_files(output_dir) as tmp:
            write_files(tmp)
    except OSError as err:
        good = list_checkpoints(output_dir)
        then = (f"Its last checkpoint, {good[-1]}, holds the trained weights: free space, then run the same command "
                "with --resume_from_checkpoint latest to save the model" if good else
                "No checkpoint was saved: free space, then run the same command again")
        raise CheckpointError(f"cannot save the model in {output_dir}: {write_failure(err, output_dir)}; nothing of "
                              f"it was kept. {then}.") from err


def _write_checkpoint(tmp: Path, final: Path, step: int, write_files, state: dict[str, Any],
                      run: dict[str, Any] | None) -> None:
    try:
        write_files(tmp)
        buffer = io.BytesIO()
        torch.save(state, buffer)  # in memory, so a full disk is a plain OSError, not torch's internals
        (tmp / STATE_NAME).write_bytes(buffer.getbuffer())
        files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        for name in files:
            with open(tmp / name, "rb") as handle:
                os.fsync(handle.fileno())
        atomic_write_text(tmp / MANIFEST, to_json({"step": step, "files": files, "run": run}, indent=1))
        publish_directory(tmp)
        if final.exists():  # a re-run of the same step replaces the old copy
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _prune(output_dir: Path, keep: int, protect: int) -> None:
    spared = output_dir / f"checkpoint-{protect}"
    for stale in list_checkpoints(output_dir)[:-keep] if keep > 0 else []:
        if stale != spared:
            shutil.rmtree(stale, ignore_errors=True)
    for leftover in output_dir.glob(".checkpoint-*"):  # from a run killed mid-save
        shutil.rmtree(leftover, ignore_errors=True)


def verify(checkpoint: Path) -> dict[str, Any]:
    """The checkpoint's manifest, once every file it lists is there with its checksum."""
    manifest = checkpoint / MANIFEST
    try:
        record = json.loads(manifest.read_text())
        files = record["files"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{checkpoint}: no readable {MANIFEST} ({err})") from err
    for name, digest in files.items():
        path = checkpoint / name
        if not path.is_file():
            raise CheckpointError(f"{checkpoint}: {name} is missing")
        if sha256_file(path) != digest:
            raise CheckpointError(f"{checkpoint}: {name} is damaged (its checksum does not match {MANIFEST})")
    return record


def resolve_resume(output_dir: Path, resume: str) -> list[Path]:
    """Checkpoints to try, best first: `latest` means every checkpoint in output_dir, newest first."""
    if resume == "latest":
        candidates = list_checkpoints(output_dir)[::-1]
        if not candidates:
            logger.info("%s: no checkpoint yet; starting from the beginning", output_dir)
        return candidates
    path = Path(resume)
    if not path.is_dir():
        raise UsageError(f"--resume_from_checkpoint {path}: no such checkpoint directory")
    return [path]


def checkpoint_to_resume(output_dir: Path, resume: str, run: dict[str, Any]) -> Path | None:
    """The checkpoint a run resumes from: the one named, or with `latest` the newest undamaged one (damaged
    ones are reported and passed over); None when there is none yet. One written by another run (other
    data, labels, model config or settings than `run`) is refused with the differences named."""
    candidates = resolve_resume(output_dir, resume)
    for path in candidates:
        try:
            saved = verify(path).get("run")
        except CheckpointError as err:
            logger.warning("cannot resume from %s (%s); trying an older checkpoint", path, err)
            continue
        if saved is None:
            logger.warning("%s records no run settings (an older version wrote it): cannot check that it belongs "
                           "to this run", path)
        else:
            differences = run_differences(saved, json.loads(to_json(run)))
            if differences:
                raise UsageError(f"{path} belongs to another run, so resuming it would mix the two: "
                                 + "; ".join(differences[:6]) + (" ..." if len(differences) > 6 else "")
                                 + ". Resume with the checkpoint's settings and data, or start a new run in a new "
                                 "--output_dir.")
        return path
    if candidates:
        raise CheckpointError(f"none of the checkpoints in {output_dir} could be loaded")
    return None


def run_differences(saved: dict[str, Any], now: dict[str, Any], prefix: str = "") -> list[str]:
    """`key: value in the checkpoint, value now` for each leaf that differs (nested keys dotted)."""
    differences = []
    for key in sorted(set(saved) | set(now)):
        old, new = saved.get(key), now.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            differences += run_differences(old, new, f"{prefix}{key}.")
        elif old != new:
            differences.append(f"{prefix}{key}: {_short(old)} in the checkpoint, {_short(new)} now")
    return differences


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


# -- the training state beside the model ------------------------------------------------------------

def save_training_checkpoint(output_dir: Path, step: int, write_model_files, optimizer, scheduler, scaler,
                             train_state: dict[str, Any], world_size: int, keep: int, protect: int = 0,
                             run: dict[str, Any] | None = None) -> Path:
    """A checkpoint that resumes exactly: model files plus optimizer, scheduler, scaler and data position."""
    state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "scaler": scaler.state_dict(), "train_state": train_state, "world_size": world_size}
    return save_checkpoint(output_dir, step, write_model_files, state, keep, protect, run)


def resume_training(checkpoint: Path, model, optimizer, scheduler, scaler, world_size: int) -> dict[str, Any]:
    """Load a checkpoint (found, and its checksums verified, by `checkpoint_to_resume`) into the model and
    optimizer objects; returns its saved train state."""
    saved = torch.load(checkpoint / STATE_NAME, map_location="cpu", weights_only=True)
    weights = load_model_weights(checkpoint, model)
    if saved.get("world_size") != world_size:
        logger.warning("%s was written with world size %s, now %s: the data order will differ", checkpoint,
                       saved.get("world_size"), world_size)
    model.load_state_dict(weights, strict=False)
    model.tie_weights()
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    scaler.load_state_dict(saved["scaler"])
    logger.info("resumed from %s at step %d", checkpoint, saved["train_state"]["step"])
    return saved["train_state"]


def load_model_weights(checkpoint: Path, model) -> dict[str, torch.Tensor]:
    """The checkpoint's weights, checked to fit `model` key for key (tied copies are not stored)."""
    weights = load_state_dict(checkpoint)
    own = model.state_dict()
    missing = sorted(set(own) - set(weights) - set(model.tied_keys))
    unexpected = sorted(set(weights) - set(own))
    misshaped = sorted(k for k in set(own) & set(weights) if own[k].shape != weights[k].shape)
    if missing or unexpected or misshaped:
        raise CheckpointError(f"{checkpoint}: weights do not fit the model (missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]}, mis-shaped {misshaped[:3]})")
    return weights
