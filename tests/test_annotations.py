"""``make annotations`` (tools/annotations.py): the pinned hashes are the files the tests read,
and a file reaches its destination only whole and with its pinned hash, from a local folder (``--from``)
or over HTTP (a server on 127.0.0.1 here; nothing leaves the machine)."""

from __future__ import annotations

import hashlib
import http.server
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
from conftest import SHARED_DATA, annotations_dir, missing_annotations

from tools import annotations

EXPECTED = sorted(
    [f"cirr/captions/cap.rc2.{s}.json" for s in ("test1", "val")]
    + [f"cirr/image_splits/split.rc2.{s}.json" for s in ("test1", "val")]
    + [
        f"fashioniq/{kind}/{stem}.{c}.{s}.json"
        for kind, stem in (("captions", "cap"), ("image_splits", "split"))
        for c in ("dress", "shirt", "toptee")
        for s in ("test", "val")
    ]
    + [
        "circo/annotations/test.json",
        "circo/annotations/val.json",
        "circo/submission_val_example.json",
        "concepts/oidv7-class-descriptions.csv",
    ]
)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def leftovers(folder: Path) -> list[str]:
    """Every file under ``folder`` (temporary ones included), relative."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


@pytest.fixture
def real_data() -> Path:
    if not (SHARED_DATA / "cirr").is_dir():
        pytest.skip(missing_annotations(SHARED_DATA))
    return SHARED_DATA


@pytest.fixture
def release(tmp_path, monkeypatch) -> Path:
    """A small stand-in release (three files in the real layout), the module's tables pointed at it."""
    src = tmp_path / "src"
    files = {
        "cirr/captions/cap.rc2.val.json": b'[{"pairid": 0}]\n',
        "circo/annotations/val.json": b'[{"id": 0, "shared_concept": "dog"}]\n',
        "concepts/oidv7-class-descriptions.csv": b"LabelName,DisplayName\n/m/0bt9lr,Dog\n",
    }
    for name, data in files.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(data)
    monkeypatch.setattr(annotations, "SHA256", {name: sha(data) for name, data in files.items()})
    monkeypatch.setattr(annotations, "URLS", {name: f"http://127.0.0.1:9/{name}" for name in files})
    return src


def test_the_tables_pin_exactly_the_files_the_tests_read_with_their_hashes(real_data):
    assert sorted(annotations.SHA256) == EXPECTED == sorted(annotations.URLS)
    wrong = {name: h for name, h in annotations.SHA256.items() if annotations.sha256_of(real_data / name) != h}
    assert not wrong, f"hashes in tools/annotations.sha256 differ from the files in {real_data}: {wrong}"
    for name, url in annotations.URLS.items():  # pinned: a 40-digit commit, or the V7 release's path
        assert url.startswith("https://") and url.endswith(
            "/submission_examples/submission_val.json" if "submission" in name else "/" + name.split("/", 1)[1]
        )
        if "githubusercontent" in url:
            assert len(url.split("/")[5]) == 40, url


def test_the_annotations_folder_is_shared_data_else_data_annotations(tmp_path):
    shared, fetched = tmp_path / "shared" / "data", tmp_path / "repo" / "data" / "annotations"
    assert annotations_dir((shared, fetched)) == shared  # neither: the first, which the skip names
    fetched.mkdir(parents=True)
    assert annotations_dir((shared, fetched)) == fetched
    shared.mkdir(parents=True)
    assert annotations_dir((shared, fetched)) == shared
    assert "make annotations" in missing_annotations(shared)


def test_from_copies_and_checks_every_file_then_skips_them(real_data, tmp_path, capsys):
    dest = tmp_path / "annotations"
    assert annotations.main(["--dest", str(dest), "--from", str(real_data)]) == 0
    assert leftovers(dest) == EXPECTED
    for name in EXPECTED:
        assert (dest / name).read_bytes() == (real_data / name).read_bytes(), name
    out = capsys.readouterr().out.splitlines()
    assert len(out) == len(EXPECTED) + 1 and all(line.startswith("copied ") for line in out[:-1])
    assert (
        out[-1] == f"{len(EXPECTED)} annotation files in {dest}: 0 fetched, {len(EXPECTED)} copied, 0 present, 0 failed"
    )
    mtimes = {name: (dest / name).stat().st_mtime_ns for name in EXPECTED}
    assert annotations.main(["--dest", str(dest), "--from", str(real_data)]) == 0
    assert capsys.readouterr().out.splitlines()[-1].endswith(f"0 copied, {len(EXPECTED)} present, 0 failed")
    assert {name: (dest / name).stat().st_mtime_ns for name in EXPECTED} == mtimes


