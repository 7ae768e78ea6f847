"""Side-by-side speed benchmark: transformers' ALBERT against ours, same data, threads and run.

    python3 -m albert_pytorch.benchmark [--quick] [--device cpu|cuda] [--json PATH]

Training (batch 32, AdamW, one optimizer step per batch), interleaved in rounds so that machine
noise hits every variant alike:
  (a) transformers AlbertForSequenceClassification, every batch padded to 128 (run_glue's default)
  (b) the same, padded per batch
  (c) ours, with our defaults: length-grouped batches, per-batch padding, SDPA attention
Inference on the dev sentences: (a) transformers eager padded to 128, (b) our PyTorch path
(length-sorted, per-batch padding), (c) our ONNX export through ONNX Runtime fp32 and (d) int8.
Pretraining (batch 64 of WikiText-2 sentence pairs of at most 64 tokens, AdamW): tokens/s of a whole
step, batch masking included, for (a) transformers AlbertForPreTraining with run_mlm's
DataCollatorForLanguageModeling (vocabulary logits at every position) and (b) ours, n-gram masking with
logits at the masked positions only; at the demo config (hidden 128, 4 layers, 30k vocabulary) and,
in the full run, albert-base (batch 16).

Figures: samples/s, the ratio to (a), achieved GFLOP/s from an analytic count of the real
(unpadded) tokens' work, and that as a fraction of a measured fp32 matmul ceiling; the peak memory
of a training step, transformers against ours on the same batch; int8's argmax agreement with fp32.
Each ratio is also taken round by round, and its spread (min/median/max over rounds) reported:
`--quick` runs few rows and rounds, so its figures are indicative only; judge by the full run.

The package: `harness` (the workload, FLOP count, matmul ceilings and the timed-variant base), one module
per section (`training`, `inference`, `pretraining`), `reference` (transformers' model behind ours), and
`report` (the command line, tables and ratios).
"""
