"""Users: login records, uplines and team indexes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pynamodb.transactions import TransactWrite

from chalicelib.clock import iso, parse_iso
from chalicelib.entities import AuditEvent, Page, TeamMember, User
from chalicelib.errors import BadRequest
from chalicelib.referral import MAX_LEVELS, Node
from chalicelib.store import audit
from chalicelib.store.base import Transactions, TxOutcome, decode_cursor, encode_cursor
from chalicelib.store.models import AuditModel, ShareModel, TeamL1Index, TeamL2Index, TeamL3Index, UserModel

_TEAM_INDEXES = {1: ("l1k", UserModel.team_l1), 2: ("l2k", UserModel.team_l2), 3: ("l3k", UserModel.team_l3)}
_NODE_ATTRS = ["uid", "upline"]


def _key(tenant: str, uid: str) -> str:
    return f"{tenant}#{uid}"


def _upline(item: UserModel) -> tuple[str, ...]:
    return tuple(str(x) for x in (item.upline or ()))


def to_user(item: UserModel) -> User:
    return User(
        tenant=item.tenant,
        id=item.uid,
        openid=item.openid,
        name=item.name,
        created_at=parse_iso(item.created_at),
        promoter=bool(item.promoter),
        upline=_upline(item),
        bound_at=parse_iso(item.bound_at) if item.bound_at else None,
        bound_via=item.bound_via,
        audit_head=item.audit_head,
    )


def _upline_actions(tenant: str, upline: tuple[str, ...]) -> list[Any]:
    """Set the upline and the team index keys (l1k..l3k) it implies; remove unused levels."""
    actions: list[Any] = [UserModel.upline.set(list(upline))]  # type: ignore[arg-type]
    for level, attr in ((1, UserModel.l1k), (2, UserModel.l2k), (3, UserModel.l3k)):
        if level <= len(upline):
            actions.append(attr.set(_key(tenant, upline[level - 1])))
        else:
            actions.append(attr.remove())
    return actions


class UserStore:
    def __init__(self, tx: Transactions) -> None:
        self._tx = tx

    def get(self, tenant: str, uid: str) -> User | None:
        try:
            return to_user(UserModel.get(_key(tenant, uid), consistent_read=True))
        except UserModel.DoesNotExist:
            return None

    def node(self, tenant: str, uid: str) -> Node | None:
        """The user's id and upline only (for ancestry walks)."""
        try:
            item = UserModel.get(_key(tenant, uid), consistent_read=True, attributes_to_get=_NODE_ATTRS)
        except UserModel.DoesNotExist:
            return None
        return Node(item.uid, _upline(item))

    def names(self, tenant: str, uids: list[str]) -> dict[str, str]:
        """Display names for a few users (batch get)."""
        keys = list(dict.fromkeys(_key(tenant, uid) for uid in uids))
        return {item.uid: item.name for item in UserModel.batch_get(keys, attributes_to_get=["uid", "name"])}

    def create(self, user: User, event: AuditEvent) -> bool:
        """Create the user with its first audit record; False when it already exists."""
        record = audit.build(user.tenant, event, user.created_at, None)
        item = UserModel(
            pk=_key(user.tenant, user.id),
            tenant=user.tenant,
            uid=user.id,
            openid=user.openid,
            name=user.name,
            created_at=iso(user.created_at),
            promoter=user.promoter,
            audit_head=record.hash,
        )

        def body(tx: TransactWrite) -> None:
            tx.save(item, condition=UserModel.pk.does_not_exist())
            tx.save(record, condition=AuditModel.pk.does_not_exist())

        return self._tx.run(body).committed

    def set_upline(
        self,
        tenant: str,
        user: User,
        upline: tuple[str, ...],
        *,
        via: str,
        when: datetime,
        event: AuditEvent,
        hops: tuple[Node, ...] = (),
        share_code: str | None = None,
    ) -> TxOutcome:
        """Bind or move `user`: one transaction with its audit record.

        Conditions: the user's upline and audit head are still what was read, and every hop
        node of the parent's ancestry is unchanged (so no concurrent change can close a cycle).
        """
        if len(upline) > MAX_LEVELS:
            raise ValueError("an upline holds at most three levels")
        record = audit.build(tenant, event, when, user.audit_head)
        actions = [
            *_upline_actions(tenant, upline),
            UserModel.bound_at.set(iso(when)),
            UserModel.bound_via.set(via),
            UserModel.audit_head.set(record.hash),
        ]
        if user.upline and via.startswith("admin:"):
            actions.append(UserModel.rebinds.add(1))
        condition = UserModel.pk.exists() & _upline_is(user.upline) & _head_is(user.audit_head)

        def body(tx: TransactWrite) -> None:
            tx.update(UserModel(_key(tenant, user.id)), actions=actions, condition=condition)
            for hop in hops:
                tx.condition_check(UserModel, _key(tenant, hop.id), condition=_upline_is(hop.upline))
            tx.save(record, condition=AuditModel.pk.does_not_exist())
            if share_code is not None:
                tx.update(
                    ShareModel(f"{tenant}#{share_code}"), actions=[ShareModel.scans.add(1), ShareModel.binds.add(1)]
                )

        return self._tx.run(body)

    def team(self, tenant: str, uid: str, level: int, cursor: str | None, limit: int) -> Page[TeamMember]:
        """Users at `level` below `uid`, newest binding first, read from the level's index."""
        if level not in _TEAM_INDEXES:
            raise BadRequest("level must be 1, 2 or 3", code="invalid_level")
        attr, index = _TEAM_INDEXES[level]
        hash_value = _key(tenant, uid)
        start = decode_cursor(cursor, hash_attr=attr, hash_value=hash_value)
        result = index.query(hash_value, scan_index_forward=False, limit=limit, last_evaluated_key=start)
        items = [TeamMember(id=i.uid, name=i.name, bound_at=parse_iso(i.bound_at or "")) for i in result]
        return Page(items=items, next_cursor=encode_cursor(result.last_evaluated_key))

    def team_count(self, tenant: str, uid: str, level: int) -> int:
        """How many users are at `level` below `uid` (an index count, never a scan)."""
        index: TeamL1Index | TeamL2Index | TeamL3Index = _TEAM_INDEXES[level][1]  # type: ignore[assignment]
        return index.count(_key(tenant, uid))

    def children(self, tenant: str, uid: str) -> list[Node]:
        """Every direct child (level 1) of `uid` with their uplines."""
        return [Node(i.uid, _upline(i)) for i in UserModel.team_l1.query(_key(tenant, uid))]


def _upline_is(upline: tuple[str, ...]):  # type: ignore[no-untyped-def]
    if upline:
        return UserModel.upline == list(upline)
    return UserModel.upline.does_not_exist()


def _head_is(head: str | None):  # type: ignore[no-untyped-def]
    if head:
        return UserModel.audit_head == head
    return UserModel.audit_head.does_not_exist()
