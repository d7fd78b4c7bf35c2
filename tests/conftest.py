"""Shared pytest configuration: markers per directory, DynamoDB Local fixture."""

pytest_plugins = ["tests.ddb_fixture"]
