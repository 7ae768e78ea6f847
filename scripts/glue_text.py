"""A GLUE task's training sentences as pretraining text: one document per example (its sentence, or
its two sentences on two lines), documents separated by blank lines.

    python3 scripts/glue_text.py --task_name SST-2 --data_dir ../shared/data/glue/SST-2 --output outputs/sst2.txt

Only the train split is written: pretraining on the dev or test text of a task you evaluate on would
leak it into the evaluation.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from albert_pytorch.data import get_task, read_split
from albert_pytorch.io import atomic_write_text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task_name", required=True, help="GLUE task, e.g. SST-2 or STS-B")
    parser.add_argument("--data_dir", required=True, help="the task's folder of GLUE TSVs")
    parser.add_argument("--output", required=True, help="the text file to write")
    args = parser.parse_args()
    examples, _ = read_split(get_task(args.task_name), args.data_dir, "train")
    documents = ["\n".join(filter(None, (e.text_a, e.text_b))) for e in examples]
    atomic_write_text(Path(args.output), "\n\n".join(documents) + "\n")
    print(f"wrote {len(documents)} documents to {args.output}")


if __name__ == "__main__":
    main()
