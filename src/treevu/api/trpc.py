"""tRPC-compatible transport under ``/trpc`` (tRPC v10/v11 HTTP wire format, no transformer).

Queries are ``GET /trpc/<path>?input=<json>``, mutations ``POST /trpc/<path>`` with a JSON body;
``?batch=1`` takes comma-separated paths and inputs keyed "0", "1", …, and answers a JSON array.
Results are ``{"result": {"data": …}}``; errors use tRPC's default error shape with JSON-RPC
codes, so a stock ``@trpc/client`` can call every procedure in :data:`PROCEDURES`. Answers are
always plain JSON: ``httpLink`` and ``httpBatchLink`` work; ``httpBatchStreamLink`` (JSONL) does
not.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from treevu import jsonbound
from treevu.api.deps import authenticate
from treevu.jsonbound import TooDeep
from treevu.services import audit, jobs, team
from treevu.services import interventions as I
from treevu.services.analytics import ops as A
from treevu.services.campaigns import ops as C
from treevu.services.context import Actor, Services
from treevu.services.errors import ServiceError, database_unavailable
from treevu.services.models import ops as models
from treevu.services.notifications import compliance
from treevu.services.notifications import inbox as N
from treevu.services.people import users as people
from treevu.services.rewards import points, tiers
from treevu.services.segmentation import feedback
from treevu.services.segmentation import queries as segmentation

router = APIRouter(prefix="/trpc", include_in_schema=False)
log = logging.getLogger(__name__)

Handler = Callable[[Services, Actor, Any], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Procedure:
    kind: Literal["query", "mutation"]
    input_model: type[BaseModel]
    handler: Handler
    #: Pass the request's ``Idempotency-Key`` header to the handler.
    idempotent: bool = False


def _q(model: type[BaseModel], handler: Handler) -> Procedure:
    return Procedure("query", model, handler)


def _m(model: type[BaseModel], handler: Handler) -> Procedure:
    return Procedure("mutation", model, handler)


S = segmentation
PROCEDURES: dict[str, Procedure] = {
    "segmentation.getWellnessProfile": _q(S.UserRef, S.get_wellness_profile),
    "segmentation.getPersonalizedRecommendations": _q(
        S.RecommendationsInput, S.get_personalized_recommendations
    ),
    "segmentation.getCurrentSegment": _q(S.UserRef, S.get_current_segment),
    "segmentation.getSegmentStats": _q(S.SegmentInput, S.get_segment_stats),
    "segmentation.getSegmentEmployees": _q(S.SegmentEmployeesInput, S.get_segment_employees),
    "segmentation.getSegmentDistribution": _q(S.Empty, S.get_segment_distribution),
    "segmentation.getRiskDistribution": _q(S.Empty, S.get_risk_distribution),
    "segmentation.getInterventionRecommendations": _q(
        S.SegmentInput, S.get_intervention_recommendations
    ),
    "segmentation.getCampaignTargets": _q(S.CampaignTargetsInput, S.get_campaign_targets),
    "segmentation.getPolicy": _q(S.Empty, S.get_policy),
    "segmentation.bulkUpdateSegments": _m(S.Empty, S.bulk_update_segments),
    "segmentation.recomputeMyProfile": _m(S.Empty, S.recompute_my_profile),
    "segmentation.updateInputs": _m(people.PutInputs, people.put_inputs),
    "segmentation.submitSurvey": _m(people.SubmitSurvey, people.submit_survey),
    "users.list": _q(people.UserListInput, people.list_users),
    "users.create": _m(people.UserCreate, people.create_user),
    "users.getMe": _q(N.Empty, people.get_me),
    "segmentation.getSurvey": _q(N.Empty, people.get_survey_form),
    "websocket.getHistory": _q(N.HistoryInput, N.get_history),
    "websocket.markAsRead": _m(N.MarkAsRead, N.mark_as_read),
    "websocket.markAllAsRead": _m(N.Empty, N.mark_all_as_read),
    "websocket.trackClick": _m(N.MarkAsRead, N.track_click),
    "websocket.getUnreadCount": _q(N.Empty, N.get_unread_count),
    "websocket.clearAll": _m(N.Empty, N.clear_all),
    "websocket.getPreferences": _q(N.Empty, N.get_preferences),
    "websocket.updatePreferences": _m(N.PreferencesUpdate, N.update_preferences),
    "websocket.getStats": _q(N.Empty, N.get_stats),
    "notifications.create": Procedure(
        "mutation", N.CreateNotification, N.create_notification, True
    ),
    "notifications.broadcast": Procedure("mutation", N.Broadcast, N.broadcast, True),
    "notifications.complianceAlert": _m(compliance.ComplianceAlert, compliance.compliance_alert),
    "rewards.getTiers": _q(tiers.Empty, tiers.get_tiers),
    "rewards.setTiers": _m(tiers.TiersUpdate, tiers.set_tiers),
    "rewards.getMyTier": _q(tiers.Empty, tiers.get_my_tier),
    "rewards.awardPoints": Procedure("mutation", points.AwardPoints, points.award_points, True),
    "activity.record": _m(points.ActivityIn, points.record_activity),
    "recommendations.click": _m(feedback.RecommendationRef, feedback.click),
    "recommendations.dismiss": _m(feedback.RecommendationRef, feedback.dismiss),
    "recommendations.complete": _m(feedback.RecommendationRef, feedback.complete),
    "audit.list": _q(audit.AuditListInput, audit.list_audit),
    "jobs.list": _q(jobs.Empty, jobs.list_jobs),
    "campaigns.create": _m(C.CampaignCreate, C.create_campaign),
    "campaigns.list": _q(C.CampaignListInput, C.list_campaigns),
    "campaigns.get": _q(C.CampaignRef, C.get_campaign),
    "campaigns.pause": _m(C.CampaignRef, C.pause_campaign),
    "campaigns.resume": _m(C.CampaignRef, C.resume_campaign),
    "campaigns.cancel": _m(C.CampaignRef, C.cancel_campaign),
    "campaigns.getStats": _q(C.CampaignRef, C.get_stats),
    "campaigns.getExperiment": _q(A.ExperimentInput, A.get_experiment),
    "interventions.list": _q(I.InterventionListInput, I.list_interventions),
    "interventions.get": _q(I.InterventionRef, I.get_intervention),
    "interventions.update": _m(I.InterventionUpdate, I.update_intervention),
    "me.getIntervention": _q(I.Empty, I.get_my_intervention),
    "team.getOverview": _q(team.TeamInput, team.get_overview),
    "team.getAlerts": _q(team.TeamInput, team.get_alerts),
    "analytics.getTransitions": _q(A.TransitionsInput, A.get_transitions),
    "analytics.getCohorts": _q(A.Empty, A.get_cohorts),
    "analytics.getChurn": _q(A.Empty, A.get_churn),
    "analytics.getInterventionEffect": _q(A.EffectInput, A.get_intervention_effect),
    "models.list": _q(models.Empty, models.list_models),
}

JSONRPC_CODES = {
    "PARSE_ERROR": -32700,
    "BAD_REQUEST": -32600,
    "INTERNAL_SERVER_ERROR": -32603,
    "UNAUTHORIZED": -32001,
    "FORBIDDEN": -32003,
    "NOT_FOUND": -32004,
    "METHOD_NOT_SUPPORTED": -32005,
    "CONFLICT": -32009,
    "UNPROCESSABLE_CONTENT": -32022,
    "TOO_MANY_REQUESTS": -32029,
    "SERVICE_UNAVAILABLE": -32603,
}
HTTP_STATUS = {
    "PARSE_ERROR": 400,
    "BAD_REQUEST": 400,
    "INTERNAL_SERVER_ERROR": 500,
    "UNAUTHORIZED": 401,
    "FORBIDDEN": 403,
    "NOT_FOUND": 404,
    "METHOD_NOT_SUPPORTED": 405,
    "CONFLICT": 409,
    "UNPROCESSABLE_CONTENT": 422,
    "TOO_MANY_REQUESTS": 429,
    "SERVICE_UNAVAILABLE": 503,
}


class TrpcError(Exception):
    @classmethod
    def internal(cls) -> TrpcError:
        """An unexpected failure: logged with its traceback, answered without its details."""
        return cls("INTERNAL_SERVER_ERROR", "Internal server error")

    def __init__(self, code: str, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after


def _error(exc: TrpcError, path: str) -> tuple[int, dict[str, Any]]:
    status = HTTP_STATUS[exc.code]
    return status, {
        "error": {
            "message": exc.message,
            "code": JSONRPC_CODES[exc.code],
            "data": {"code": exc.code, "httpStatus": status, "path": path},
        }
    }


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "input"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


async def _call(
    request: Request, path: str, method: str, raw_input: Any, actor: Actor | None
) -> tuple[int, dict[str, Any], int | None]:
    try:
        procedure = PROCEDURES.get(path)
        if procedure is None:
            raise TrpcError("NOT_FOUND", f'No procedure found on path "{path}"')
        expected = "GET" if procedure.kind == "query" else "POST"
        if method != expected:
            raise TrpcError(
                "METHOD_NOT_SUPPORTED",
                f'Unsupported {method}-request to {procedure.kind} procedure at path "{path}"',
            )
        if actor is None:
            raise TrpcError("UNAUTHORIZED", "missing bearer token")
        try:
            inp = procedure.input_model.model_validate({} if raw_input is None else raw_input)
        except ValidationError as exc:
            raise TrpcError("BAD_REQUEST", _validation_message(exc)) from exc
        services: Services = request.app.state.services
        if procedure.idempotent:
            key = request.headers.get("idempotency-key")
            output = await procedure.handler(services, actor, inp, key)  # type: ignore[call-arg]
        else:
            output = await procedure.handler(services, actor, inp)
        data = (
            output.model_dump(by_alias=True, mode="json")
            if isinstance(output, BaseModel)
            else (
                [
                    o.model_dump(by_alias=True, mode="json") if isinstance(o, BaseModel) else o
                    for o in output
                ]
                if isinstance(output, list)
                else output
            )
        )
        return 200, {"result": {"data": data}}, None
    except ServiceError as exc:
        status, body = _error(TrpcError(exc.code, exc.message), path)
        return status, body, exc.retry_after
    except TrpcError as exc:
        status, body = _error(exc, path)
        return status, body, exc.retry_after
    except Exception as exc:
        # Like tRPC itself, answer in the envelope: a bare text/plain 500 would fail the whole
        # batch and leave the client with a body it cannot parse.
        unavailable = database_unavailable(exc)
        if unavailable is not None:
            status, body = _error(TrpcError(unavailable.code, unavailable.message), path)
            return status, body, unavailable.retry_after
        log.exception("tRPC procedure %s failed", path)
        status, body = _error(TrpcError.internal(), path)
        return status, body, None


async def _actor(request: Request) -> Actor | TrpcError | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return TrpcError("UNAUTHORIZED", "Authorization must be 'Bearer <token>'")
    try:
        return await authenticate(request.app.state.services, request.app.state.verifier, token)
    except ServiceError as exc:
        return TrpcError(exc.code, exc.message, exc.retry_after)
    except Exception as exc:
        unavailable = database_unavailable(exc)
        if unavailable is not None:
            return TrpcError(unavailable.code, unavailable.message, unavailable.retry_after)
        log.exception("tRPC authentication failed")
        return TrpcError.internal()


async def _parse_inputs(request: Request, batch: bool, count: int) -> list[Any]:
    """One input per call: from ``?input=`` for GET, the JSON body for POST."""
    if request.method == "GET":
        raw = request.query_params.get("input")
        try:
            decoded = None if raw in (None, "", "undefined") else jsonbound.loads(raw)
        except TooDeep as exc:
            raise TrpcError("UNPROCESSABLE_CONTENT", f"input: {exc}") from exc
        except json.JSONDecodeError as exc:
            raise TrpcError("PARSE_ERROR", f"input: not valid JSON ({exc.msg})") from exc
    else:
        body = await request.body()
        try:
            decoded = jsonbound.loads(body) if body.strip() else None
        except TooDeep as exc:
            raise TrpcError("UNPROCESSABLE_CONTENT", f"body: {exc}") from exc
        except json.JSONDecodeError as exc:
            raise TrpcError("PARSE_ERROR", f"body: not valid JSON ({exc.msg})") from exc
    if not batch:
        return [decoded]
    if decoded is None:
        return [None] * count
    if not isinstance(decoded, dict):
        raise TrpcError("BAD_REQUEST", 'input: a batch takes an object keyed "0", "1", …')
    return [decoded.get(str(k)) for k in range(count)]


@router.api_route("/{paths:path}", methods=["GET", "POST"])
async def trpc_endpoint(paths: str, request: Request) -> JSONResponse:
    batch = request.query_params.get("batch") in ("1", "true")
    names = paths.split(",") if batch else [paths]
    found = await _actor(request)
    results: list[tuple[int, dict[str, Any], int | None]]
    try:
        inputs = await _parse_inputs(request, batch, len(names))
    except TrpcError as exc:
        results = [(*_error(exc, name), exc.retry_after) for name in names]
    else:
        results = []
        for name, raw in zip(names, inputs, strict=True):
            if isinstance(found, TrpcError):
                status, body = _error(found, name)
                results.append((status, body, found.retry_after))
            else:
                results.append(await _call(request, name, request.method, raw, found))
    statuses = {status for status, _, _ in results}
    status = statuses.pop() if len(statuses) == 1 else 207
    headers: dict[str, str] = {}
    retry = [r for _, _, r in results if r is not None]
    if retry:
        headers["Retry-After"] = str(max(retry))
    content: Any = [body for _, body, _ in results] if batch else results[0][1]
    return JSONResponse(content, status_code=status, headers=headers)
