"""Create every table from the PynamoDB models, idempotently (local stack and tests)."""

from __future__ import annotations

from chalicelib.settings import Settings, get_settings


def create_all_tables(settings: Settings | None = None) -> list[str]:
    """Create the tables that do not exist yet (streams where the model asks); return all names."""
    from chalicelib.store.models import ALL_MODELS, configure

    settings = settings or get_settings()
    configure(settings)
    names = []
    for model in ALL_MODELS:
        if not model.exists():
            model.create_table(wait=True, billing_mode="PAY_PER_REQUEST")
        names.append(model.Meta.table_name)
    return names


def delete_all_tables(settings: Settings | None = None) -> None:
    from chalicelib.store.models import ALL_MODELS, configure

    settings = settings or get_settings()
    configure(settings)
    for model in ALL_MODELS:
        if model.exists():
            model.delete_table()


if __name__ == "__main__":
    print("\n".join(create_all_tables()))
