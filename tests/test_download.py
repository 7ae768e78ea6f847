"""GLUE downloads against a local HTTP server: checksum, retry, safe extraction."""

import hashlib
import http.server
import threading
import zipfile
from functools import partial

import pytest

from albert_pytorch.data.download import DownloadError, download_tasks


@pytest.fixture
def server(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    failures = {"left": 0}

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            if failures["left"] > 0:
                failures["left"] -= 1
                self.send_error(503, "try again")
                return
            super().do_GET()

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(served)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/", served, failures
    httpd.shutdown()


def make_zip(path, members):
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in members.items():
            zf.writestr(name, text)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_download_verifies_retries_and_unpacks(server, tmp_path):
    url, served, failures = server
    digest = make_zip(served / "RTE.zip", {"RTE/train.tsv": "index\tsentence1\tsentence2\tlabel\n",
                                           "RTE/dev.tsv": "x"})
    failures["left"] = 1  # the first request fails: the retry must fetch it
    (folder,) = download_tasks(["RTE"], tmp_path / "data", url, retries=2, checksums={"RTE": digest})
    assert sorted(p.name for p in folder.iterdir()) == ["dev.tsv", "train.tsv"]
    assert not list((tmp_path / "data").glob(".download-*"))


def test_wrong_checksum_is_refused_and_nothing_is_left(server, tmp_path):
    url, served, _ = server
    make_zip(served / "SST-2.zip", {"SST-2/train.tsv": "sentence\tlabel\n"})
    with pytest.raises(DownloadError, match="does not match the expected"):
        download_tasks(["SST-2"], tmp_path / "data", url, retries=1)
    assert not (tmp_path / "data" / "SST-2").exists()


@pytest.mark.parametrize("evil", ["../escaped.txt", "/etc/evil.txt", "SST-2/../../escaped.txt"])
def test_path_traversal_members_are_rejected(server, tmp_path, evil):
    url, served, _ = server
    digest = make_zip(served / "SST-2.zip", {"SST-2/train.tsv": "ok", evil: "pwned"})
    with pytest.raises(DownloadError, match="unsafe member"):
        download_tasks(["SST-2"], tmp_path / "data", url, retries=1, checksums={"SST-2": digest})
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "data" / "SST-2").exists()


def test_unreachable_server_gives_up_with_a_message(tmp_path):
    with pytest.raises(DownloadError, match="failed after 2 attempts"):
        download_tasks(["WNLI"], tmp_path / "dataset", "http://127.0.0.1:9/", retries=2, timeout=2)
    assert not (tmp_path / "dataset").exists()  # no empty folder left behind


def test_mrpc_explains_itself(tmp_path):
    with pytest.raises(DownloadError, match="MSRParaphraseCorpus"):
        download_tasks(["MRPC"], tmp_path)
