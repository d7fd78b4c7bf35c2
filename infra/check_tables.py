"""Compare the DynamoDB tables of a merge template with the PynamoDB models; exit 1 on drift.

The models in ``chalicelib/store/models.py`` are the source of truth (DynamoDB Local and the
tests create tables from them); the merge template must declare the same tables for a stage:
names ``<TABLE_PREFIX>-<logical>`` (the prefix read from ``.chalice/config.json``), key
schema, attribute definitions, GSIs (name, keys, projection), stream view type, billing
mode, time to live (on the model's ``TTLAttribute``). It also checks what every production
table must have: point-in-time recovery, server-side encryption and ``Retain``
deletion/replacement policies.

    python infra/check_tables.py                       # infra/merge-prod.json, stage prod
    python infra/check_tables.py path/to/merge.json --stage prod

Reads files only; imports the models but touches no AWS.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TEMPLATE = ROOT / "infra" / "merge-prod.json"
CHALICE_CONFIG = ROOT / ".chalice" / "config.json"

TableSpec = dict[str, Any]


def load_json(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as handle:
        data = json.load(handle)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def stage_table_prefix(stage: str, config_path: Path = CHALICE_CONFIG) -> str:
    """TABLE_PREFIX of a Chalice stage (stage variables override top-level ones)."""
    config = load_json(config_path)
    stage_config = config.get("stages", {}).get(stage)
    if stage_config is None:
        raise ValueError(f"{config_path}: no stage {stage!r}")
    env = {**config.get("environment_variables", {}), **stage_config.get("environment_variables", {})}
    prefix = env.get("TABLE_PREFIX")
    if not isinstance(prefix, str) or not prefix:
        raise ValueError(f"{config_path}: stage {stage!r} sets no TABLE_PREFIX")
    return prefix


def _keys(key_schema: Sequence[Mapping[str, Any]]) -> tuple[tuple[str, str], ...]:
    """Key schema as ((name, HASH), (name, RANGE)): hash first, whatever the input order."""
    pairs = [(k["AttributeName"], k["KeyType"]) for k in key_schema]
    return tuple(sorted(pairs, key=lambda pair: pair[1] != "HASH"))


def _projection(projection: dict[str, Any]) -> tuple[str, tuple[str, ...]]:
    return projection.get("ProjectionType", "ALL"), tuple(sorted(projection.get("NonKeyAttributes") or ()))


def _indexes(indexes: Sequence[Mapping[str, Any]], name_key: str) -> dict[str, TableSpec]:
    return {
        index[name_key]: {
            "keys": _keys(index.get("KeySchema") or index.get("key_schema") or []),
            "projection": _projection(index.get("Projection") or index.get("projection") or {}),
        }
        for index in indexes
    }


def expected_tables(prefix: str) -> dict[str, TableSpec]:
    """Physical table name -> normalized spec, from the PynamoDB models."""
    from chalicelib.settings import Settings
    from chalicelib.store.models import ALL_MODELS, LOGICAL_NAMES, table_name

    # only the prefix is read; model_construct skips validation, so the required settings may stay unset
    settings = Settings.model_construct(table_prefix=prefix)  # type: ignore[call-arg]
    tables: dict[str, TableSpec] = {}
    for model in ALL_MODELS:
        logical = LOGICAL_NAMES.get(model)
        if logical is None:
            raise ValueError(f"{model.__name__} is in ALL_MODELS but has no LOGICAL_NAMES entry")
        schema = model._get_schema()
        attributes = {a["AttributeName"]: a["AttributeType"] for a in schema["attribute_definitions"]}
        for index in [*schema["global_secondary_indexes"], *schema["local_secondary_indexes"]]:
            attributes.update({a["AttributeName"]: a["AttributeType"] for a in index["attribute_definitions"]})
        tables[table_name(settings, logical)] = {
            "model": model.__name__,
            "keys": _keys(schema["key_schema"]),
            "attributes": attributes,
            "gsis": _indexes(schema["global_secondary_indexes"], "index_name"),
            "lsis": _indexes(schema["local_secondary_indexes"], "index_name"),
            "stream": getattr(model.Meta, "stream_view_type", None),
            "billing": getattr(model.Meta, "billing_mode", None) or "PROVISIONED",
            "ttl": _model_ttl(model),
        }
    return tables


def _model_ttl(model: Any) -> str | None:
    """The attribute a model's TTLAttribute is stored as (PynamoDB enables TTL on it), or None."""
    from pynamodb.attributes import TTLAttribute

    names = [attr.attr_name for attr in model.get_attributes().values() if isinstance(attr, TTLAttribute)]
    return names[0] if names else None


