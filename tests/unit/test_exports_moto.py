"""Export files on moto's S3, as they run in AWS: multipart parts (S3 refuses a part under 5 MiB
unless it is the last), the staging file read back line by line, aborted and deleted uploads,
and the pre-signed download link the status route hands out."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from chalicelib.services import exports
from chalicelib.settings import get_settings
from chalicelib.store.export_files import S3_MIN_PART, S3Files, get_files
from tests.envutil import environ

pytestmark = pytest.mark.unit

REGION = "ap-east-1"
BUCKET = "fenxiao-test-exports"
SHANGHAI = ZoneInfo("Asia/Shanghai")


@pytest.fixture
def s3() -> Iterator[Any]:
    import boto3
    from moto import mock_aws

    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "TABLE_PREFIX": "unit",
        "JWT_SECRET": "unit-secret-0123456789-abcdef",
        "WECHAT_MODE": "sandbox",
        "EXPORTS_BUCKET": BUCKET,
    }
    with environ(env), mock_aws():
        get_settings.cache_clear()
        client = boto3.client("s3", region_name=REGION)
        client.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
        yield client
    get_settings.cache_clear()


@dataclass(frozen=True)
class Finished:
    tenant: str = "wxunit"
    id: str = "exp-1"
    kind: str = "promoters"
    format: str = "csv"
    first_day: str = "2026-11-01"
    last_day: str = "2026-11-30"
    file_key: str = "exports/wxunit/exp-1.csv"


def s3_files() -> S3Files:
    """The deployment's export files, which with EXPORTS_BUCKET set are S3's."""
    files = get_files()
    assert isinstance(files, S3Files), files
    return files


def write_csv(files: S3Files, key: str, rows: int) -> int:
    """Rows through the service's CSV encoder, sent as parts the way a run sends them."""
    encoder = exports.CsvRows()
    upload = files.start(key)
    buffer = bytearray(encoder.start("promoters"))
    parts: list[tuple[int, str]] = []
    for n in range(rows):
        row = {"uid": f"u{n}", "name": f"推广员{n}", "available_fen": n, "created_at": "2026-11-24T23:05:41.123456Z"}
        buffer += encoder.encode(exports.values("promoters", row, SHANGHAI))
        if len(buffer) >= files.min_part:
            parts.append((len(parts) + 1, files.put_part(key, upload, len(parts) + 1, bytes(buffer))))
            buffer.clear()
    parts.append((len(parts) + 1, files.put_part(key, upload, len(parts) + 1, bytes(buffer))))
    files.complete(key, upload, parts)
    return len(parts)


def test_a_multipart_csv_on_s3_has_every_row_and_its_bom(s3: Any) -> None:
    files = s3_files()
    assert isinstance(files, S3Files) and files.min_part == S3_MIN_PART
    parts = write_csv(files, "exports/wxunit/exp-1.csv", 120_000)  # ~7 MiB: two parts
    assert parts == 2
    body = s3.get_object(Bucket=BUCKET, Key="exports/wxunit/exp-1.csv")["Body"].read()
    assert body.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(body.decode("utf-8-sig"))))
    assert len(rows) == 120_001
    assert rows[1][2] == "推广员0" and rows[-1][2] == "推广员119999"
    assert rows[-1][11] == "1199.99"  # available_yuan from 119999 fen


def test_s3_refuses_a_small_part_that_is_not_the_last(s3: Any) -> None:
    """Why a run stops only right after a full part: a short part in the middle fails the upload."""
    from botocore.exceptions import ClientError

    files = s3_files()
    upload = files.start("exports/wxunit/small.csv")
    parts = [(1, files.put_part("exports/wxunit/small.csv", upload, 1, b"a" * 10))]
    parts.append((2, files.put_part("exports/wxunit/small.csv", upload, 2, b"b" * 10)))
    with pytest.raises(ClientError, match="EntityTooSmall"):
        files.complete("exports/wxunit/small.csv", upload, parts)
    files.abort("exports/wxunit/small.csv", upload)
    assert not s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads")


def test_the_staging_file_is_read_back_line_by_line_and_deleted(s3: Any) -> None:
    files = s3_files()
    key = "staging/wxunit/exp-2.jsonl"
    lines = [json.dumps([n, f"名字{n}"], ensure_ascii=False).encode() for n in range(1000)]
    upload = files.start(key)
    files.complete(key, upload, [(1, files.put_part(key, upload, 1, b"\n".join(lines) + b"\n"))])
    assert list(files.read_lines(key)) == lines
    files.delete(key)
    assert s3.list_objects_v2(Bucket=BUCKET).get("KeyCount") == 0


def test_an_empty_export_is_still_a_file(s3: Any) -> None:
    files = s3_files()
    upload = files.start("exports/wxunit/empty.csv")
    files.complete("exports/wxunit/empty.csv", upload, [])
    assert s3.get_object(Bucket=BUCKET, Key="exports/wxunit/empty.csv")["Body"].read() == b""


def test_the_status_link_is_a_presigned_get_that_downloads_the_file(s3: Any) -> None:
    import requests

    files = s3_files()
    write_csv(files, Finished.file_key, 3)
    url = exports.link(Finished())
    assert url.startswith(f"https://{BUCKET}.s3.")
    assert "X-Amz-Signature=" in url and f"X-Amz-Expires={exports.LINK_SECONDS}" in url
    assert "response-content-disposition=attachment" in url
    response = requests.get(url, timeout=5)
    assert response.status_code == 200
    assert response.content.startswith(b"\xef\xbb\xbf") and "推广员2" in response.content.decode("utf-8-sig")
    tampered = url.replace("exp-1.csv", "exp-2.csv")
    assert requests.get(tampered, timeout=5).status_code in (403, 404)


def test_the_local_download_route_is_not_served_when_files_are_on_s3(s3: Any) -> None:
    from chalicelib.errors import Missing

    expires = "9999999999"
    signature = exports.signature("wxunit", "exp-1", int(expires))
    with pytest.raises(Missing):
        exports.download("wxunit", "exp-1", expires, signature)
