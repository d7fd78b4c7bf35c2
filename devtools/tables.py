"""Create every table from the PynamoDB models, idempotently (local stack and tests)."""

from __future__ import annotations

from typing import Any

from chalicelib.settings import Settings, get_settings


def create_all_tables(settings: Settings | None = None) -> list[str]:
    """Create the tables that do not exist yet (streams where the model asks), and the indexes a
    newer model added to a table that exists (`make run` keeps its data); return all names."""
    from chalicelib.store.models import ALL_MODELS, configure

    settings = settings or get_settings()
    configure(settings)
    names = []
    for model in ALL_MODELS:
        if not model.exists():
            model.create_table(wait=True, billing_mode="PAY_PER_REQUEST")
        else:
            add_missing_indexes(model)
        names.append(model.Meta.table_name)
    return names


def add_missing_indexes(model: Any) -> list[str]:
    """Create the model's global secondary indexes the existing table lacks (one at a time, as
    DynamoDB requires); return their names."""
    import boto3

    meta = model.Meta
    client = boto3.client("dynamodb", region_name=meta.region, endpoint_url=meta.host)
    name = meta.table_name
    existing = {
        i["IndexName"] for i in client.describe_table(TableName=name)["Table"].get("GlobalSecondaryIndexes", [])
    }
    added = []
    for index in model._get_schema().get("global_secondary_indexes", []):
        if index["index_name"] in existing:
            continue
        client.update_table(
            TableName=name,
            AttributeDefinitions=index["attribute_definitions"],
            GlobalSecondaryIndexUpdates=[
                {
                    "Create": {
                        "IndexName": index["index_name"],
                        "KeySchema": _hash_first(index["key_schema"]),
                        "Projection": index["projection"],
                    }
                }
            ],
        )
        _wait_active(client, name, index["index_name"])
        added.append(index["index_name"])
    return added


def _hash_first(schema: list[dict[str, str]]) -> list[dict[str, str]]:
    """The key schema with the hash key first: UpdateTable refuses any other order, and PynamoDB
    lists an index's keys in the order the attributes are declared (CreateTable accepts that)."""
    return sorted(schema, key=lambda key: key["KeyType"] != "HASH")


def _wait_active(client: Any, table: str, index: str, timeout: float = 60.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        indexes = client.describe_table(TableName=table)["Table"].get("GlobalSecondaryIndexes", [])
        if any(i["IndexName"] == index and i.get("IndexStatus") == "ACTIVE" for i in indexes):
            return
        time.sleep(0.2)
    raise TimeoutError(f"index {index} of {table} not active after {timeout} s")
