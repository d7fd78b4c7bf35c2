"""Withdrawals, their account reservations and payout runs.

Every change of a withdrawal is one transaction: the withdrawal (conditional on the version
and state it was read in), the account buckets it moves, and its next audit record, hashed
onto the previous one (the chain's head is kept on the withdrawal), so nothing is half-written.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pynamodb.transactions import TransactWrite

from chalicelib import counters
from chalicelib.clock import iso, parse_iso
from chalicelib.entities import AuditEvent, Page
from chalicelib.retry import Retry
from chalicelib.store import audit, shards, stats
from chalicelib.store.base import Transactions, decode_cursor, encode_cursor
from chalicelib.store.models import AccountModel, AuditModel, PayoutRunModel, TenantModel, WithdrawalModel
from chalicelib.withdrawal import Withdrawal, WithdrawalState

ACCOUNT_CONFLICTS = Retry(tries=12, first_s=0.01, cap_s=0.5)  # transactions racing on one account


@dataclass(frozen=True, slots=True)
class Reservation:
    """What a request reserves: the amount (its account deltas, `withdrawal.reserve_moves`, applied
    only if available covers it), within the day's limits (tenant's calendar day)."""

    amount_fen: int
    moves: Mapping[str, int]
    day: str
    count_per_day: int
    max_per_day_fen: int


@dataclass(frozen=True, slots=True)
class CreateOutcome:
    created: bool
    exists: bool = False  # a withdrawal with this id exists already (a retried request)
    refused: bool = False  # the balance or the day's limits did not allow it


def _to_withdrawal(item: WithdrawalModel) -> Withdrawal:
    return Withdrawal(
        tenant=item.tenant,
        id=item.withdrawal_id,
        promoter=item.promoter,
        openid=item.openid,
        amount_fen=int(item.amount_fen),
        fee_fen=int(item.fee_fen),
        state=WithdrawalState(item.state),
        created_at=parse_iso(item.created_at),
        updated_at=parse_iso(item.updated_at),
        version=int(item.version or 0),
        audit_hash=item.audit_hash,
        real_name=item.real_name,
        reason=item.reason,
        run_id=item.run_id,
        attempts=int(item.attempts or 0),
        sent_at=parse_iso(item.sent_at) if item.sent_at else None,
        bill_no=item.bill_no,
        provider_state=item.provider_state,
        package_info=item.package_info,
        fail_reason=item.fail_reason,
        create_at=parse_iso(item.create_at) if item.create_at else None,
        not_found=int(item.not_found or 0),
        refusal=item.refusal,
    )


def _summary(item: Any, tenant: str) -> dict[str, Any]:
    """A list row from an index projection."""
    data = {
        "id": item.withdrawal_id,
        "amount_fen": int(item.amount_fen),
        "fee_fen": int(item.fee_fen),
        "net_fen": int(item.amount_fen) - int(item.fee_fen),
        "created_at": item.created_at,
    }
    if getattr(item, "state", None):
        data["state"] = item.state
    if getattr(item, "promoter", None):
        data["promoter"] = item.promoter
    return data


class WithdrawalStore:
    def __init__(self, tx: Transactions) -> None:
        self._tx = tx

    # --- reads --------------------------------------------------------------------------------

    def get(self, tenant: str, withdrawal_id: str) -> Withdrawal | None:
        try:
            return _to_withdrawal(WithdrawalModel.get(f"{tenant}#{withdrawal_id}", consistent_read=True))
        except WithdrawalModel.DoesNotExist:
            return None

    def get_many(self, tenant: str, withdrawal_ids: list[str]) -> list[Withdrawal]:
        """Whole withdrawals for a list page, in the order of `withdrawal_ids` (one batch get)."""
        keys = [f"{tenant}#{wid}" for wid in dict.fromkeys(withdrawal_ids)]
        found = {item.pk: _to_withdrawal(item) for item in WithdrawalModel.batch_get(keys, consistent_read=True)}
        return [found[f"{tenant}#{wid}"] for wid in withdrawal_ids if f"{tenant}#{wid}" in found]

    def account_day(self, tenant: str, promoter: str) -> tuple[int, str | None, int, int]:
        """(available, limits day, count that day, fen that day) of a promoter's account."""
        try:
            item = AccountModel.get(f"{tenant}#{promoter}", consistent_read=True)
        except AccountModel.DoesNotExist:
            return 0, None, 0, 0
        return (
            int(item.available_fen or 0),
            item.wd_day,
            int(item.wd_day_count or 0),
            int(item.wd_day_fen or 0),
        )

    def by_promoter(self, tenant: str, promoter: str, cursor: str | None, limit: int) -> Page[dict[str, Any]]:
        key = f"{tenant}#{promoter}"
        start = decode_cursor(cursor, hash_attr="promoter_key", hash_value=key)
        result = WithdrawalModel.by_promoter.query(key, scan_index_forward=False, limit=limit, last_evaluated_key=start)
        return Page([_summary(i, tenant) for i in result], encode_cursor(result.last_evaluated_key))

    def by_state(
        self, tenant: str, state: WithdrawalState, cursor: str | None, limit: int, *, newest_first: bool = False
    ) -> Page[dict[str, Any]]:
        """One page of the withdrawals in `state`, oldest (or newest) first, over every shard."""

        def read(partition: str, start: dict[str, Any] | None, room: int) -> tuple[list[Any], shards.Stop | None]:
            result = WithdrawalModel.by_state.query(
                partition, scan_index_forward=not newest_first, limit=room, last_evaluated_key=start
            )
            rows = []
            for item in result:
                row = _summary(item, tenant)
                row["state"] = state.value
                row["updated_at"] = item.updated_at
                position = {"pk": {"S": item.pk}, "state_key": {"S": partition}, "created_at": {"S": item.created_at}}
                rows.append((item.created_at, position, row))  # the range key alone: ties keep index order
            stop = result.last_evaluated_key
            return rows, (stop, stop["created_at"]["S"]) if stop else None

        rows, next_cursor = shards.page(_state_prefix(tenant, state), read, cursor, limit, reverse=newest_first)
        return Page(rows, next_cursor)

    def ids_in_state(self, tenant: str, state: WithdrawalState, page_size: int) -> Iterator[list[dict[str, Any]]]:
        """Every withdrawal in `state`, oldest first over every shard, one page at a time (flat memory).

        Reads the index through PynamoDB's connection and takes the few attributes it needs from
        the raw items: building a model object per item would cost more than the read.
        """
        rows = shards.merged(
            _state_prefix(tenant, state), lambda partition: self._raw_rows(partition, page_size), _by_created
        )
        while page := list(itertools.islice(rows, page_size)):
            yield page

    @staticmethod
    def _raw_rows(partition: str, page_size: int) -> Iterator[dict[str, Any]]:
        connection = WithdrawalModel._get_connection()
        start: dict[str, Any] | None = None
        while True:
            data = connection.query(
                partition,
                index_name="by_state",
                limit=page_size,
                exclusive_start_key=start,
                attributes_to_get=["pk", "withdrawal_id", "amount_fen", "fee_fen", "created_at", "updated_at"],
            )
            for item in data.get("Items", []):
                yield {
                    "id": item["withdrawal_id"]["S"],
                    "amount_fen": int(item["amount_fen"]["N"]),
                    "fee_fen": int(item["fee_fen"]["N"]),
                    "created_at": item["created_at"]["S"],
                    "updated_at": item["updated_at"]["S"],
                }
            start = data.get("LastEvaluatedKey")
            if not start:
                return

    def of_run(self, tenant: str, run_id: str) -> Iterator[dict[str, Any]]:
        """Every withdrawal a payout run sent (its report)."""
        for item in WithdrawalModel.by_run.query(f"{tenant}#{run_id}"):
            yield {
                "id": item.withdrawal_id,
                "state": item.state,
                "amount_fen": int(item.amount_fen),
                "fee_fen": int(item.fee_fen),
                "fail_reason": item.fail_reason,
            }

    # --- writes -------------------------------------------------------------------------------

    def create(self, withdrawal: Withdrawal, reservation: Reservation, event: AuditEvent) -> CreateOutcome:
        """Reserve `available ≥ amount` within the day's limits, and create the withdrawal with its
        first audit record, all in one transaction."""
        record = audit.build(withdrawal.tenant, event, withdrawal.created_at, None, record_id=f"v{1:010d}")
        item = _item(withdrawal, version=1, audit_hash=record.hash)
        account = AccountModel(f"{withdrawal.tenant}#{withdrawal.promoter}")
        amount, day = reservation.amount_fen, reservation.day
        money = [getattr(AccountModel, bucket).add(delta) for bucket, delta in sorted(reservation.moves.items())]
        same_day = (
            (AccountModel.available_fen >= amount)
            & (AccountModel.wd_day == day)
            & (AccountModel.wd_day_count < reservation.count_per_day)
            & (AccountModel.wd_day_fen <= reservation.max_per_day_fen - amount)
        )
        new_day = (AccountModel.available_fen >= amount) & (
            AccountModel.wd_day.does_not_exist() | (AccountModel.wd_day != day)
        )
        same_actions: list[Any] = [*money, AccountModel.wd_day_count.add(1), AccountModel.wd_day_fen.add(amount)]
        new_actions: list[Any] = [
            *money,
            AccountModel.wd_day.set(day),
            AccountModel.wd_day_count.set(1),
            AccountModel.wd_day_fen.set(amount),
        ]

        counted = counters.withdrawal(
            "withdrawals_fen", withdrawal.amount_fen, withdrawal.created_at, stats.timezone(withdrawal.tenant)
        )

        def attempt_with(condition: Any, actions: list[Any]) -> Any:
            def body(tx: TransactWrite) -> None:
                tx.save(item, condition=WithdrawalModel.pk.does_not_exist())
                tx.save(record, condition=AuditModel.pk.does_not_exist())
                tx.update(account, actions=actions, condition=condition)
                stats.add(tx, withdrawal.tenant, counted)  # unconditional: after the indexed items

            return self._tx.run(body)

        for attempt in ACCOUNT_CONFLICTS:
            _, current_day, _, _ = self.account_day(withdrawal.tenant, withdrawal.promoter)
            outcome = attempt_with(*((same_day, same_actions) if current_day == day else (new_day, new_actions)))
            if outcome.committed:
                return CreateOutcome(created=True)
            if 0 in outcome.failed_items:  # puts come first: the withdrawal exists
                return CreateOutcome(created=False, exists=True)
            if 2 in outcome.failed_items:
                _, now_day, _, _ = self.account_day(withdrawal.tenant, withdrawal.promoter)
                if (now_day == day) == (current_day == day):  # not a day switch by a racing request
                    return CreateOutcome(created=False, refused=True)
                continue
            ACCOUNT_CONFLICTS.pause(attempt)  # a conflicting transaction on the account: try again
        raise RuntimeError("the account stayed busy; nothing was written")

    def move(
        self,
        withdrawal: Withdrawal,
        target: WithdrawalState,
        event: AuditEvent,
        when: datetime,
        *,
        account: Mapping[str, int] | None = None,
        extra: Mapping[str, Any] | None = None,
        release_day: str | None = None,
    ) -> bool:
        """Move a withdrawal read at `withdrawal.version` to `target`, with its account deltas and
        its next audit record; False (nothing written) when it changed meanwhile.

        With `release_day` (the tenant's day the withdrawal was requested on) the withdrawal stops
        counting towards that day's limits, if the account still counts that day; once a later
        request started another day there is nothing to give back and the move goes without it."""
        version = withdrawal.version + 1
        record = audit.build(withdrawal.tenant, event, when, withdrawal.audit_hash, record_id=f"v{version:010d}")
        key = f"{withdrawal.tenant}#{withdrawal.id}"
        actions: list[Any] = [
            WithdrawalModel.state.set(target.value),
            WithdrawalModel.state_key.set(shards.key(_state_prefix(withdrawal.tenant, target), withdrawal.id)),
            WithdrawalModel.updated_at.set(iso(when)),
            WithdrawalModel.version.set(version),
            WithdrawalModel.audit_hash.set(record.hash),
        ]
        for name, value in (extra or {}).items():
            attribute = getattr(WithdrawalModel, name)
            actions.append(attribute.remove() if value is None else attribute.set(value))
        condition = (WithdrawalModel.version == withdrawal.version) & (WithdrawalModel.state == withdrawal.state.value)
        deltas = {b: d for b, d in (account or {}).items() if d}
        money = [getattr(AccountModel, b).add(d) for b, d in sorted(deltas.items())]
        day_back = [AccountModel.wd_day_count.add(-1), AccountModel.wd_day_fen.add(-withdrawal.amount_fen)]
        paid_out = target is WithdrawalState.PAID and withdrawal.state is not WithdrawalState.PAID
        counted = (
            counters.withdrawal("payouts_fen", withdrawal.amount_fen, when, stats.timezone(withdrawal.tenant))
            if paid_out
            else {}
        )

        for attempt in ACCOUNT_CONFLICTS:

            def body(tx: TransactWrite, release: str | None = release_day) -> None:
                tx.save(record, condition=AuditModel.pk.does_not_exist())
                tx.update(WithdrawalModel(key), actions=actions, condition=condition)
                account_item = AccountModel(f"{withdrawal.tenant}#{withdrawal.promoter}")
                if release:
                    tx.update(account_item, actions=money + day_back, condition=AccountModel.wd_day == release)
                elif money:
                    tx.update(account_item, actions=money)
                stats.add(tx, withdrawal.tenant, counted)  # unconditional: after the indexed items

            outcome = self._tx.run(body)
            if outcome.committed:
                return True
            if 2 in outcome.failed_items and not ({0, 1} & set(outcome.failed_items)):
                release_day = None  # another day is counted now: nothing to give back
                continue
            if outcome.failed_items:
                return False
            ACCOUNT_CONFLICTS.pause(attempt)
        raise RuntimeError("the withdrawal stayed busy; nothing was written")

    # --- payout runs --------------------------------------------------------------------------

    def start_run(self, tenant: str, run_id: str, when: datetime, actor: str) -> None:
        PayoutRunModel(tenant, run_id, started_at=iso(when), status="running", actor=actor).save(
            condition=PayoutRunModel.run_id.does_not_exist()
        )

    def run_progress(self, tenant: str, run_id: str, enqueued: int, enqueued_fen: int) -> None:
        PayoutRunModel(tenant, run_id).update(
            actions=[PayoutRunModel.enqueued.add(enqueued), PayoutRunModel.enqueued_fen.add(enqueued_fen)]
        )

    def finish_run(self, tenant: str, run_id: str, when: datetime) -> None:
        PayoutRunModel(tenant, run_id).update(
            actions=[PayoutRunModel.status.set("done"), PayoutRunModel.finished_at.set(iso(when))]
        )

    def run(self, tenant: str, run_id: str) -> dict[str, Any] | None:
        try:
            return _run_view(PayoutRunModel.get(tenant, run_id, consistent_read=True))
        except PayoutRunModel.DoesNotExist:
            return None

    def runs(self, tenant: str, cursor: str | None, limit: int) -> Page[dict[str, Any]]:
        start = decode_cursor(cursor, hash_attr="pk", hash_value=tenant)
        result = PayoutRunModel.query(tenant, scan_index_forward=False, limit=limit, last_evaluated_key=start)
        return Page([_run_view(i) for i in result], encode_cursor(result.last_evaluated_key))

    # --- tenant rules -------------------------------------------------------------------------

    def rules(self, tenant: str) -> str | None:
        try:
            return TenantModel.get(tenant, consistent_read=True).withdrawal_rules
        except TenantModel.DoesNotExist:
            return None

    def set_rules(self, tenant: str, rules_json: str, event: AuditEvent, when: datetime) -> None:
        """Replace the tenant's rules and audit the change (the tenant entity's chain)."""
        record = audit.action_record(tenant, event, when)

        def body(tx: TransactWrite) -> None:
            tx.save(record, condition=AuditModel.pk.does_not_exist())
            tx.update(
                TenantModel(tenant),
                actions=[TenantModel.withdrawal_rules.set(rules_json)],
                condition=TenantModel.tenant.exists(),
            )

        if not self._tx.run(body).committed:
            raise RuntimeError("the rules changed meanwhile; nothing was written")


