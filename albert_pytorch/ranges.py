"""The values a numeric setting may take, stated once per setting: a `Range` is both the argparse type of its
flag (a bad value is one line and exit 2, before anything runs) and the check a run config makes of itself.
Floats are always finite: NaN and infinity are no setting's value."""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

from .errors import UsageError


@dataclass(frozen=True)
class Range:
    kind: type  # int or float
    words: str  # what a value must be, as the error says it
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # `low` itself is outside
    high_open: bool = False
    also: tuple[int, ...] = ()  # values allowed outside [low, high], such as -1 for "not set"

    def contains(self, value: float) -> bool:
        if value in self.also:
            return True
        if not math.isfinite(value):
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return self.high is None or (value < self.high or (not self.high_open and value == self.high))

    def check(self, flag: str, value: float | None) -> None:
        """UsageError naming `flag` unless `value` (None: not set) is in range."""
        if value is not None and not self.contains(value):
            raise UsageError(f"{flag} must be {self.words}, got {value}")

    def __call__(self, text: str) -> int | float:
        """argparse's `type`: the parsed value, or ArgumentTypeError saying what it must be."""
        try:
            value = self.kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {self.words}, got {text!r}") from None
        if not self.contains(value):
            raise argparse.ArgumentTypeError(f"must be {self.words}, got {text}")
        return value

    @property
    def __name__(self) -> str:  # argparse names a type in some messages
        return self.kind.__name__


POSITIVE_INT = Range(int, "an integer >= 1", low=1)
COUNT = Range(int, "an integer >= 0", low=0)
POSITIVE = Range(float, "a finite number > 0", low=0, low_open=True)
NON_NEGATIVE = Range(float, "a finite number >= 0", low=0)
FRACTION = Range(float, "a number in [0, 1)", low=0, high=1, high_open=True)
PROBABILITY = Range(float, "a number in [0, 1]", low=0, high=1)
OPEN_PROBABILITY = Range(float, "a number in (0, 1)", low=0, high=1, low_open=True, high_open=True)
PORT = Range(int, "a port number in [0, 65535] (0: any free one)", low=0, high=65535)
STEPS_OR_UNSET = Range(int, "-1 (not set) or an integer >= 1", low=1, also=(-1,))
SEQUENCE_LENGTH = Range(int, "an integer >= 2 ([CLS] and [SEP] take 2)", low=2)
PRETRAINING_SEQUENCE_LENGTH = Range(int, "an integer >= 5 ([CLS] A [SEP] B [SEP])", low=5)
VOCAB_SIZE = Range(int, "an integer >= 6 (ALBERT's five special pieces take 5)", low=6)
