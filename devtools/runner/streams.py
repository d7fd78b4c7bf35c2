"""Streams: DynamoDB Local streams read shard by shard and delivered over parallel lanes.

Each shard's records are spread over the job's lanes by the hash of their partition key (the
item's hash key), and the lanes run their batches at the same time, one batch in flight per
lane. Records of one item stay in one lane, in order; retries, bisection and parking happen
inside the lane. The shard's checkpoint (``<state_dir>/checkpoints.json``) is the end of the
prefix every lane has finished.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import logging
import threading
import zlib
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from devtools.runner.delivery import Delivery, _Item
from devtools.runner.discovery import Job

logger = logging.getLogger("runner")

MAX_PAGE = 1000  # GetRecords' own limit
MAX_ROUND = 10_000  # stream records read ahead before the lanes start on them
_IMAGE_KEYS = ("Keys", "NewImage", "OldImage")
_RECORD_ORDER = ("eventID", "eventName", "eventVersion", "eventSource", "awsRegion", "dynamodb")


def partition_lane(keys: Mapping[str, Any], hash_key: str | None, lanes: int) -> int:
    """Return the lane (0..lanes-1) of a stream record: a stable hash of its item's hash key.

    Without a known hash key attribute, the whole primary key is the partition key.
    """
    if lanes <= 1:
        return 0
    value = keys.get(hash_key) if hash_key else None
    text = json.dumps(value if value is not None else keys, sort_keys=True, default=str)
    return zlib.crc32(text.encode("utf-8")) % lanes


def _epoch_seconds(value: Any) -> Any:
    """Convert a datetime to epoch seconds (int when whole, as Lambda sends); pass others through."""
    if not isinstance(value, dt.datetime):
        return value
    seconds = value.timestamp()
    return int(seconds) if seconds.is_integer() else seconds


def _encode_value(value: dict[str, Any]) -> dict[str, Any]:
    """Return a DynamoDB JSON attribute value with binaries base64-encoded (wire form)."""
    if "B" in value:
        return {"B": _b64(value["B"])}
    if "BS" in value:
        return {"BS": [_b64(item) for item in value["BS"]]}
    if "M" in value:
        return {"M": {key: _encode_value(item) for key, item in value["M"].items()}}
    if "L" in value:
        return {"L": [_encode_value(item) for item in value["L"]]}
    return value


def _b64(raw: bytes | str) -> str:
    """Base64-encode bytes (strings are assumed to be encoded already)."""
    return raw if isinstance(raw, str) else base64.b64encode(raw).decode("ascii")


def _client_error_code(exc: ClientError) -> str:
    """Return the error code of a botocore ClientError."""
    return str(exc.response.get("Error", {}).get("Code", ""))


class _Progress:
    """The finished prefix of a round of stream records, in shard order, over concurrent lanes.

    Lanes report their finished (processed or parked) records in any order; ``save`` gets
    the sequence number of the last record of the prefix that is finished everywhere.
    """

    def __init__(self, items: list[_Item], save: Callable[[str], None]) -> None:
        self._items = items
        self._save = save
        self._finished: set[int] = set()
        self._next = 0
        self._lock = threading.Lock()

    def commit(self, done: list[_Item]) -> None:
        """Mark ``done`` finished and save the checkpoint if the finished prefix grew."""
        with self._lock:
            self._finished.update(id(item) for item in done)
            start = self._next
            while self._next < len(self._items) and id(self._items[self._next]) in self._finished:
                self._next += 1
            if self._next > start:
                self._save(self._items[self._next - 1].id)


class CheckpointStore:
    """Per-handler, per-shard stream checkpoints persisted as JSON.

    Layout: ``{"streams": {handler: {"streamArn": arn, "shards": {shard: {"sequenceNumber",
    "finished"}}}}}``. A different stream ARN (table recreated) resets the handler's shards.
    """

    def __init__(self, path: Path) -> None:
        """Load checkpoints from ``path`` (missing or unreadable file: start empty)."""
        self.path = path
        self._data: dict[str, Any] = {"streams": {}}
        with contextlib.suppress(OSError, ValueError):
            loaded = json.loads(path.read_text())
            if isinstance(loaded, dict) and isinstance(loaded.get("streams"), dict):
                self._data = loaded

    def shard(self, handler: str, stream_arn: str, shard_id: str) -> dict[str, Any]:
        """Return the mutable state of one shard for one handler."""
        streams = self._data["streams"]
        entry = streams.get(handler)
        if entry is None or entry.get("streamArn") != stream_arn:
            entry = streams[handler] = {"streamArn": stream_arn, "shards": {}}
        state: dict[str, Any] = entry["shards"].setdefault(shard_id, {"sequenceNumber": None, "finished": False})
        return state

    def save(self) -> None:
        """Write checkpoints atomically."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._data, indent=1, sort_keys=True))
        tmp.replace(self.path)


