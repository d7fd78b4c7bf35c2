"""Request bodies: strict, unknown fields refused."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, StringConstraints

Code = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128)]
Id = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")]
Short = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class LoginBody(Body):
    code: Code
    appid: Id | None = None
    name: Short | None = None


class AdminLoginBody(Body):
    username: Short
    password: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    appid: Id | None = None


class ShareBody(Body):
    product_id: Id | None = None
    channel: Short | None = None


class ScanBody(Body):
    code: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=32)]


class RebindBody(Body):
    parent_id: Id
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]
