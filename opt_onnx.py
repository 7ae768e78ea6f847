"""ModelZoo-compatible entry point: `python3 opt_onnx.py --help`; the work is in albert_pytorch.deploy."""

import sys

from albert_pytorch.cli import main

if __name__ == "__main__":
    main(["opt_onnx", *sys.argv[1:]], script="opt_onnx.py")
