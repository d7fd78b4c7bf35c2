"""Where export files go: an S3 bucket in the cloud, a directory on the local stack.

Both take a file as numbered parts that can be written again (a retried invocation writes the
same part number over its earlier attempt), then put the parts together in number order:
S3 multipart uploads (`CreateMultipartUpload`, `UploadPart`, `CompleteMultipartUpload`; every part
but the last at least 5 MiB), or part files in `<dir>/.parts/<upload>/` concatenated into
`<dir>/<key>`. Memory holds one part at a time either way.

Download links: S3 pre-signed GET URLs; locally the app's own route
(`/v1/exports/{tenant}/{id}/file`), signed by the service.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

from chalicelib.settings import get_settings

S3_MIN_PART = 5 * 1024 * 1024
READ_CHUNK = 1024 * 1024


class FileStore(Protocol):
    """Numbered parts in, one object out."""

    min_part: int

    def start(self, key: str) -> str: ...

    def put_part(self, key: str, upload_id: str, number: int, data: bytes) -> str: ...

    def complete(self, key: str, upload_id: str, parts: list[tuple[int, str]]) -> None: ...

    def abort(self, key: str, upload_id: str) -> None: ...

    def read_lines(self, key: str) -> Iterator[bytes]: ...

    def delete(self, key: str) -> None: ...


class S3Files:
    """Exports in an S3 bucket (private; read only through pre-signed links)."""

    min_part = S3_MIN_PART

    def __init__(self, bucket: str, client: Any) -> None:
        self.bucket = bucket
        self._s3 = client

    def start(self, key: str) -> str:
        answer = self._s3.create_multipart_upload(Bucket=self.bucket, Key=key)
        return str(answer["UploadId"])

    def put_part(self, key: str, upload_id: str, number: int, data: bytes) -> str:
        answer = self._s3.upload_part(Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data)
        return str(answer["ETag"])

    def complete(self, key: str, upload_id: str, parts: list[tuple[int, str]]) -> None:
        if not parts:  # S3 needs one part at least: an empty file is one empty (last) part
            parts = [(1, self.put_part(key, upload_id, 1, b""))]
        self._s3.complete_multipart_upload(
            Bucket=self.bucket,
            Key=key,
            UploadId=upload_id,
            MultipartUpload={"Parts": [{"PartNumber": n, "ETag": tag} for n, tag in parts]},
        )

    def abort(self, key: str, upload_id: str) -> None:
        self._s3.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)

    def read_lines(self, key: str) -> Iterator[bytes]:
        body = self._s3.get_object(Bucket=self.bucket, Key=key)["Body"]
        yield from body.iter_lines(chunk_size=READ_CHUNK)

    def delete(self, key: str) -> None:
        self._s3.delete_object(Bucket=self.bucket, Key=key)

    def url(self, key: str, filename: str, seconds: int) -> str:
        """A pre-signed GET link to `key`, saved as `filename`, valid for `seconds`."""
        params = {
            "Bucket": self.bucket,
            "Key": key,
            "ResponseContentDisposition": f'attachment; filename="{filename}"',
        }
        return str(self._s3.generate_presigned_url("get_object", Params=params, ExpiresIn=seconds))


class DirectoryFiles:
    """Exports in a local directory (the local stack and the tests)."""

    min_part = 1

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root.resolve() not in path.parents:
            raise ValueError(f"key {key!r} leaves the exports directory")
        return path

    def _parts(self, upload_id: str) -> Path:
        if not upload_id.isalnum():
            raise ValueError("bad upload id")
        return self.root / ".parts" / upload_id

    def start(self, key: str) -> str:
        upload_id = secrets.token_hex(12)
        self._parts(upload_id).mkdir(parents=True, exist_ok=True)
        return upload_id

    def put_part(self, key: str, upload_id: str, number: int, data: bytes) -> str:
        folder = self._parts(upload_id)
        temporary = folder / f".{number:05d}.{secrets.token_hex(4)}.tmp"
        temporary.write_bytes(data)
        os.replace(temporary, folder / f"{number:05d}")
        return f"{number:05d}-{len(data)}"

    def complete(self, key: str, upload_id: str, parts: list[tuple[int, str]]) -> None:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
        folder = self._parts(upload_id)
        with temporary.open("wb") as out:
            for number, _ in sorted(parts):
                with (folder / f"{number:05d}").open("rb") as part:
                    shutil.copyfileobj(part, out, READ_CHUNK)
        os.replace(temporary, target)
        shutil.rmtree(folder, ignore_errors=True)

    def abort(self, key: str, upload_id: str) -> None:
        shutil.rmtree(self._parts(upload_id), ignore_errors=True)

    def read_lines(self, key: str) -> Iterator[bytes]:
        with self.path(key).open("rb") as handle:
            for line in handle:
                yield line.rstrip(b"\n")

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def read(self, key: str) -> bytes:
        return self.path(key).read_bytes()


def get_files() -> S3Files | DirectoryFiles:
    """The deployment's export files: EXPORTS_BUCKET (cloud) or LOCAL_EXPORTS_DIR (local stack)."""
    settings = get_settings()
    return _files(settings.exports_bucket, settings.local_exports_dir, settings.aws_region)


@lru_cache(maxsize=4)
def _files(bucket: str | None, directory: str | None, region: str) -> S3Files | DirectoryFiles:
    """One client per configuration (a changed setting gets its own, no cache to reset)."""
    if bucket:
        # function-local: cold start (boto3 loads only where exports go to S3)
        import boto3  # type: ignore[import-untyped]
        from botocore.config import Config  # type: ignore[import-untyped]

        config = Config(signature_version="s3v4", s3={"addressing_style": "virtual"})
        return S3Files(bucket, boto3.client("s3", region_name=region, config=config))
    if directory:
        return DirectoryFiles(directory)
    raise RuntimeError("no place for exports: set EXPORTS_BUCKET (AWS) or LOCAL_EXPORTS_DIR (local stack)")
