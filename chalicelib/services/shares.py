"""Share codes: create one, render its mini-program code."""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict

from chalicelib import caches
from chalicelib.clock import utcnow
from chalicelib.entities import AuditEvent, Principal, Share
from chalicelib.errors import Missing, StateConflict
from chalicelib.observability import count
from chalicelib.retry import Retry
from chalicelib.settings import get_settings
from chalicelib.store import get_store
from chalicelib.wechat import get_miniprogram

CODE_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"  # no 0/O or 1/I: people read them aloud
CODE_LENGTH = 8
NEW_CODES = Retry.at_once(3)  # a random code taken already (unlikely): draw another
_CACHE_SIZE = 4096
_cache: OrderedDict[tuple[str, str], Share] = caches.register(f"{__name__}._cache", OrderedDict())
_lock = threading.Lock()


def new_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def page_path(share: Share) -> str:
    """The mini-program path a share opens (the scene carries the code)."""
    settings = get_settings()
    if share.product_id:
        return f"{settings.product_page}?id={share.product_id}&scene={share.code}"
    return f"{settings.share_page}?scene={share.code}"


def qr_url(share: Share) -> str:
    base = get_settings().public_base_url.rstrip("/")
    return f"{base}/v1/shares/{share.code}/qrcode?appid={share.tenant}"


def create(principal: Principal, product_id: str | None, channel: str | None, coupon_id: str | None = None) -> Share:
    """A new share code for the caller; the code also serves as the wxacode scene.

    With a coupon, the friend who opens the share is offered it (and orders in one step with it).
    """
    store = get_store()
    if product_id is not None and store.products.get(principal.tenant, product_id) is None:
        raise Missing(f"no product {product_id} in this mini-program", code="unknown_product")
    if coupon_id is not None and store.coupons.get(principal.tenant, coupon_id) is None:
        raise Missing("unknown coupon", code="unknown_coupon")
    for _ in NEW_CODES:
        share = Share(
            tenant=principal.tenant,
            code=new_code(),
            sharer=principal.subject,
            created_at=utcnow(),
            product_id=product_id,
            channel=channel,
            coupon_id=coupon_id,
        )
        data = {"sharer": share.sharer, "product_id": product_id, "channel": channel, "coupon_id": coupon_id}
        event = AuditEvent(entity=f"share:{share.code}", action="share.created", actor=principal.actor, data=data)
        if store.shares.create(share, event):
            count("Shares")
            return share
    raise StateConflict("could not allocate a share code, try again", code="share_code_busy")


def get(tenant: str, code: str) -> Share:
    """A share (its immutable fields cached in memory), or Missing."""
    key = (tenant, code)
    with _lock:
        cached = _cache.get(key)
        if cached is not None:
            _cache.move_to_end(key)
            return cached
    share = get_store().shares.get(tenant, code) if _valid_code(code) else None
    if share is None:
        raise Missing("unknown share code", code="unknown_share")
    with _lock:
        _cache[key] = share
        if len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return share


def qrcode_png(tenant: str, code: str) -> bytes:
    """The share's mini-program code as PNG (getwxacodeunlimit, or a QR in the sandbox)."""
    share = get(tenant, code)
    settings = get_settings()
    page = settings.product_page if share.product_id else settings.share_page
    return get_miniprogram().wxacode(tenant, share.code, page)


def _valid_code(code: str) -> bool:
    return 0 < len(code) <= 32 and all(c in CODE_ALPHABET for c in code)