class Streams(Delivery):
    """Polls every shard of a stream job's local table from its checkpoint and delivers the records."""

    table_name_for: Callable[[str], str]
    _ddb: Any
    _streams: Any
    _checkpoints: CheckpointStore
    _warned: set[str]

    def _warn_once(self, key: str, message: str, *args: Any) -> None:
        """Log a warning only the first time ``key`` is seen."""
        if key not in self._warned:
            self._warned.add(key)
            logger.warning(message, *args)

    def _stream_arn(self, job: Job) -> str | None:
        """Return the latest stream ARN of the job's local table, or None (warned once) if absent."""
        table = self.table_name_for(str(job.logical_table))
        try:
            desc = self._ddb.describe_table(TableName=table)["Table"]
        except ClientError as exc:
            if _client_error_code(exc) != "ResourceNotFoundException":
                raise
            self._warn_once(f"missing:{job.name}:{table}", "%s: table %s does not exist (yet)", job.name, table)
            return None
        arn: str | None = desc.get("LatestStreamArn")
        job.hash_key = next((k["AttributeName"] for k in desc.get("KeySchema", []) if k["KeyType"] == "HASH"), None)
        if not arn:
            self._warn_once(f"nostream:{job.name}:{table}", "%s: table %s has no stream", job.name, table)
        return arn

    def _shards(self, stream_arn: str) -> list[dict[str, Any]]:
        """Return all shards of a stream, parents before children."""
        shards: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"StreamArn": stream_arn}
        while True:
            desc = self._streams.describe_stream(**kwargs)["StreamDescription"]
            shards.extend(desc.get("Shards", []))
            last = desc.get("LastEvaluatedShardId")
            if not last:
                break
            kwargs["ExclusiveStartShardId"] = last
        return _parents_first(shards)

    def _poll_stream(self, job: Job) -> int:
        """Deliver the new records of every shard of the job's stream; return how many."""
        stream_arn = self._stream_arn(job)
        if stream_arn is None:
            return 0
        return sum(self._poll_shard(job, stream_arn, shard) for shard in self._shards(stream_arn))

    def _shard_iterator(self, stream_arn: str, shard_id: str, sequence: str | None) -> str | None:
        """Return an iterator after the checkpoint, or from the trim horizon when there is none."""
        kwargs: dict[str, Any] = {"StreamArn": stream_arn, "ShardId": shard_id}
        response: dict[str, Any]
        if sequence:
            try:
                response = self._streams.get_shard_iterator(
                    **kwargs, ShardIteratorType="AFTER_SEQUENCE_NUMBER", SequenceNumber=sequence
                )
                return response.get("ShardIterator")
            except ClientError as exc:
                if _client_error_code(exc) != "TrimmedDataAccessException":
                    raise
                logger.warning("checkpoint %s of %s was trimmed; reading from the horizon", sequence, shard_id)
        response = self._streams.get_shard_iterator(**kwargs, ShardIteratorType="TRIM_HORIZON")
        return response.get("ShardIterator")

    def _poll_shard(self, job: Job, stream_arn: str, shard: dict[str, Any]) -> int:
        """Read one shard from its checkpoint to its current end and deliver it, round by round.

        A round is what is there (up to ``MAX_ROUND`` records), spread over the job's lanes.
        """
        shard_id = shard["ShardId"]
        state = self._checkpoints.shard(job.name, stream_arn, shard_id)
        if state["finished"]:
            return 0
        closed = "EndingSequenceNumber" in shard.get("SequenceNumberRange", {})
        empty_pages_left = 5 if closed else 0
        iterator = self._shard_iterator(stream_arn, shard_id, state["sequenceNumber"])
        page_size = min(MAX_PAGE, job.batch_size * job.parallelization)
        delivered = 0
        while iterator:
            records: list[dict[str, Any]] = []
            while iterator and len(records) < MAX_ROUND:
                page = self._streams.get_records(ShardIterator=iterator, Limit=page_size)
                iterator = page.get("NextShardIterator")
                records.extend(page.get("Records", []))
                if not page.get("Records"):
                    if empty_pages_left <= 0 or records:
                        break
                    empty_pages_left -= 1
            if not records:
                break
            self._deliver_stream_round(job, stream_arn, state, records)
            delivered += len(records)
        if iterator is None:
            state["finished"] = True
            self._checkpoints.save()
        return delivered

    def _deliver_stream_round(
        self, job: Job, stream_arn: str, state: dict[str, Any], records: list[dict[str, Any]]
    ) -> None:
        """Deliver a round of records over the job's lanes, checkpointing the finished prefix."""
        items = [_Item(r["dynamodb"]["SequenceNumber"], self._lambda_record(r, stream_arn)) for r in records]

        def save(sequence: str) -> None:
            state["sequenceNumber"] = sequence
            self._checkpoints.save()

        progress = _Progress(items, save)
        lanes: list[list[_Item]] = [[] for _ in range(job.parallelization)]
        for item in items:
            keys = item.record["dynamodb"].get("Keys") or {}
            lanes[partition_lane(keys, job.hash_key, job.parallelization)].append(item)
        busy = [lane for lane in lanes if lane]

        def run_lane(lane: list[_Item]) -> None:
            for start in range(0, len(lane), job.batch_size):
                self._deliver(job, lane[start : start + job.batch_size], progress.commit)

        if len(busy) == 1:
            run_lane(busy[0])
            return
        with ThreadPoolExecutor(max_workers=len(busy), thread_name_prefix=f"{job.name}-lane") as pool:
            for future in [pool.submit(run_lane, lane) for lane in busy]:
                future.result()

    def _lambda_record(self, raw: dict[str, Any], stream_arn: str) -> dict[str, Any]:
        """Turn a GetRecords record into the record Lambda puts in a DynamoDB stream event."""
        ddb = dict(raw["dynamodb"])
        ddb["ApproximateCreationDateTime"] = _epoch_seconds(ddb.get("ApproximateCreationDateTime"))
        for key in _IMAGE_KEYS:
            if key in ddb:
                ddb[key] = {name: _encode_value(value) for name, value in ddb[key].items()}
        record = {key: raw[key] for key in _RECORD_ORDER if key in raw}
        record.update(awsRegion=self.region, dynamodb=ddb)
        if "userIdentity" in raw:
            record["userIdentity"] = raw["userIdentity"]
        record["eventSourceARN"] = stream_arn
        return record


def _parents_first(shards: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Order shards so that every parent comes before its children."""
    by_id = {shard["ShardId"]: shard for shard in shards}
    ordered: list[dict[str, Any]] = []
    seen: set[str] = set()

    def visit(shard: dict[str, Any]) -> None:
        if shard["ShardId"] in seen:
            return
        seen.add(shard["ShardId"])
        parent = by_id.get(shard.get("ParentShardId", ""))
        if parent is not None:
            visit(parent)
        ordered.append(shard)

    for shard in shards:
        visit(shard)
    return ordered