def _template_ttl(props: dict[str, Any]) -> str | None:
    spec = props.get("TimeToLiveSpecification") or {}
    return spec.get("AttributeName") if spec.get("Enabled") is True else None


def template_tables(template: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any], TableSpec]]:
    """Physical table name -> (logical id, resource, normalized spec) from a template."""
    found: dict[str, tuple[str, dict[str, Any], TableSpec]] = {}
    for logical_id, resource in template.get("Resources", {}).items():
        if resource.get("Type") != "AWS::DynamoDB::Table":
            continue
        props = resource.get("Properties", {})
        name = props.get("TableName")
        if not isinstance(name, str):
            raise ValueError(f"{logical_id}: TableName must be a literal string, got {name!r}")
        found[name] = (
            logical_id,
            resource,
            {
                "keys": _keys(props.get("KeySchema", [])),
                "attributes": {a["AttributeName"]: a["AttributeType"] for a in props.get("AttributeDefinitions", [])},
                "gsis": _indexes(props.get("GlobalSecondaryIndexes", []), "IndexName"),
                "lsis": _indexes(props.get("LocalSecondaryIndexes", []), "IndexName"),
                "stream": (props.get("StreamSpecification") or {}).get("StreamViewType"),
                "billing": props.get("BillingMode", "PROVISIONED"),
                "ttl": _template_ttl(props),
            },
        )
    return found


def _hygiene(logical_id: str, resource: dict[str, Any]) -> list[str]:
    props = resource.get("Properties", {})
    problems = []
    if (props.get("PointInTimeRecoverySpecification") or {}).get("PointInTimeRecoveryEnabled") is not True:
        problems.append(f"{logical_id}: point-in-time recovery is not enabled")
    if (props.get("SSESpecification") or {}).get("SSEEnabled") is not True:
        problems.append(f"{logical_id}: SSESpecification.SSEEnabled is not true")
    for policy in ("DeletionPolicy", "UpdateReplacePolicy"):
        if resource.get(policy) != "Retain":
            problems.append(f"{logical_id}: {policy} is {resource.get(policy)!r}, want 'Retain'")
    return problems


def drift(template: dict[str, Any], prefix: str) -> list[str]:
    """Every difference between the template's tables and the models; empty when in sync."""
    expected = expected_tables(prefix)
    actual = template_tables(template)
    problems = [
        f"table {name} ({spec['model']}) is missing from the template"
        for name, spec in expected.items()
        if name not in actual
    ]
    problems += [
        f"{logical_id}: table {name} has no PynamoDB model"
        for name, (logical_id, _, _) in actual.items()
        if name not in expected
    ]
    for name, want in expected.items():
        if name in actual:
            logical_id, resource, got = actual[name]
            problems += _compare(logical_id, want, got) + _hygiene(logical_id, resource)
    return problems


def _compare(logical_id: str, want: TableSpec, got: TableSpec) -> list[str]:
    model = want["model"]
    problems = [
        f"{logical_id}: {field} is {got[field]!r}, model {model} has {want[field]!r}"
        for field in ("keys", "attributes", "stream", "billing", "ttl")
        if got[field] != want[field]
    ]
    for kind in ("gsis", "lsis"):
        for index in sorted(set(want[kind]) | set(got[kind])):
            if index not in got[kind]:
                problems.append(f"{logical_id}: index {index} of model {model} is missing ({kind})")
            elif index not in want[kind]:
                problems.append(f"{logical_id}: index {index} is not in model {model}")
            elif got[kind][index] != want[kind][index]:
                problems.append(f"{logical_id}: index {index} is {got[kind][index]!r}, model has {want[kind][index]!r}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("template", nargs="?", type=Path, default=DEFAULT_TEMPLATE)
    parser.add_argument("--stage", default="prod", help="Chalice stage whose TABLE_PREFIX names the tables")
    args = parser.parse_args(argv)
    problems = drift(load_json(args.template), stage_table_prefix(args.stage))
    for problem in problems:
        print(f"drift: {problem}", file=sys.stderr)
    if problems:
        print(f"{args.template}: {len(problems)} difference(s) from chalicelib/store/models.py", file=sys.stderr)
        return 1
    print(f"{args.template}: tables match the models")
    return 0


if __name__ == "__main__":
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    sys.exit(main())
