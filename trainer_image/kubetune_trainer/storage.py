"""file://, pvc:// and s3:// locations: list, read, download and upload.

pvc://claim/path maps to <KUBETUNE_PVC_ROOT or /mnt/pvc>/claim/path (the operator mounts each
claim there). s3:// uses boto3 with StorageSettings.endpoint/region; credentials come from the
usual AWS_* environment (a Secret) or the pod identity.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubetune_api.common import StorageSettings

PVC_ROOT_ENV = "KUBETUNE_PVC_ROOT"
DEFAULT_PVC_ROOT = "/mnt/pvc"


class StorageError(OSError):
    """A location that cannot be read or written; the message names the URI."""


@dataclass(frozen=True)
class S3Location:
    bucket: str
    key: str


def local_path(uri: str) -> Path | None:
    """The filesystem path of a file:// or pvc:// URI; None for s3://."""
    if uri.startswith("file://"):
        return Path(uri[len("file://") :])
    if uri.startswith("pvc://"):
        root = Path(os.environ.get(PVC_ROOT_ENV, DEFAULT_PVC_ROOT))
        return root / uri[len("pvc://") :]
    if uri.startswith("s3://"):
        return None
    raise StorageError(f"{uri}: unsupported scheme (use file://, pvc:// or s3://)")


def parse_s3(uri: str) -> S3Location:
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket:
        raise StorageError(f"{uri}: no bucket")
    return S3Location(bucket, key)


def join(uri: str, *parts: str) -> str:
    return "/".join([uri.rstrip("/"), *[p.strip("/") for p in parts]])


