"""transformers' AlbertForSequenceClassification behind our model's interface, for side-by-side runs.

`train.run(cfg, model_factory=transformers_classifier)` trains it in place of our model with everything
else identical (data, batches, seeds, initial weights, optimizer), which is how docs/results.md and the
benchmark compare the two implementations. Only the benchmark and tests pass it.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..config import AlbertConfig
from ..modeling import AlbertPreTrainedModel, SequenceClassifierOutput
from ..train import sequence_classifier


class TransformersAlbert(AlbertPreTrainedModel):
    architecture = "AlbertForSequenceClassification"

    def __init__(self, config: AlbertConfig, attn_implementation: str = "sdpa"):
        import transformers

        super().__init__(config)
        hf_config = transformers.AlbertConfig.from_dict(
            {k: v for k, v in config.to_dict().items() if k != "architectures"})
        hf_config._attn_implementation = attn_implementation
        hf = transformers.AlbertForSequenceClassification(hf_config)
        # The same submodules under the same names: state dicts and checkpoints are interchangeable with ours.
        self.albert, self.dropout, self.classifier = hf.albert, hf.dropout, hf.classifier
        self._hf = [hf]  # a list, so the wrapper's parameters are not registered twice

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None,
                labels: torch.Tensor | None = None) -> SequenceClassifierOutput:
        out = self._hf[0](input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                          labels=labels)
        return SequenceClassifierOutput(logits=out.logits, loss=out.loss)

    def train(self, mode: bool = True):
        self._hf[0].train(mode)
        return super().train(mode)


def transformers_classifier(config: AlbertConfig, weights_dir: Path | None) -> TransformersAlbert:
    """A `train.ModelFactory`: transformers' model starting from exactly the weights ours would start from."""
    model = TransformersAlbert(config)
    model.load_state_dict(sequence_classifier(config, weights_dir).state_dict())
    return model
