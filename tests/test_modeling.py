"""Our ALBERT against transformers' on the same weights: the acceptance test of the model."""

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import transformers
from helpers import tiny_config

from albert_pytorch import (
    AlbertConfig,
    AlbertForPreTraining,
    AlbertForSequenceClassification,
    ConfigError,
    WeightsError,
    modeling,
    run_config,
)

CONFIGS = {
    "one_group": dict(num_hidden_groups=1),
    "two_groups": dict(num_hidden_layers=4, num_hidden_groups=2),
    "inner_group_2": dict(num_hidden_layers=3, inner_group_num=2),
    "regression": dict(num_hidden_groups=2, id2label={0: "score"}),
    "three_classes_gelu": dict(hidden_act="gelu", id2label={0: "a", 1: "b", 2: "c"}),
    # layer i uses group int(i / (5 / 2)): groups 0, 0, 0, 1, 1, as in Google's code and transformers
    "layers_not_a_multiple_of_groups": dict(num_hidden_layers=5, num_hidden_groups=2),
}


def padded_batch(vocab_size: int, num_labels: int):
    ids = torch.randint(5, vocab_size, (4, 9))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    mask[2, 3:] = 0
    types = torch.zeros_like(ids)
    types[:, 5:] = 1
    labels = torch.rand(4) * 5 if num_labels == 1 else torch.randint(0, num_labels, (4,))
    return ids, mask, types, labels


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("name", CONFIGS)
def test_logits_and_loss_match_transformers(name, attention, tmp_path):
    ours = AlbertForSequenceClassification.from_config(tiny_config(**CONFIGS[name],
                                                                   attn_implementation=attention)).eval()
    ours.save_pretrained(tmp_path)
    theirs = transformers.AlbertForSequenceClassification.from_pretrained(tmp_path).eval()
    assert theirs.config._attn_implementation == attention  # config.json carries the choice to transformers
    ids, mask, types, labels = padded_batch(ours.config.vocab_size, ours.config.num_labels)
    with torch.no_grad():
        a = ours(ids, mask, types, labels=labels)
        b = theirs(input_ids=ids, attention_mask=mask, token_type_ids=types, labels=labels)
    assert (a.logits - b.logits).abs().max() < 1e-5
    assert (a.loss - b.loss).abs() < 1e-5


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_pretraining_heads_and_gradients_match_transformers(attention, tmp_path):
    ours = AlbertForPreTraining.from_config(tiny_config(attn_implementation=attention)).eval()
    ours.save_pretrained(tmp_path)
    theirs = transformers.AlbertForPreTraining.from_pretrained(tmp_path).eval()
    ids, mask, types, _ = padded_batch(120, 2)
    mlm_labels = torch.where(torch.rand(ids.shape) < 0.2, ids, torch.full_like(ids, -100))
    order = torch.tensor([0, 1, 1, 0])
    with torch.no_grad():
        full = ours(ids, mask, types)
    a = ours(ids, mask, types, labels=mlm_labels, sentence_order_label=order)
    b = theirs(input_ids=ids, attention_mask=mask, token_type_ids=types, labels=mlm_labels,
               sentence_order_label=order)
    assert (full.prediction_logits - b.prediction_logits).abs().max() < 1e-5
    # with labels, ours projects only the predicted positions onto the vocabulary: the same loss, the same
    # hits (argmax == label), and the same gradient through its hand-written backward
    predicted = mlm_labels != -100
    assert a.prediction_logits is None
    assert torch.equal(a.mlm_correct, b.prediction_logits[predicted].argmax(-1) == mlm_labels[predicted])
    assert (a.sop_logits - b.sop_logits).abs().max() < 1e-5
    assert (a.loss - b.loss).abs() < 1e-5
    a.loss.backward()
    b.loss.backward()
    theirs_grads = dict(theirs.named_parameters())
    for name, parameter in ours.named_parameters():
        assert (parameter.grad - theirs_grads[name].grad).abs().max() < 1e-5, name
    # the decoder is tied to the input embeddings, as in the original
    assert ours.predictions.decoder.weight.data_ptr() == ours.albert.embeddings.word_embeddings.weight.data_ptr()


def gradients(model: torch.nn.Module, loss: torch.Tensor) -> dict[str, torch.Tensor]:
    loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def assert_close_gradients(ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor], tolerance: float) -> None:
    assert ours.keys() == theirs.keys()
    scale = max(g.abs().max() for g in theirs.values())  # a key bias's gradient is 0 but for rounding: no per-key scale
    for name, grad in ours.items():
        assert (grad - theirs[name]).abs().max() <= tolerance * scale, name


