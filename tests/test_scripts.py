"""scripts/: glue_text.py writes a task's training sentences as pretraining documents, and says so in --help."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_glue_text_writes_the_training_sentences_and_its_help_is_whole(tiny_task_dir, tmp_path):
    script = str(ROOT / "scripts" / "glue_text.py")
    helped = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True, check=True).stdout
    assert "would\nleak it into the evaluation." in helped  # the last sentence, not cut after the first line
    out = tmp_path / "sst2.txt"
    subprocess.run([sys.executable, script, "--task_name", "SST-2", "--data_dir", str(tiny_task_dir), "--output",
                    str(out)], check=True, capture_output=True)
    documents = out.read_text().strip().split("\n\n")
    first_row = (tiny_task_dir / "train.tsv").read_text().splitlines()[1].rsplit("\t", 1)[0]
    assert len(documents) == 400 and documents[0] == first_row
