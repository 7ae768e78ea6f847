"""Fetch the GLUE task archives: retried downloads, pinned checksums, safe extraction.

An archive is accepted only if its SHA-256 matches the pinned value, and is unpacked member by
member into a temporary folder (no absolute paths, no `..`, no links) that is renamed into place.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

from ..io import sha256_file

logger = logging.getLogger(__name__)

GLUE_BASE_URL = "https://dl.fbaipublicfiles.com/glue/data/"
# task -> (archive, folder inside it, SHA-256 of the archive as other GLUE tooling publishes it).
ARCHIVES = {
    "CoLA": ("CoLA.zip", "CoLA", "f212fcd832b8f7b435fb991f101abf89f96b933ab400603bf198960dfc32cbff"),
    "SST-2": ("SST-2.zip", "SST-2", "d67e16fb55739c1b32cdce9877596db1c127dc322d93c082281f64057c16deaa"),
    "STS-B": ("STS-B.zip", "STS-B", "e60a6393de5a8b5b9bac5020a1554b54e3691f9d600b775bd131e613ac179c85"),
    "QQP": ("QQP-clean.zip", "QQP", "40e7c862c04eb26ee04b67fd900e76c45c6ba8e6d8fab4f8f1f8072a1a3fbae0"),
    "MNLI": ("MNLI.zip", "MNLI", "e7c1d896d26ed6caf700110645df426cc2d8ebf02a5ab743d5a5c68ac1c83633"),
    "QNLI": ("QNLIv2.zip", "QNLI", "e634e78627a29adaecd4f955359b22bf5e70f2cbd93b493f2d624138a0c0e5f5"),
    "RTE": ("RTE.zip", "RTE", "6bf86de103ecd335f3441bd43574d23fef87ecc695977a63b82d5efb206556ee"),
    "WNLI": ("WNLI.zip", "WNLI", "ae0e8e4d16f4d46d4a0a566ec7ecceccfd3fbfaa4a7a4b4e02848c0f2561ac46"),
}
MRPC_NOTE = ("MRPC is not redistributed as a GLUE archive: build it from Microsoft's MSRParaphraseCorpus "
             "(train/dev split by GLUE's dev_ids.tsv) into <data_dir>/MRPC/{train,dev,test}.tsv")


class DownloadError(RuntimeError):
    """An archive that could not be fetched, did not match its checksum, or was unsafe to unpack."""


def download_tasks(tasks: list[str], data_dir: str | os.PathLike, base_url: str = GLUE_BASE_URL,
                   retries: int = 3, timeout: float = 60.0, checksums: dict[str, str] | None = None) -> list[Path]:
    """Download, verify and unpack each task into `data_dir/<task>/`; returns the task folders."""
    data_dir = Path(data_dir)
    created = not data_dir.exists()
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        return [_download_task(task, data_dir, base_url, retries, timeout, checksums) for task in tasks]
    finally:
        if created and not any(data_dir.iterdir()):  # a failed first download leaves no empty folder behind
            data_dir.rmdir()


def _download_task(task: str, data_dir: Path, base_url: str, retries: int, timeout: float,
                   checksums: dict[str, str] | None) -> Path:
    if task == "MRPC":
        raise DownloadError(MRPC_NOTE)
    if task not in ARCHIVES:
        raise DownloadError(f"unknown task {task!r}; choose from {', '.join(ARCHIVES)} (and see MRPC's note)")
    archive, inner, sha256 = ARCHIVES[task]
    sha256 = (checksums or {}).get(task, sha256)
    with tempfile.TemporaryDirectory(dir=data_dir, prefix=".download-") as tmp:
        path = Path(tmp) / archive
        _fetch(base_url.rstrip("/") + "/" + archive, path, retries, timeout)
        digest = sha256_file(path)
        if digest != sha256:
            raise DownloadError(f"{archive}: SHA-256 {digest} does not match the expected {sha256}; "
                                "the download is damaged or not the GLUE archive, and was discarded")
        folder = _extract(path, inner, data_dir / task, Path(tmp) / "unpacked")
    logger.info("%s ready in %s", task, folder)
    return folder


def _fetch(url: str, path: Path, retries: int, timeout: float) -> None:
    for attempt in range(1, retries + 1):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(path, "wb") as out:
                shutil.copyfileobj(response, out, 1 << 20)
            return
        except (urllib.error.URLError, OSError, TimeoutError) as err:
            if attempt == retries:
                raise DownloadError(f"{url}: failed after {retries} attempts ({err})") from err
            wait = 2 ** (attempt - 1)
            logger.warning("%s: %s; retrying in %ds (%d/%d)", url, err, wait, attempt, retries)
            time.sleep(wait)


def _extract(archive: Path, inner: str, target: Path, staging: Path) -> Path:
    """Unpack `inner/` of the archive to `target`, refusing any member that could land outside it."""
    with zipfile.ZipFile(archive) as zf:
        for member in zf.infolist():
            name = PurePosixPath(member.filename)
            is_link = stat.S_ISLNK(member.external_attr >> 16)
            if name.is_absolute() or ".." in name.parts or "\\" in member.filename or is_link:
                raise DownloadError(f"{archive.name}: unsafe member {member.filename!r} (absolute path, '..' or "
                                    "link); nothing was extracted")
        members = [m for m in zf.infolist() if PurePosixPath(m.filename).parts[:1] == (inner,) and not m.is_dir()]
        if not members:
            raise DownloadError(f"{archive.name}: no {inner}/ folder inside")
        for member in members:
            destination = staging.joinpath(*PurePosixPath(member.filename).parts)
            destination.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(member) as source, open(destination, "wb") as out:
                shutil.copyfileobj(source, out)
    if target.exists():
        shutil.rmtree(target)
    os.replace(staging / inner, target)
    return target