def _run_view(item: PayoutRunModel) -> dict[str, Any]:
    return {
        "id": item.run_id,
        "status": item.status,
        "started_at": item.started_at,
        "finished_at": item.finished_at,
        "enqueued": int(item.enqueued or 0),
        "enqueued_fen": int(item.enqueued_fen or 0),
        "actor": item.actor,
    }


def _state_prefix(tenant: str, state: WithdrawalState) -> str:
    return f"{tenant}#{state.value}"


def _by_created(row: dict[str, Any]) -> tuple[str, str]:
    return row["created_at"], row["id"]


def _item(withdrawal: Withdrawal, *, version: int, audit_hash: str) -> WithdrawalModel:
    return WithdrawalModel(
        pk=f"{withdrawal.tenant}#{withdrawal.id}",
        tenant=withdrawal.tenant,
        withdrawal_id=withdrawal.id,
        promoter=withdrawal.promoter,
        promoter_key=f"{withdrawal.tenant}#{withdrawal.promoter}",
        openid=withdrawal.openid,
        amount_fen=withdrawal.amount_fen,
        fee_fen=withdrawal.fee_fen,
        state=withdrawal.state.value,
        state_key=shards.key(_state_prefix(withdrawal.tenant, withdrawal.state), withdrawal.id),
        created_at=iso(withdrawal.created_at),
        updated_at=iso(withdrawal.updated_at),
        real_name=withdrawal.real_name,
        attempts=0,
        version=version,
        audit_hash=audit_hash,
    )
