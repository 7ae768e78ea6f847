"""Fixtures: a private feature cache, the tiny tokenizer, model and task every test trains on, the shared data.
(What tests share besides fixtures is in helpers.py.)"""

import os
import signal
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from helpers import ROOT, SHARED, TEXTS
from hypothesis import settings
from hypothesis.configuration import set_hypothesis_home_dir

from albert_pytorch import AlbertConfig
from albert_pytorch.tokenization import load_tokenizer, train_sentencepiece

# nothing of hypothesis's in the checkout (no example database, its caches in a folder removed at exit): tests
# write under their temporary folders only
_HYPOTHESIS_HOME = tempfile.TemporaryDirectory(prefix="hypothesis-")
set_hypothesis_home_dir(_HYPOTHESIS_HOME.name)
settings.register_profile("no-database", database=None)
settings.load_profile("no-database")


def _checkout_files() -> set[str]:
    """Every file in the checkout but the virtual environment, caches and CI's own installs."""
    skipped = {".git", ".venv", "__pycache__", ".ruff_cache"}
    return {str(p.relative_to(ROOT)) for p in ROOT.rglob("*")
            if p.is_file() and not skipped & set(p.relative_to(ROOT).parts) and ".egg-info" not in str(p)}


@pytest.fixture(scope="session", autouse=True)
def _checkout_left_as_found():
    """Tests write under their temporary folders only: the suite leaves the checkout as it found it."""
    before = _checkout_files()
    yield
    added = sorted(_checkout_files() - before)
    assert not added, f"the tests wrote into the checkout: {added[:10]}"


@pytest.fixture(scope="session", autouse=True)
def _fixed_threads():
    """Runs inside the test process keep the session's thread count instead of probing the idle cores each time
    (which a busy CI host would answer differently from run to run); test_threads.py tests the probe."""
    os.environ.setdefault("OMP_NUM_THREADS", str(torch.get_num_threads()))


@pytest.fixture(scope="session", autouse=True)
def _private_feature_cache(tmp_path_factory):
    """Tests (and the processes they start) never touch the user's feature cache; pytest prunes old ones."""
    os.environ["ALBERT_PYTORCH_CACHE"] = str(tmp_path_factory.mktemp("feature-cache"))


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("tokenizer")
    train_sentencepiece(TEXTS, directory, vocab_size=120)
    return directory


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_tokenizer_dir):
    return load_tokenizer(tiny_tokenizer_dir)


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED / "glue").is_dir():
        pytest.skip("../shared/data is absent")
    return SHARED


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_task_dir(tmp_path_factory) -> Path:
    """A small SST-2-layout folder: the sample's sentences, a few hundred rows."""
    from albert_pytorch.sample import sample_data_dir

    folder = tmp_path_factory.mktemp("data") / "SST-2"
    folder.mkdir()
    source = sample_data_dir()
    (folder / "train.tsv").write_text((source / "train.tsv").read_text())
    (folder / "dev.tsv").write_text((source / "dev.tsv").read_text())
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """Tokenizer + tiny config.json (dropout on, so resumption must restore randomness too)."""
    from albert_pytorch.sample import prepare_sample_model

    directory = prepare_sample_model(tmp_path_factory.mktemp("model"))
    config = AlbertConfig.from_pretrained(directory)
    config.hidden_dropout_prob = 0.1
    config.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def trained_model(tiny_task_dir, tiny_model_dir, tmp_path_factory) -> Path:
    """A tiny SST-2 classifier, as `train` leaves it (negative/positive labels, weights, tokenizer)."""
    from albert_pytorch.train import TrainConfig, run

    out = tmp_path_factory.mktemp("served") / "sst2-tiny"
    run(TrainConfig(data_dir=str(tiny_task_dir), model_name_or_path=str(tiny_model_dir), from_scratch=True,
                    output_dir=str(out), max_steps=20, learning_rate=2e-3, max_seq_length=48, do_eval=False,
                    progress=False, device="cpu", report_to="none"))
    return out


@pytest.fixture(scope="session")
def stsb_regressor(tiny_model_dir, tmp_path_factory) -> Path:
    """A tiny STS-B regressor (two steps on the fixture rows), as `train` leaves it."""
    from glue_fixtures import FIXTURES

    from albert_pytorch.train import TrainConfig, run

    stsb = tmp_path_factory.mktemp("stsb") / "STS-B"
    stsb.mkdir()
    (stsb / "train.tsv").write_text(FIXTURES["STS-B"]["train.tsv"])
    out = tmp_path_factory.mktemp("regressor") / "stsb-tiny"
    run(TrainConfig(task_name="STS-B", data_dir=str(stsb), model_name_or_path=str(tiny_model_dir), from_scratch=True,
                    output_dir=str(out), max_steps=2, max_seq_length=48, do_eval=False, progress=False,
                    device="cpu", report_to="none"))
    return out


@pytest.fixture
def own_signal_handlers():
    """SIGINT's and SIGTERM's handlers put back as they were after the test."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


@pytest.fixture
def dropped(monkeypatch) -> list:
    """The exceptions Python drops (what it would print as "Exception ignored in ..."), in order."""
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", lambda unraisable: seen.append(unraisable.exc_type))
    return seen
