"""`python3 -m albert_pytorch.infer`: the ais_bench-compatible runtime (flags as ais_bench's)."""

import sys

from .cli import main

if __name__ == "__main__":
    main(["infer", *sys.argv[1:]])
