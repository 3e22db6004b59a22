"""Listing new shards: real files for file://, moto's S3 server on loopback for s3://."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from kubetune_operator import corpus

from kubetune_api.common import StorageSettings


def write_shard(path: Path, text: str, mtime: datetime) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    os.utime(path, (mtime.timestamp(), mtime.timestamp()))


T0 = datetime(2025, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("name", "text", "documents"),
    [
        ("a.txt", "one\n\ntwo\n  \nthree", 3),
        ("a.jsonl", '{"text": "x"}\n{"text": ""}\nnot json\n{"body": "y"}\n{"text": "z"}\n', 2),
        ("a.txt", "", 0),
    ],
)
def test_count_documents(name: str, text: str, documents: int) -> None:
    assert corpus.count_documents(text.encode(), f"file:///c/{name}", "text") == documents


def test_file_listing_returns_only_newer_shards_oldest_first(tmp_path: Path) -> None:
    write_shard(tmp_path / "old.txt", "a\nb\n", T0)
    write_shard(tmp_path / "day2" / "new.jsonl", '{"text": "c"}\n', T0 + timedelta(days=2))
    write_shard(tmp_path / "day1.txt", "d\ne\nf\n", T0 + timedelta(days=1))
    write_shard(tmp_path / "notes.md", "ignored\n", T0 + timedelta(days=3))
    uri = f"file://{tmp_path}/"

    shards = corpus.list_new_shards(uri, newer_than=T0)

    assert shards == [
        corpus.Shard(f"file://{tmp_path}/day1.txt", T0 + timedelta(days=1), 3),
        corpus.Shard(f"file://{tmp_path}/day2/new.jsonl", T0 + timedelta(days=2), 1),
    ]
    assert len(corpus.list_new_shards(uri, newer_than=None)) == 3


@pytest.mark.parametrize(
    ("uri", "message"),
    [("file:///nonexistent/corpus/", "no such directory"), ("pvc://claim/news/", "only file:// and s3://")],
)
def test_unreadable_corpus_names_the_uri(uri: str, message: str) -> None:
    with pytest.raises(corpus.CorpusError, match=message) as error:
        corpus.list_new_shards(uri, newer_than=None)
    assert uri.rstrip("/") in str(error.value)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def s3_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def test_s3_listing_against_an_s3_server(s3_endpoint: str) -> None:
    import boto3

    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    client.create_bucket(Bucket="data")
    client.put_object(Bucket="data", Key="news/a.txt", Body=b"one\ntwo\n")
    client.put_object(Bucket="data", Key="other/x.txt", Body=b"not in the corpus\n")
    storage = StorageSettings(endpoint=s3_endpoint)

    first = corpus.list_new_shards("s3://data/news/", newer_than=None, storage=storage)
    assert [(s.uri, s.documents) for s in first] == [("s3://data/news/a.txt", 2)]

    time.sleep(1.1)  # S3 modification times have one-second resolution
    client.put_object(Bucket="data", Key="news/b.jsonl", Body=b'{"text": "three"}\n')
    second = corpus.list_new_shards("s3://data/news/", newer_than=first[0].last_modified, storage=storage)
    assert [(s.uri, s.documents) for s in second] == [("s3://data/news/b.jsonl", 1)]

    with pytest.raises(corpus.CorpusError, match="s3://missing-bucket/news/: cannot list"):
        corpus.list_new_shards("s3://missing-bucket/news/", newer_than=None, storage=storage)
