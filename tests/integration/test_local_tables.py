"""`make run` keeps its data: a table made by an older model gets the indexes a newer one adds."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
import pytest

from chalicelib.settings import get_settings
from chalicelib.store.models import AdminModel, OrderModel
from devtools.tables import add_missing_indexes
from tests.stack import Stack, unique


@contextmanager
def _table_without_indexes(stack: Stack, model: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The model's table as it was before any index (its key only), the model pointed at it; the
    DynamoDB client to inspect it."""
    name = f"{stack.prefix}-{unique('old')}"
    client = boto3.client("dynamodb", region_name=get_settings().aws_region, endpoint_url=stack.endpoint)
    client.create_table(
        TableName=name,
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    monkeypatch.setattr(model.Meta, "table_name", name)
    monkeypatch.setattr(model, "_connection", None)
    try:
        yield client
    finally:
        client.delete_table(TableName=name)
        monkeypatch.undo()
        model._connection = None


def test_an_index_the_model_added_is_created_on_the_existing_table(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _table_without_indexes(stack, AdminModel, monkeypatch) as client:
        assert add_missing_indexes(AdminModel) == ["by_tenant"]
        assert add_missing_indexes(AdminModel) == []  # twice: nothing to do
        indexes = client.describe_table(TableName=AdminModel.Meta.table_name)["Table"]["GlobalSecondaryIndexes"]
        assert [i["IndexName"] for i in indexes] == ["by_tenant"]


def test_an_index_whose_model_declares_its_range_key_first_is_created(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The orders model declares `paid_at` (the `sold` index's range key) before `sold_key` (its hash
    # key), so PynamoDB lists the range key first; UpdateTable wants the hash key first.
    schema = {i["index_name"]: i["key_schema"] for i in OrderModel._get_schema()["global_secondary_indexes"]}
    assert schema["sold"][0]["KeyType"] == "RANGE"
    with _table_without_indexes(stack, OrderModel, monkeypatch) as client:
        added = add_missing_indexes(OrderModel)
        assert set(added) == set(schema)
        indexes = client.describe_table(TableName=OrderModel.Meta.table_name)["Table"]["GlobalSecondaryIndexes"]
        sold = next(i for i in indexes if i["IndexName"] == "sold")
        assert sold["KeySchema"] == [
            {"AttributeName": "sold_key", "KeyType": "HASH"},
            {"AttributeName": "paid_at", "KeyType": "RANGE"},
        ]
