"""The one error every layer may raise: a bad argument, which the command line reports with exit code 2."""


class UsageError(ValueError):
    """Settings that cannot work together or with what is on disk; the command line exits with 2."""