def test_a_corrupted_source_file_is_refused_and_nothing_is_left_for_it(release, tmp_path, capsys):
    src = tmp_path / "corrupted"
    shutil.copytree(release, src)
    bad = src / "circo/annotations/val.json"
    data = bytearray(bad.read_bytes())
    data[10] ^= 0x01  # one byte
    bad.write_bytes(bytes(data))
    dest = tmp_path / "dest"
    with pytest.raises(annotations.AnnotationError) as e:
        annotations.fetch_file("circo/annotations/val.json", dest, src)
    message = str(e.value)
    assert str(bad) in message and annotations.SHA256["circo/annotations/val.json"] in message
    assert sha(bytes(data)) in message and "\n" not in message
    assert leftovers(dest) == []  # no file, and no temporary one
    # Through the CLI: the other files are copied, this one is reported, the exit status says so.
    assert annotations.main(["--dest", str(dest), "--from", str(src)]) == 1
    assert leftovers(dest) == ["cirr/captions/cap.rc2.val.json", "concepts/oidv7-class-descriptions.csv"]
    out = capsys.readouterr().out
    assert f"FAILED   circo/annotations/val.json: {bad}" in out and out.splitlines()[-1].endswith(
        "1 failed (see above)"
    )


def test_an_existing_different_file_is_not_overwritten(release, tmp_path):
    dest = tmp_path / "dest"
    mine = dest / "cirr/captions/cap.rc2.val.json"
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"my own edits\n")
    with pytest.raises(annotations.AnnotationError, match="move it away") as e:
        annotations.fetch_file("cirr/captions/cap.rc2.val.json", dest, release)
    assert str(mine) in str(e.value)
    assert mine.read_bytes() == b"my own edits\n"
    assert leftovers(dest) == ["cirr/captions/cap.rc2.val.json"]


@pytest.fixture
def http_folder(release, monkeypatch):
    """``release`` served over HTTP on 127.0.0.1, the URL table pointing there."""
    handler = lambda *a, **kw: http.server.SimpleHTTPRequestHandler(*a, directory=str(release), **kw)  # noqa: E731
    monkeypatch.setattr(http.server.SimpleHTTPRequestHandler, "log_message", lambda *a: None)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setattr(annotations, "URLS", {name: f"{base}/{name}" for name in annotations.SHA256})
    yield release
    server.shutdown()
    server.server_close()


def test_download_from_a_local_server_checks_each_file(http_folder, tmp_path, capsys):
    dest = tmp_path / "dest"
    assert annotations.main(["--dest", str(dest), "--timeout", "5"]) == 0
    assert leftovers(dest) == sorted(annotations.SHA256)
    for name in annotations.SHA256:
        assert (dest / name).read_bytes() == (http_folder / name).read_bytes()
    assert capsys.readouterr().out.splitlines()[-1].endswith("3 fetched, 0 copied, 0 present, 0 failed")
    # A file that changed upstream: refused, naming the URL and both hashes; nothing written.
    name = "concepts/oidv7-class-descriptions.csv"
    (http_folder / name).write_bytes(b"LabelName,DisplayName\n/m/0bt9lr,Cat\n")
    with pytest.raises(annotations.AnnotationError) as e:
        annotations.fetch_file(name, tmp_path / "again", timeout=5)
    assert annotations.URLS[name] in str(e.value) and annotations.SHA256[name] in str(e.value)
    assert sha((http_folder / name).read_bytes()) in str(e.value)
    assert not (tmp_path / "again").exists() or leftovers(tmp_path / "again") == []


PART = b'HTTP/1.0 200 OK\r\nContent-Length: 1000\r\n\r\n[{"pairid"'


@pytest.mark.parametrize(
    "sends, closes, error",
    [
        (b"", False, "no answer within 0.5 s"),
        (PART, False, "no answer within 0.5 s"),
        (PART, True, "received 10 of 1000 bytes"),
    ],
    ids=["nothing", "part-of-the-body", "part-of-the-body-then-closes"],
)
def test_a_server_that_stops_answering_times_out_and_leaves_nothing(
    release, tmp_path, monkeypatch, sends, closes, error
):
    """The server accepts the connection, sends ``sends`` (nothing, or headers and the first bytes of the
    body), then nothing more: the read times out (or fails, if the server closes the connection), and
    no file, whole or partial, is left."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    held = []

    def serve():
        connection, _ = listener.accept()
        held.append(connection)
        connection.recv(65536)  # the request
        connection.sendall(sends)
        if closes:
            connection.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    name = "cirr/captions/cap.rc2.val.json"
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/{name}"
    monkeypatch.setattr(annotations, "URLS", {**annotations.URLS, name: url})
    dest = tmp_path / "dest"
    start = time.monotonic()
    try:
        with pytest.raises(annotations.AnnotationError, match=error) as e:
            annotations.fetch_file(name, dest, timeout=0.5)
    finally:
        elapsed = time.monotonic() - start
        thread.join(5)
        for connection in held:
            connection.close()
        listener.close()
    assert elapsed < 5
    assert held, "the server never saw the connection"
    assert url in str(e.value) and "\n" not in str(e.value)
    assert not dest.exists() or leftovers(dest) == []
