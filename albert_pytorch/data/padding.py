"""The one padding routine: rows of token ids -> the model's inputs, padded to the batch's longest row."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def padded(rows: Sequence[torch.Tensor], width: int, value: int) -> torch.Tensor:
    """(len(rows), width) int64, each row left-aligned and the rest `value`."""
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, :len(row)] = torch.as_tensor(row)
    return out


def model_inputs(ids: Sequence[torch.Tensor], token_types: Sequence[torch.Tensor], pad_token_id: int,
                 pad_to_multiple_of: int = 1) -> dict[str, torch.Tensor]:
    """`input_ids`, `attention_mask` and `token_type_ids` as wide as the longest row, rounded up to a multiple
    of `pad_to_multiple_of` (which suits tensor cores)."""
    width = max(len(row) for row in ids)
    width += -width % pad_to_multiple_of
    return {"input_ids": padded(ids, width, pad_token_id),
            "attention_mask": padded([torch.ones(len(row), dtype=torch.long) for row in ids], width, 0),
            "token_type_ids": padded(token_types, width, 0)}
