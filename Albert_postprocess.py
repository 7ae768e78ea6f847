"""ModelZoo-compatible entry point: `python3 Albert_postprocess.py --help`; the work is in albert_pytorch.deploy."""

import sys

from albert_pytorch.cli import main

if __name__ == "__main__":
    main(["postprocess", *sys.argv[1:]], script="Albert_postprocess.py")