@pytest.mark.parametrize("name", CONFIGS)
def test_fine_tuning_gradients_match_transformers(name, tmp_path):
    """Training runs the shared layer's weights through SharedLinear (one query-key-value GEMM, the gradient summed
    inside the GEMMs): its gradients are transformers' module by module, with groups and inner groups."""
    ours = AlbertForSequenceClassification.from_config(tiny_config(**CONFIGS[name], classifier_dropout_prob=0.0))
    ours.save_pretrained(tmp_path)
    theirs = transformers.AlbertForSequenceClassification.from_pretrained(tmp_path)
    ids, mask, types, labels = padded_batch(ours.config.vocab_size, ours.config.num_labels)
    assert ours.albert.implementation == "shared"
    a = gradients(ours, ours(ids, mask, types, labels=labels).loss)
    b = gradients(theirs, theirs(input_ids=ids, attention_mask=mask, token_type_ids=types, labels=labels).loss)
    assert_close_gradients(a, b, 1e-5)


@pytest.mark.parametrize("bf16", [False, True])
def test_shared_linear_computes_what_the_modules_do_in_either_precision(bf16):
    model = AlbertForSequenceClassification.from_config(tiny_config(num_hidden_layers=4, num_hidden_groups=2,
                                                                    classifier_dropout_prob=0.0))
    ids, mask, types, labels = padded_batch(120, 2)
    runs = {}
    for implementation in ("modules", "shared"):
        model.zero_grad(set_to_none=True)
        with model.implementation(implementation), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            out = model(ids, mask, types, labels=labels)
        runs[implementation] = out.logits.float(), gradients(model, out.loss)
    (logits, grads), (shared_logits, shared_grads) = runs["modules"], runs["shared"]
    assert torch.equal(logits, shared_logits)  # the same GEMMs forward, on the same casts
    # bf16: each use's gradient is rounded once inside its GEMM rather than once more by a separate add
    assert_close_gradients(shared_grads, grads, 2e-2 if bf16 else 1e-5)
    assert all(g.dtype == torch.float32 for g in shared_grads.values())


