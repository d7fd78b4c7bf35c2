"""The plan simulator's route: a draft plan replayed over the last days of real orders."""

from __future__ import annotations

from typing import Any

from chalice.app import Blueprint

from chalicelib.api.http import handled, parse_object, principal_of
from chalicelib.services import simulator

bp = Blueprint(__name__)


@bp.route("/v1/admin/plans/simulate", methods=["POST"])
@handled
def simulate() -> dict[str, Any]:
    return simulator.simulate(principal_of(bp.current_request), parse_object(bp.current_request))
