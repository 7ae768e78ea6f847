"""ModelZoo-compatible entry point: `python3 Albert_pth2onnx.py --help`; the work is in albert_pytorch.deploy."""

import sys

from albert_pytorch.cli import main

if __name__ == "__main__":
    main(["pth2onnx", *sys.argv[1:]], script="Albert_pth2onnx.py")
