"""List the shards of a ContinuousPretrain corpus and count their documents (file:// and s3://).

This is I/O against object storage, so it lives beside kube.py as the operator's second
seam to the outside world: reconcile/continuouspretrain.py calls it to observe the corpus and
hands the listing to pure decision functions; builders never import it. Unit tests use real
files (file://) and moto's S3 server on loopback (s3://).

s3:// uses boto3 with StorageSettings.endpoint/region and the operator's own credentials
(environment or IRSA): the operator only lists and reads, the trainer pods get the Secret.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubetune_api.common import StorageSettings

SHARD_SUFFIXES = (".txt", ".jsonl")


class CorpusError(OSError):
    """The corpus cannot be listed or a shard cannot be read; the message names the URI."""


@dataclass(frozen=True)
class Shard:
    """One file under the corpus prefix."""

    uri: str
    last_modified: datetime
    documents: int


def count_documents(data: bytes, uri: str, text_field: str) -> int:
    """Documents in a shard: non-empty lines of a .txt file, rows with a non-empty text field in .jsonl."""
    lines = [line for line in data.decode("utf-8", errors="replace").splitlines() if line.strip()]
    if not uri.endswith(".jsonl"):
        return len(lines)
    documents = 0
    for line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # malformed rows are the trainer's to report (dataPreparation.maxBadRecordRatio)
        if isinstance(row, dict) and str(row.get(text_field) or "").strip():
            documents += 1
    return documents


class _CountCache:
    """Document counts by (uri, mtime, size): a shard is read once, not on every poll."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self._counts: dict[tuple[str, datetime, int, str], int] = {}
        self._lock = threading.Lock()
        self._max_entries = max_entries

    def get(self, key: tuple[str, datetime, int, str]) -> int | None:
        with self._lock:
            return self._counts.get(key)

    def put(self, key: tuple[str, datetime, int, str], documents: int) -> None:
        with self._lock:
            if len(self._counts) >= self._max_entries:
                self._counts.clear()
            self._counts[key] = documents


_cache = _CountCache()


def list_new_shards(
    corpus_uri: str,
    *,
    newer_than: datetime | None,
    storage: StorageSettings | None = None,
    text_field: str = "text",
) -> list[Shard]:
    """Shards under corpus_uri modified after newer_than (all when None), oldest first, with counts.

    Only new shards are read (to count documents), so a poll costs one listing plus the new data.
    """
    if corpus_uri.startswith("file://"):
        entries = _list_files(corpus_uri)
        reader = _read_file
    elif corpus_uri.startswith("s3://"):
        client = _s3_client(storage or StorageSettings())
        entries = _list_s3(client, corpus_uri)

        def reader(uri: str) -> bytes:
            return _read_s3(client, uri)

    else:
        raise CorpusError(f"{corpus_uri}: the operator can list only file:// and s3:// corpora")

    shards = []
    for uri, modified, size in entries:
        if newer_than is not None and modified <= newer_than:
            continue
        key = (uri, modified, size, text_field)
        documents = _cache.get(key)
        if documents is None:
            documents = count_documents(reader(uri), uri, text_field)
            _cache.put(key, documents)
        shards.append(Shard(uri=uri, last_modified=modified, documents=documents))
    return sorted(shards, key=lambda s: (s.last_modified, s.uri))


# --------------------------------------------------------------------------- file://


def _list_files(corpus_uri: str) -> list[tuple[str, datetime, int]]:
    root = Path(corpus_uri[len("file://") :])
    if not root.is_dir():
        raise CorpusError(f"{corpus_uri}: no such directory ({root})")
    prefix = corpus_uri.rstrip("/")
    entries = []
    try:
        for path in root.rglob("*"):
            if path.is_file() and path.suffix in SHARD_SUFFIXES:
                stat = path.stat()
                modified = datetime.fromtimestamp(stat.st_mtime, tz=UTC)
                entries.append((f"{prefix}/{path.relative_to(root).as_posix()}", modified, stat.st_size))
    except OSError as error:
        raise CorpusError(f"{corpus_uri}: cannot list: {error}") from error
    return entries


def _read_file(uri: str) -> bytes:
    try:
        return Path(uri[len("file://") :]).read_bytes()
    except OSError as error:
        raise CorpusError(f"{uri}: cannot read: {error}") from error


# --------------------------------------------------------------------------- s3://


def _s3_client(storage: StorageSettings) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=storage.endpoint or os.environ.get("AWS_ENDPOINT_URL") or None,
        region_name=storage.region or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
        # Fail a poll fast rather than blocking the reconcile loop on an unreachable endpoint.
        config=Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 2}),
    )


def _split_s3(uri: str) -> tuple[str, str]:
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket:
        raise CorpusError(f"{uri}: no bucket")
    return bucket, key


def _list_s3(client: Any, corpus_uri: str) -> list[tuple[str, datetime, int]]:
    bucket, key = _split_s3(corpus_uri)
    prefix = key.rstrip("/") + "/" if key else ""
    entries = []
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                if obj["Key"].endswith(SHARD_SUFFIXES):
                    modified = obj["LastModified"].astimezone(UTC)
                    entries.append((f"s3://{bucket}/{obj['Key']}", modified, int(obj.get("Size", 0))))
    except Exception as error:  # botocore raises many unrelated types; all mean "cannot list"
        raise CorpusError(f"{corpus_uri}: cannot list: {error}") from error
    return entries


def _read_s3(client: Any, uri: str) -> bytes:
    bucket, key = _split_s3(uri)
    try:
        return bytes(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    except Exception as error:
        raise CorpusError(f"{uri}: cannot read: {error}") from error
