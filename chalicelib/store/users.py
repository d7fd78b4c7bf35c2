"""Users: login records, uplines and team indexes.

Every state change of a user is one conditional write that also records *what happened*
(`event_*` attributes and a version number); the users stream turns each version into an
audit record (`chalicelib.store.audit.append_user_event`). Binding is thus one conditional
update of the user plus a validating read (see `services.referrals`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from chalicelib.clock import iso, parse_iso
from chalicelib.entities import AuditEvent, Page, TeamMember, User
from chalicelib.errors import InvalidInput
from chalicelib.referral import MAX_LEVELS, Node
from chalicelib.store.audit import canonical, version_actions
from chalicelib.store.base import conditional_write, decode_cursor, encode_cursor
from chalicelib.store.models import TeamL1Index, TeamL2Index, TeamL3Index, UserModel

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
        version=int(item.version or 0),
    )


def _upline_actions(tenant: str, upline: tuple[str, ...]) -> list[Any]:
    """Set the upline and the team index keys (l1k..l3k) it implies; remove unused levels."""
    if len(upline) > MAX_LEVELS:
        raise ValueError("an upline holds at most three levels")
    if not upline:
        return [UserModel.upline.remove(), UserModel.l1k.remove(), UserModel.l2k.remove(), UserModel.l3k.remove()]
    actions: list[Any] = [UserModel.upline.set(list(upline))]  # type: ignore[arg-type]
    for level, attr in ((1, UserModel.l1k), (2, UserModel.l2k), (3, UserModel.l3k)):
        if level <= len(upline):
            actions.append(attr.set(_key(tenant, upline[level - 1])))
        else:
            actions.append(attr.remove())
    return actions


def _upline_is(upline: tuple[str, ...]) -> Any:
    if upline:
        return UserModel.upline == list(upline)
    return UserModel.upline.does_not_exist()


class UserStore:
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

    def promoters(self, tenant: str, uids: list[str]) -> set[str]:
        """Which of these users are active promoters (one batch get per 100)."""
        keys = list(dict.fromkeys(_key(tenant, uid) for uid in uids))
        items = UserModel.batch_get(keys, consistent_read=True, attributes_to_get=["uid", "promoter"])
        return {item.uid for item in items if item.promoter is not False}

    def create(self, user: User, event: AuditEvent) -> bool:
        """Create the user as version 1 (its creation is audited by the stream); False if it exists."""
        item = UserModel(
            pk=_key(user.tenant, user.id),
            tenant=user.tenant,
            uid=user.id,
            openid=user.openid,
            name=user.name,
            created_at=iso(user.created_at),
            promoter=user.promoter,
            version=1,
            event_at=iso(user.created_at),
            event_action=event.action,
            event_actor=event.actor,
            event_data=canonical(event.data),
        )
        return conditional_write(lambda: item.save(condition=UserModel.pk.does_not_exist()))

    def bind(
        self, tenant: str, uid: str, upline: tuple[str, ...], *, via: str, when: datetime, event: AuditEvent
    ) -> bool:
        """Bind an unbound user without reading it first; False if it is bound already (or missing)."""
        actions = [
            *_upline_actions(tenant, upline),
            UserModel.bound_at.set(iso(when)),
            UserModel.bound_via.set(via),
            *version_actions(UserModel, event, when),
        ]
        return self._update(tenant, uid, actions, UserModel.pk.exists() & UserModel.upline.does_not_exist())

    def move(
        self,
        tenant: str,
        uid: str,
        expected: tuple[str, ...],
        upline: tuple[str, ...],
        *,
        when: datetime,
        event: AuditEvent,
        rebind: bool = False,
    ) -> bool:
        """Change a user's upline if it is still `expected`; an empty upline makes them a root again."""
        actions = [*_upline_actions(tenant, upline), *version_actions(UserModel, event, when)]
        if rebind:
            actions += [
                UserModel.rebinds.add(1),
                UserModel.bound_at.set(iso(when)),
                UserModel.bound_via.set(event.actor),
            ]
        elif not upline:
            actions += [UserModel.bound_at.remove(), UserModel.bound_via.remove()]
        return self._update(tenant, uid, actions, UserModel.pk.exists() & _upline_is(expected))

    def _update(self, tenant: str, uid: str, actions: list[Any], condition: Any) -> bool:
        return conditional_write(lambda: UserModel(_key(tenant, uid)).update(actions=actions, condition=condition))

    def team(self, tenant: str, uid: str, level: int, cursor: str | None, limit: int) -> Page[TeamMember]:
        """Users at `level` below `uid`, newest binding first, read from the level's index."""
        if level not in _TEAM_INDEXES:
            raise InvalidInput("level must be 1, 2 or 3", code="invalid_level")
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

    # --- the operators' promoters list -------------------------------------------------------

    def joined(self, tenant: str, cursor: str | None, limit: int) -> Page[User]:
        """One page of the tenant's promoters, newest first (the `joined` index, then the page's
        users read whole). A page may hold fewer than `limit` (users who are not promoters are
        left out by the filter) while `next_cursor` is set."""
        start = decode_cursor(cursor, hash_attr="tenant", hash_value=tenant)
        result = UserModel.joined.query(
            tenant, filter_condition=_PROMOTERS, scan_index_forward=False, limit=limit, last_evaluated_key=start
        )
        return self._whole(tenant, result)

    def named(self, tenant: str, prefix: str, cursor: str | None, limit: int) -> Page[User]:
        """One page of the tenant's promoters whose name starts with `prefix`, by name."""
        start = decode_cursor(cursor, hash_attr="tenant", hash_value=tenant)
        result = UserModel.named.query(
            tenant,
            UserModel.name.startswith(prefix),
            filter_condition=_PROMOTERS,
            limit=limit,
            last_evaluated_key=start,
        )
        return self._whole(tenant, result)

    def _whole(self, tenant: str, result: Any) -> Page[User]:
        # One index page only: iterating the result would read on until `limit` items match.
        page = next(result.page_iter)
        uids = [str(raw["pk"]["S"]).split("#", 1)[1] for raw in page.get("Items", [])]
        found = self.get_many(tenant, uids)
        return Page([found[uid] for uid in uids if uid in found], encode_cursor(result.page_iter.last_evaluated_key))

    def get_many(self, tenant: str, uids: list[str]) -> dict[str, User]:
        """These users, those that exist, read whole (one batch get per 100)."""
        keys = list(dict.fromkeys(_key(tenant, uid) for uid in uids))
        return {item.uid: to_user(item) for item in UserModel.batch_get(keys)}


_PROMOTERS = UserModel.promoter.does_not_exist() | (UserModel.promoter == True)  # noqa: E712