class Storage:
    """One place that knows how to reach every URI scheme the trainer accepts."""

    def __init__(self, settings: StorageSettings | None = None) -> None:
        self.settings = settings or StorageSettings()
        self._s3: Any = None

    def s3(self) -> Any:
        if self._s3 is None:
            import boto3

            self._s3 = boto3.client(
                "s3",
                endpoint_url=self.settings.endpoint or os.environ.get("AWS_ENDPOINT_URL") or None,
                region_name=self.settings.region or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
            )
        return self._s3

    # ------------------------------------------------------------------ reading

    def list_files(self, uri: str, suffixes: tuple[str, ...] = (".txt", ".jsonl")) -> list[str]:
        """The URI itself if it is a file, else every file with a matching suffix under it, sorted."""
        path = local_path(uri)
        if path is not None:
            if path.is_file():
                return [uri]
            if not path.is_dir():
                raise StorageError(f"{uri}: no such file or directory ({path})")
            prefix = uri.rstrip("/")
            found = sorted(
                p.relative_to(path).as_posix()
                for p in path.rglob("*")
                if p.is_file() and p.suffix in suffixes
            )
            return [f"{prefix}/{rel}" for rel in found]
        location = parse_s3(uri)
        client = self.s3()
        try:
            if location.key and not location.key.endswith("/"):
                try:
                    client.head_object(Bucket=location.bucket, Key=location.key)
                    return [uri]
                except client.exceptions.ClientError as error:
                    if error.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NotFound"):
                        raise
            prefix = location.key.rstrip("/") + "/" if location.key else ""
            keys: list[str] = []
            for page in client.get_paginator("list_objects_v2").paginate(
                Bucket=location.bucket, Prefix=prefix
            ):
                keys.extend(obj["Key"] for obj in page.get("Contents", []) if obj["Key"].endswith(suffixes))
        except Exception as error:
            if isinstance(error, StorageError):
                raise
            raise StorageError(f"{uri}: cannot list: {error}") from error
        if not keys:
            raise StorageError(f"{uri}: no {'/'.join(suffixes)} files found")
        return [f"s3://{location.bucket}/{key}" for key in sorted(keys)]

    def read_bytes(self, uri: str) -> bytes:
        path = local_path(uri)
        try:
            if path is not None:
                return path.read_bytes()
            location = parse_s3(uri)
            return bytes(self.s3().get_object(Bucket=location.bucket, Key=location.key)["Body"].read())
        except Exception as error:
            raise StorageError(f"{uri}: cannot read: {error}") from error

    def exists(self, uri: str) -> bool:
        path = local_path(uri)
        if path is not None:
            return path.exists()
        location = parse_s3(uri)
        response = self.s3().list_objects_v2(Bucket=location.bucket, Prefix=location.key, MaxKeys=1)
        return bool(response.get("KeyCount", 0))

    def materialize_dir(self, uri: str, cache_root: Path) -> Path:
        """A local directory with the contents of `uri` (downloaded for s3://)."""
        path = local_path(uri)
        if path is not None:
            if not path.is_dir():
                raise StorageError(f"{uri}: not a directory ({path})")
            return path
        location = parse_s3(uri)
        prefix = location.key.rstrip("/") + "/" if location.key else ""
        target = cache_root / location.bucket / prefix
        client = self.s3()
        try:
            for page in client.get_paginator("list_objects_v2").paginate(
                Bucket=location.bucket, Prefix=prefix
            ):
                for obj in page.get("Contents", []):
                    destination = target / obj["Key"][len(prefix) :]
                    destination.parent.mkdir(parents=True, exist_ok=True)
                    client.download_file(location.bucket, obj["Key"], str(destination))
        except Exception as error:
            raise StorageError(f"{uri}: cannot download: {error}") from error
        if not target.is_dir():
            raise StorageError(f"{uri}: nothing found")
        return target

    # ------------------------------------------------------------------ writing

    def publish_dir(self, local_dir: Path, uri: str) -> None:
        """Copy a finished local directory to `uri`, replacing what was there as atomically as the
        backend allows: rename on a filesystem, objects-then-marker on S3."""
        path = local_path(uri)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
            shutil.copytree(local_dir, staging, dirs_exist_ok=True)
            if path.exists():
                retired = path.parent / f".{path.name}.old-{os.getpid()}"
                path.rename(retired)
                staging.rename(path)
                shutil.rmtree(retired, ignore_errors=True)
            else:
                staging.rename(path)
            return
        location = parse_s3(uri)
        prefix = location.key.rstrip("/")
        client = self.s3()
        try:
            for file in sorted(p for p in local_dir.rglob("*") if p.is_file()):
                key = f"{prefix}/{file.relative_to(local_dir).as_posix()}".lstrip("/")
                client.upload_file(str(file), location.bucket, key)
        except Exception as error:
            raise StorageError(f"{uri}: cannot upload: {error}") from error

    def write_bytes(self, uri: str, data: bytes) -> None:
        path = local_path(uri)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.parent / f".{path.name}.tmp-{os.getpid()}"
            temporary.write_bytes(data)
            os.replace(temporary, path)
            return
        location = parse_s3(uri)
        self.s3().put_object(Bucket=location.bucket, Key=location.key, Body=data)

    def delete_prefix(self, uri: str) -> None:
        path = local_path(uri)
        if path is not None:
            shutil.rmtree(path, ignore_errors=True)
            return
        location = parse_s3(uri)
        client = self.s3()
        prefix = location.key.rstrip("/") + "/"
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=location.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                client.delete_object(Bucket=location.bucket, Key=obj["Key"])

    def list_subdirs(self, uri: str) -> list[str]:
        """Names of the immediate children of a prefix (checkpoint directories)."""
        path = local_path(uri)
        if path is not None:
            return sorted(p.name for p in path.iterdir() if p.is_dir()) if path.is_dir() else []
        location = parse_s3(uri)
        prefix = location.key.rstrip("/") + "/" if location.key else ""
        names: set[str] = set()
        for page in (
            self.s3()
            .get_paginator("list_objects_v2")
            .paginate(Bucket=location.bucket, Prefix=prefix, Delimiter="/")
        ):
            for common in page.get("CommonPrefixes", []):
                names.add(common["Prefix"][len(prefix) :].rstrip("/"))
        return sorted(names)
