"""Atomic file writes: a kill at any moment leaves either the old file or the new one, never half.
(And strict JSON, the cache folder, and `text_files`, the one meaning of "text files or folders" on a
command line.)

Temporary files and folders are private while written (mkstemp/mkdtemp make them 0600/0700) and get the
usual permissions, 0666/0777 less the umask, before they are renamed into place: a model directory must
be readable by another user or a serving container, as an ordinary write would leave it.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success fsync it and rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~umask())
        os.replace(tmp, path)
    except OSError as err:
        err.filename = str(path)  # the file the user knows, not the temporary one (or none)
        raise
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_directory(path.parent)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Call `write(tmp_path)` and move the result to `path` atomically."""
    with atomic_path(path) as tmp:
        write(tmp)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def to_json(data: Any, indent: int | None = 2, sort_keys: bool = False) -> str:
    """JSON that every parser reads: NaN and infinities (which Python writes as bare `NaN`) become null."""
    return json.dumps(_finite(data), indent=indent, allow_nan=False, ensure_ascii=False, sort_keys=sort_keys)


def _finite(data: Any) -> Any:
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {key: _finite(value) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [_finite(value) for value in data]
    return data


def atomic_write_json(path: str | os.PathLike, data: Any) -> None:
    atomic_write_text(path, to_json(data) + "\n")


class NotUtf8Error(ValueError):
    """A text file with bytes that are not UTF-8; the message names the file, line and column."""

    def __init__(self, path: str | os.PathLike, line: int, problem: str):
        self.path, self.line, self.problem = Path(path), line, problem
        super().__init__(f"{path}:{line}: {problem}")


def read_utf8(path: str | os.PathLike) -> str:
    """A text file's contents (a leading byte-order mark dropped); NotUtf8Error names where it is not UTF-8."""
    raw = Path(path).read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line_start = raw.rfind(b"\n", 0, err.start) + 1
        raise NotUtf8Error(path, raw.count(b"\n", 0, err.start) + 1,
                           f"not UTF-8 text ({err.reason} at byte {err.start} of the file, column "
                           f"{err.start - line_start + 1} of the line)") from None


def cache_root() -> Path:
    """Where caches go: $ALBERT_PYTORCH_CACHE, or ~/.cache/albert_pytorch."""
    return Path(os.environ.get("ALBERT_PYTORCH_CACHE", Path.home() / ".cache" / "albert_pytorch"))


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@functools.cache
def umask() -> int:
    """The process's umask (the only way to read it is to set it, so it is read once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_failure(err: OSError, directory: str | os.PathLike) -> str:
    """A failed write said plainly: a full disk or quota as such, with what is left free."""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        try:
            free = f"{shutil.disk_usage(directory).free / 2**20:.1f} MiB free"
        except OSError:
            free = "free space unknown"
        return f"No space left on device ({free} on the disk holding {directory})"
    return f"{err.strerror or err} ({getattr(err, 'filename', None) or directory})"


@contextlib.contextmanager
def published_files(directory: str | os.PathLike, last: str = "config.json") -> Iterator[Path]:
    """A private folder inside `directory` to write a set of files into; when the block ends, each is fsynced
    and renamed into `directory` (`last` renamed last, so its presence means the rest is there). If the block
    fails (a full disk), nothing of the set replaces what `directory` held."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".model-", dir=directory))
    try:
        yield tmp
        made = sorted(tmp.iterdir(), key=lambda p: p.name == last)
        for path in made:
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
            os.chmod(path, 0o666 & ~umask())
        for path in made:
            os.replace(path, directory / path.name)
        _fsync_directory(directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def publish_directory(directory: Path) -> None:
    """Give a privately built directory the permissions an ordinary mkdir would have."""
    os.chmod(directory, 0o777 & ~umask())


def _fsync_directory(directory: Path) -> None:
    # Makes the rename itself durable; not every platform lets a directory be opened.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def text_files(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """The files named, a folder standing for every .txt file under it in name order."""
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            files += sorted(item.rglob("*.txt"))
        elif item.is_file():
            files.append(item)
        else:
            raise FileNotFoundError(f"{item}: no such file or folder")
    if not files:
        raise FileNotFoundError(f"no .txt files in {', '.join(map(str, inputs))}")
    return files