def test_the_shared_layers_compute_the_same_with_their_gemms_in_row_chunks():
    model = AlbertForSequenceClassification.from_config(tiny_config(classifier_dropout_prob=0.0)).eval()  # no dropout
    ids, mask, types, labels = padded_batch(120, 2)
    runs = []
    for split in (None, modeling.RowSplit(model.config.hidden_size, 3, ((1, 10_000),))):
        model.split_gemm_rows(split)
        model.zero_grad(set_to_none=True)
        out = model(ids, mask, types, labels=labels)
        out.loss.backward()
        runs.append((out.logits, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (logits, grads), (split_logits, split_grads) = runs
    assert torch.allclose(logits, split_logits, atol=1e-6)
    assert grads.keys() == split_grads.keys()
    assert all(torch.allclose(grads[n], split_grads[n], atol=1e-6) for n in grads)


@pytest.mark.parametrize("out_features, in_features, copied", [(12, 4, "inputs"), (4, 12, "gradients"), (6, 6, None)])
def test_shared_linear_gives_its_gradient_gemms_transposed_copies_of_the_narrower_operand(out_features, in_features,
                                                                                        copied):
    copies = []

    def transpose(a: torch.Tensor) -> torch.Tensor:
        copies.append(tuple(a.shape))
        return a.t().contiguous()

    linear = torch.nn.Linear(in_features, out_features)
    shared = modeling.SharedLinear([linear], torch.float32, transpose)
    inputs = [torch.randn(5, in_features) for _ in range(3)]
    sum((use + 1) * shared(x).square().sum() for use, x in enumerate(inputs)).backward()
    summed = linear.weight.grad.clone()
    linear.weight.grad = None
    sum((use + 1) * linear(x).square().sum() for use, x in enumerate(inputs)).backward()  # autograd's sum
    assert torch.allclose(summed, linear.weight.grad, rtol=1e-5, atol=1e-6)
    expected = {"inputs": [(5, in_features)] * 3 + [(in_features, out_features)],  # and the sum transposed back
                "gradients": [(5, out_features)] * 3, None: []}[copied]
    assert copies == expected


@pytest.mark.skipif(run_config.default_kernels(torch.device("cpu"), True) != "compiled",
                    reason="no C++ compiler for inductor")
def test_compiled_kernels_compute_what_torchs_do_forward_and_backward():
    model = AlbertForSequenceClassification.from_config(tiny_config(classifier_dropout_prob=0.0))
    assert model.config.hidden_act == "gelu_new"
    ids, mask, types, labels = padded_batch(120, 2)
    runs = {}
    for implementation in ("eager", "compiled"):
        model.use_kernels(implementation)
        for bf16 in (False, True):
            model.zero_grad(set_to_none=True)
            with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
                out = model(ids, mask, types, labels=labels)
            runs[implementation, bf16] = out.logits.float(), gradients(model, out.loss)
    assert model.albert.encoder.albert_layer_groups[0].albert_layers[0].activation is modeling.compiled_gelu_tanh()
    assert model.albert.encoder.transpose is modeling.compiled_transpose()
    for bf16, tolerance in ((False, 1e-5), (True, 2e-2)):
        (logits, grads), (compiled_logits, compiled_grads) = runs["eager", bf16], runs["compiled", bf16]
        assert (logits - compiled_logits).abs().max() <= tolerance * logits.abs().max()
        assert_close_gradients(compiled_grads, grads, tolerance)
    with pytest.raises(ValueError, match="kernel implementation 'fused'"):
        model.use_kernels("fused")


@pytest.mark.skipif(run_config.default_kernels(torch.device("cpu"), True) != "compiled",
                    reason="no C++ compiler for inductor")
def test_compiled_gelu_keeps_the_slope_autograd_would_compute_and_only_when_a_gradient_is_wanted():
    gelu = modeling.compiled_gelu_tanh()
    x = (torch.randn(64, 48, dtype=torch.float64) * 4).float().requires_grad_()
    grad = torch.randn(64, 48)
    expected_x = x.detach().double().requires_grad_()
    F.gelu(expected_x, approximate="tanh").backward(grad.double())
    y = gelu(x)
    assert y.grad_fn is not None and "GeluKeepingSlope" in type(y.grad_fn).__name__
    y.backward(grad)
    assert torch.allclose(y.double(), F.gelu(expected_x.detach(), approximate="tanh"), atol=1e-5)
    assert torch.allclose(x.grad.double(), expected_x.grad, atol=1e-5)
    with torch.no_grad():
        assert gelu(x).grad_fn is None
    assert torch.equal(gelu(x.detach()), y.detach())  # the value-only kernel gives the same values


def test_shared_linear_gradients_survive_a_second_backward_of_the_same_graph():
    model = AlbertForSequenceClassification.from_config(tiny_config(classifier_dropout_prob=0.0))
    ids, mask, types, labels = padded_batch(120, 2)
    loss = model(ids, mask, types, labels=labels).loss
    loss.backward(retain_graph=True)
    once = {name: p.grad.clone() for name, p in model.named_parameters()}
    loss.backward()
    for name, p in model.named_parameters():
        assert (p.grad - 2 * once[name]).abs().max() <= 1e-6 * once[name].abs().max().clamp_min(1), name


@pytest.mark.parametrize("chunk_elements", [7 * 50, 10 ** 6])  # 7 rows a chunk: the last one partial
def test_vocabulary_cross_entropy_is_cross_entropy_in_any_chunking(chunk_elements, monkeypatch):
    monkeypatch.setattr(modeling, "_LOGIT_CHUNK_ELEMENTS", chunk_elements)
    hidden = torch.randn(23, 8, requires_grad=True)
    weight, bias = torch.randn(50, 8, requires_grad=True), torch.randn(50, requires_grad=True)
    targets = torch.randint(0, 50, (23,))
    targets[:5] = (hidden[:5] @ weight.T + bias).argmax(-1)  # some right, so both outcomes are checked
    loss, correct = modeling.vocabulary_cross_entropy(hidden, weight, bias, targets)
    (loss * 3).backward()
    ours = [t.grad.clone() for t in (hidden, weight, bias)]
    for t in (hidden, weight, bias):
        t.grad = None
    logits = hidden @ weight.T + bias
    expected = F.cross_entropy(logits, targets)
    (expected * 3).backward()
    assert (loss - expected).abs() < 1e-5
    assert torch.equal(correct, logits.argmax(-1) == targets)
    assert 5 <= correct.sum() < 23
    for got, want in zip(ours, (hidden.grad, weight.grad, bias.grad), strict=True):
        assert (got - want).abs().max() < 1e-5


def test_vocabulary_cross_entropy_under_bf16_autocast_keeps_float32_gradients():
    hidden = torch.randn(9, 8, requires_grad=True)
    weight, bias = torch.randn(50, 8, requires_grad=True), torch.randn(50, requires_grad=True)
    targets = torch.randint(0, 50, (9,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = modeling.vocabulary_cross_entropy(hidden, weight, bias, targets)
    loss.backward()
    assert loss.dtype == weight.grad.dtype == hidden.grad.dtype == torch.float32
    assert (loss - F.cross_entropy(hidden @ weight.T + bias, targets)).abs() < 0.05


def test_vocabulary_cross_entropy_under_no_grad_skips_the_gradient_work(monkeypatch):
    def fail(*args):
        raise AssertionError("gradient computed under no_grad")

    monkeypatch.setattr(modeling, "_accumulate_softmax_gradient", fail)
    hidden = torch.randn(9, 8, requires_grad=True)
    weight, bias = torch.randn(50, 8, requires_grad=True), torch.randn(50, requires_grad=True)
    with torch.no_grad():
        loss, _ = modeling.vocabulary_cross_entropy(hidden, weight, bias, torch.randint(0, 50, (9,)))
    assert not loss.requires_grad
    with pytest.raises(AssertionError, match="under no_grad"):
        modeling.vocabulary_cross_entropy(hidden, weight, bias, torch.randint(0, 50, (9,)))


def test_round_trip_through_transformers(tmp_path):
    ours = AlbertForSequenceClassification.from_config(tiny_config(num_hidden_groups=2)).eval()
    ours.save_pretrained(tmp_path / "ours")
    theirs = transformers.AlbertForSequenceClassification.from_pretrained(tmp_path / "ours")
    theirs.save_pretrained(tmp_path / "theirs")
    back = AlbertForSequenceClassification.from_pretrained(tmp_path / "theirs").eval()
    ids, mask, types, _ = padded_batch(120, 2)
    with torch.no_grad():
        assert torch.equal(ours(ids, mask, types).logits, back(ids, mask, types).logits)
    assert back.config.id2label == ours.config.id2label


def test_config_json_keeps_unknown_fields(tmp_path):
    config = AlbertConfig.from_dict({**tiny_config().to_dict(), "some_future_field": [1, 2]})
    config.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["some_future_field"] == [1, 2]
    assert AlbertConfig.from_pretrained(tmp_path).to_dict() == config.to_dict()


def test_reads_pytorch_model_bin_with_weights_only(tmp_path):
    model = AlbertForSequenceClassification.from_config(tiny_config())
    model.config.save_pretrained(tmp_path)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    loaded = AlbertForSequenceClassification.from_pretrained(tmp_path)
    pairs = zip(model.state_dict().values(), loaded.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)


def test_pickled_code_in_bin_is_refused(tmp_path):
    tiny_config().save_pretrained(tmp_path)
    torch.save({"weights": torch.zeros(1), "payload": print}, tmp_path / "pytorch_model.bin")
    with pytest.raises(WeightsError, match="cannot read the weights"):
        AlbertForSequenceClassification.from_pretrained(tmp_path)


def test_config_only_directory_is_an_error_not_random_weights(tmp_path):
    tiny_config().save_pretrained(tmp_path)
    with pytest.raises(WeightsError, match="no weights found.*--from_scratch"):
        AlbertForSequenceClassification.from_pretrained(tmp_path)


def test_missing_and_misshaped_keys_are_named(tmp_path):
    from safetensors.torch import load_file, save_file

    AlbertForSequenceClassification.from_config(tiny_config()).save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    del state["albert.pooler.weight"]
    state["albert.embeddings.LayerNorm.weight"] = torch.ones(3)
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(WeightsError, match=r"missing keys: albert\.pooler\.weight.*mis-shaped keys: "
                                           r"albert\.embeddings\.LayerNorm\.weight"):
        AlbertForSequenceClassification.from_pretrained(tmp_path)


def test_new_label_count_reinitializes_only_the_head(tmp_path, caplog):
    source = AlbertForSequenceClassification.from_config(tiny_config())
    source.save_pretrained(tmp_path)
    model = AlbertForSequenceClassification.from_pretrained(tmp_path, num_labels=1)
    assert model.classifier.weight.shape == (1, 32)
    assert torch.equal(model.albert.pooler.weight, source.albert.pooler.weight)
    assert "classifier.weight" in caplog.text


def test_backbone_checkpoint_loads_into_classifier(tmp_path):
    AlbertForPreTraining.from_config(tiny_config()).save_pretrained(tmp_path)
    model = AlbertForSequenceClassification.from_pretrained(tmp_path, labels=["neg", "pos"])
    assert model.config.id2label == {0: "neg", 1: "pos"}


@pytest.mark.parametrize("field,value", [("hidden_size", 10**9), ("vocab_size", 0), ("num_hidden_layers", -1),
                                         ("hidden_act", "nope"), ("num_attention_heads", 5)])
def test_absurd_configs_are_refused_before_allocation(field, value):
    with pytest.raises(ConfigError, match=field):
        AlbertConfig.from_dict({**tiny_config().to_dict(), field: value})


def test_config_overrides():
    config = tiny_config().with_overrides("hidden_size=64, num_hidden_layers=3,hidden_act=gelu")
    assert (config.hidden_size, config.num_hidden_layers, config.hidden_act) == (64, 3, "gelu")
    with pytest.raises(ConfigError, match="bad config override"):
        tiny_config().with_overrides("hiden_size=3")


def test_unreachable_hub_id_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsError, match="no such folder, and as a hub model id it could not be fetched"):
        AlbertForSequenceClassification.from_pretrained("albert/albert-base-v2-not-here")


@pytest.mark.parametrize("hidden_act", ["gelu_new", "gelu"])
def test_explicit_implementation_computes_what_the_default_does_and_is_always_restored(hidden_act):
    model = AlbertForSequenceClassification.from_config(tiny_config(hidden_act=hidden_act)).eval()
    ids, mask, types, _ = padded_batch(120, 2)
    with torch.no_grad():
        fused = model(ids, mask, types).logits
        with model.implementation("explicit"):
            assert model.albert.implementation == "explicit"
            explicit = model(ids, mask, types).logits
    assert model.albert.implementation == "shared"
    assert (fused - explicit).abs().max() < 1e-5
    with pytest.raises(RuntimeError, match="export failed"), model.implementation("explicit"):
        raise RuntimeError("export failed")
    assert model.albert.implementation == "shared"
    with pytest.raises(ValueError, match="implementation 'eager'"), model.implementation("eager"):
        pass


def test_run_mlm_checkpoint_fine_tunes_with_a_fresh_pooler_and_says_so(tmp_path, caplog):
    """transformers' AlbertForMaskedLM (what run_mlm writes) has the encoder and MLM head but no pooler."""
    config = transformers.AlbertConfig(**{k: v for k, v in tiny_config().to_dict().items() if k != "architectures"})
    masked_lm = transformers.AlbertForMaskedLM(config)
    masked_lm.save_pretrained(tmp_path)
    model = AlbertForSequenceClassification.from_pretrained(tmp_path, labels=["neg", "pos"])
    encoder = model.albert.encoder.albert_layer_groups[0].albert_layers[0].ffn.weight
    assert torch.equal(encoder, masked_lm.albert.encoder.albert_layer_groups[0].albert_layers[0].ffn.weight)
    fresh = next(r.message for r in caplog.records if "newly initialized" in r.message)
    assert "albert.pooler.weight" in fresh and "albert.pooler.bias" in fresh and "classifier.weight" in fresh
    unused = next(r.message for r in caplog.records if "not used by" in r.message)
    assert "predictions.dense.weight" in unused
    # a missing encoder weight is damage, never a fresh start
    from safetensors.torch import load_file, save_file

    state = load_file(tmp_path / "model.safetensors")
    del state["albert.encoder.embedding_hidden_mapping_in.weight"]
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(WeightsError, match="missing keys: albert.encoder.embedding_hidden_mapping_in.weight"):
        AlbertForSequenceClassification.from_pretrained(tmp_path)


def test_a_batch_with_nothing_to_predict_adds_no_mlm_loss_instead_of_nan():
    model = AlbertForPreTraining.from_config(tiny_config())
    ids = torch.randint(5, 120, (2, 9))
    labels = torch.full_like(ids, -100)  # every word was longer than its sequence's masking budget
    out = model(ids, torch.ones_like(ids), torch.zeros_like(ids), labels=labels,
                sentence_order_label=torch.tensor([0, 1]))
    assert out.mlm_loss.item() == 0.0 and torch.isfinite(out.loss)
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_no_unsafe_deserialization_in_the_package():
    import albert_pytorch

    for path in Path(albert_pytorch.__file__).parent.rglob("*.py"):
        text = path.read_text()
        for line in text.splitlines():
            assert "trust_remote_code" not in line, path
            assert "import pickle" not in line and "pickle.load" not in line, path
            if "torch.load(" in line:
                assert "weights_only=True" in line, f"{path}: {line.strip()}"
        assert "allow_pickle=True" not in text, path
