"""Weight files: where a model directory is (local, or fetched from the hub) and its tensors, read safely.

Only tensors are ever read: safetensors, or `pytorch_model.bin` through `torch.load(weights_only=True)`,
so a planted file cannot run code. Other exporters' key spellings are normalized to ours.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from .config import CONFIG_NAME
from .errors import UsageError

WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
LEGACY_WEIGHTS_NAME = "pytorch_model.bin"


class WeightsError(RuntimeError):
    """Weights that are missing, unreadable, or do not fit the config."""


class ModelNotFoundError(WeightsError, UsageError):
    """No model where the command line points: a bad argument (exit 2), not a failure while running."""


def resolve_model_dir(path_or_hub_id: str | os.PathLike) -> Path:
    """A local directory as is; otherwise a hub id fetched through huggingface_hub."""
    path = Path(path_or_hub_id)
    if path.is_dir():
        return path
    if path.exists() or str(path_or_hub_id).startswith((".", "/", "~")) or str(path_or_hub_id).count("/") > 1:
        raise ModelNotFoundError(f"{path}: not a model directory" if path.exists() else f"{path}: no such folder")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(
            str(path_or_hub_id),
            allow_patterns=[CONFIG_NAME, WEIGHTS_NAME, WEIGHTS_INDEX_NAME, "model-*.safetensors",
                            LEGACY_WEIGHTS_NAME, "spiece.model", "tokenizer*.json", "special_tokens_map.json"]))
    except Exception as err:  # network, auth and not-found errors all end the same way for the user
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelNotFoundError(
            f"{path_or_hub_id}: no such folder, and as a hub model id it could not be fetched ({reason[:160]}). "
            "Pass a directory holding config.json and model.safetensors (or pytorch_model.bin).") from err


def load_state_dict(directory: Path) -> dict[str, torch.Tensor]:
    """Tensors only: safetensors, or pytorch_model.bin with torch.load(weights_only=True)."""
    from pickle import UnpicklingError

    from safetensors import SafetensorError
    from safetensors.torch import load_file

    single, index, legacy = directory / WEIGHTS_NAME, directory / WEIGHTS_INDEX_NAME, directory / LEGACY_WEIGHTS_NAME
    try:
        if single.is_file():
            return load_file(str(single))
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            return {k: v for shard in shards for k, v in load_file(str(directory / shard)).items()}
        if legacy.is_file():
            state = torch.load(legacy, map_location="cpu", weights_only=True)
            if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
                raise WeightsError(f"{legacy}: not a state dict of tensors")
            return state
    except (SafetensorError, UnpicklingError, OSError, RuntimeError, ValueError, KeyError) as err:
        if isinstance(err, WeightsError):
            raise
        raise WeightsError(f"{directory}: cannot read the weights ({type(err).__name__}: {err})") from err
    raise WeightsError(
        f"{directory}: no weights found (looked for {WEIGHTS_NAME}, {WEIGHTS_INDEX_NAME}, {LEGACY_WEIGHTS_NAME}). "
        "A directory with only config.json describes a model but holds no trained weights: pass a "
        "directory with pretrained weights, or train from scratch with --from_scratch "
        "(random init from this config.json).")


def normalize_keys(state: dict[str, torch.Tensor], own_keys) -> dict[str, torch.Tensor]:
    """Accept the spellings other exporters use: TF's gamma/beta, and a bare AlbertModel's unprefixed keys."""
    own_keys = set(own_keys)
    renamed = {}
    for key, value in state.items():
        key = key.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
        if key not in own_keys and f"albert.{key}" in own_keys:
            key = f"albert.{key}"
        if key.endswith(("position_ids", "token_type_ids")) and key not in own_keys:
            continue  # old HF checkpoints saved these buffers
        renamed[key] = value
    return renamed
