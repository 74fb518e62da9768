"""REST transport under ``/api/v1``: each route parses, calls one service, returns its model."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Path, Query

from treevu.api.deps import CurrentActor, ServicesDep
from treevu.segmentation.policy import SegmentName
from treevu.services import audit, jobs, team
from treevu.services import interventions as I
from treevu.services.analytics import ops as A
from treevu.services.bounds import MAX_INT
from treevu.services.campaigns import ops as C
from treevu.services.campaigns.sending import CampaignType
from treevu.services.models import ops as models
from treevu.services.notifications import compliance
from treevu.services.notifications import inbox as N
from treevu.services.notifications.preferences import Preferences
from treevu.services.people import users as people
from treevu.services.people.users import (
    EmployeeInputsIn,
    PutInputs,
    SubmitSurvey,
    SurveyIn,
    SurveyOut,
    UserCreate,
    UserListInput,
    UserOut,
    UserPage,
)
from treevu.services.rewards import points, tiers
from treevu.services.segmentation import feedback
from treevu.services.segmentation import queries as segmentation
from treevu.services.segmentation.queries import (
    CampaignTargets,
    CampaignTargetsInput,
    CurrentSegment,
    Distribution,
    Empty,
    InterventionRecommendations,
    RecommendationOut,
    RecommendationsInput,
    RecomputeOut,
    SegmentEmployeesInput,
    SegmentEmployeesPage,
    SegmentInput,
    SegmentStats,
    UserRef,
    WellnessProfile,
)

router = APIRouter(prefix="/api/v1", tags=["api"])
UserIdPath = Annotated[int, Path(alias="userId", ge=1, le=MAX_INT)]
SegmentPath = Annotated[SegmentName, Path()]
Cursor = Annotated[str | None, Query()]
RESPONSE_OPTIONS: dict[str, Any] = {"response_model_by_alias": True}


@router.get("/me/profile", response_model=WellnessProfile, **RESPONSE_OPTIONS)
async def my_profile(svc: ServicesDep, actor: CurrentActor) -> WellnessProfile:
    return await segmentation.get_wellness_profile(svc, actor, UserRef())


@router.get("/me", response_model=people.Me, **RESPONSE_OPTIONS)
async def me(svc: ServicesDep, actor: CurrentActor) -> people.Me:
    return await people.get_me(svc, actor)


@router.get("/survey", response_model=people.SurveyForm, **RESPONSE_OPTIONS)
async def survey_form(svc: ServicesDep, actor: CurrentActor) -> people.SurveyForm:
    return await people.get_survey_form(svc, actor)


@router.post("/me/recompute", response_model=WellnessProfile, **RESPONSE_OPTIONS)
async def recompute_my_profile(svc: ServicesDep, actor: CurrentActor) -> WellnessProfile:
    return await segmentation.recompute_my_profile(svc, actor, Empty())


@router.get("/employees/{userId}/profile", response_model=WellnessProfile, **RESPONSE_OPTIONS)
async def employee_profile(
    user_id: UserIdPath, svc: ServicesDep, actor: CurrentActor
) -> WellnessProfile:
    return await segmentation.get_wellness_profile(svc, actor, UserRef(user_id=user_id))


@router.get("/employees/{userId}/segment", response_model=CurrentSegment, **RESPONSE_OPTIONS)
async def employee_segment(
    user_id: UserIdPath, svc: ServicesDep, actor: CurrentActor
) -> CurrentSegment:
    return await segmentation.get_current_segment(svc, actor, UserRef(user_id=user_id))


@router.get(
    "/employees/{userId}/recommendations",
    response_model=list[RecommendationOut],
    **RESPONSE_OPTIONS,
)
async def employee_recommendations(
    user_id: UserIdPath,
    svc: ServicesDep,
    actor: CurrentActor,
    limit: Annotated[int, Query(ge=1, le=50)] = 5,
) -> list[RecommendationOut]:
    inp = RecommendationsInput(user_id=user_id, limit=limit)
    return await segmentation.get_personalized_recommendations(svc, actor, inp)


@router.put("/employees/{userId}/inputs", response_model=WellnessProfile, **RESPONSE_OPTIONS)
async def put_inputs(
    user_id: UserIdPath, body: EmployeeInputsIn, svc: ServicesDep, actor: CurrentActor
) -> WellnessProfile:
    return await people.put_inputs(svc, actor, PutInputs(user_id=user_id, inputs=body))


@router.post("/employees/{userId}/survey", response_model=SurveyOut, **RESPONSE_OPTIONS)
async def submit_survey(
    user_id: UserIdPath, body: SurveyIn, svc: ServicesDep, actor: CurrentActor
) -> SurveyOut:
    return await people.submit_survey(svc, actor, SubmitSurvey(user_id=user_id, survey=body))


@router.get("/users", response_model=UserPage, **RESPONSE_OPTIONS)
async def list_users(
    svc: ServicesDep, actor: CurrentActor, query: Annotated[UserListInput, Query()]
) -> UserPage:
    return await people.list_users(svc, actor, query)


@router.post("/users", response_model=UserOut, status_code=201, **RESPONSE_OPTIONS)
async def create_user(body: UserCreate, svc: ServicesDep, actor: CurrentActor) -> UserOut:
    return await people.create_user(svc, actor, body)


@router.get("/segments/distribution", response_model=Distribution, **RESPONSE_OPTIONS)
async def segment_distribution(svc: ServicesDep, actor: CurrentActor) -> Distribution:
    return await segmentation.get_segment_distribution(svc, actor, Empty())


@router.get("/segments/risk-distribution", response_model=Distribution, **RESPONSE_OPTIONS)
async def risk_distribution(svc: ServicesDep, actor: CurrentActor) -> Distribution:
    return await segmentation.get_risk_distribution(svc, actor, Empty())


@router.get("/segments/{segment}/stats", response_model=SegmentStats, **RESPONSE_OPTIONS)
async def segment_stats(
    segment: SegmentPath, svc: ServicesDep, actor: CurrentActor
) -> SegmentStats:
    return await segmentation.get_segment_stats(svc, actor, SegmentInput(segment=segment))


@router.get(
    "/segments/{segment}/employees", response_model=SegmentEmployeesPage, **RESPONSE_OPTIONS
)
async def segment_employees(
    segment: SegmentPath,
    svc: ServicesDep,
    actor: CurrentActor,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Cursor = None,
) -> SegmentEmployeesPage:
    inp = SegmentEmployeesInput(segment=segment, limit=limit, cursor=cursor)
    return await segmentation.get_segment_employees(svc, actor, inp)


@router.get(
    "/segments/{segment}/interventions",
    response_model=InterventionRecommendations,
    **RESPONSE_OPTIONS,
)
async def segment_interventions(
    segment: SegmentPath, svc: ServicesDep, actor: CurrentActor
) -> InterventionRecommendations:
    inp = SegmentInput(segment=segment)
    return await segmentation.get_intervention_recommendations(svc, actor, inp)


@router.get(
    "/segments/{segment}/campaign-targets", response_model=CampaignTargets, **RESPONSE_OPTIONS
)
async def campaign_targets(
    segment: SegmentPath,
    svc: ServicesDep,
    actor: CurrentActor,
    campaign_type: Annotated[CampaignType, Query(alias="campaignType")],
    limit: Annotated[int, Query(ge=1, le=10000)] = 1000,
    cursor: Cursor = None,
    rising_risk: Annotated[bool, Query(alias="risingRisk")] = False,
) -> CampaignTargets:
    inp = CampaignTargetsInput(
        segment=segment,
        campaign_type=campaign_type,
        limit=limit,
        cursor=cursor,
        rising_risk=rising_risk,
    )
    return await segmentation.get_campaign_targets(svc, actor, inp)


@router.post("/segments/recompute", response_model=RecomputeOut, **RESPONSE_OPTIONS)
async def recompute_all(svc: ServicesDep, actor: CurrentActor) -> RecomputeOut:
    return await segmentation.bulk_update_segments(svc, actor, Empty())


@router.get("/segmentation/policy")
async def policy(svc: ServicesDep, actor: CurrentActor) -> dict[str, Any]:
    return await segmentation.get_policy(svc, actor, Empty())


# -- notifications inbox (the websocket.* procedures) -------------------------------------


@router.get("/notifications", response_model=N.HistoryPage, **RESPONSE_OPTIONS)
async def notification_history(
    svc: ServicesDep, actor: CurrentActor, query: Annotated[N.HistoryInput, Query()]
) -> N.HistoryPage:
    return await N.get_history(svc, actor, query)


@router.post(
    "/notifications/{notificationId}/read", response_model=N.ReadResult, **RESPONSE_OPTIONS
)
async def notification_read(
    notification_id: Annotated[int, Path(alias="notificationId", ge=1, le=MAX_INT)],
    svc: ServicesDep,
    actor: CurrentActor,
) -> N.ReadResult:
    return await N.mark_as_read(svc, actor, N.MarkAsRead(notification_id=notification_id))


@router.post(
    "/notifications/{notificationId}/click", response_model=N.ReadResult, **RESPONSE_OPTIONS
)
async def notification_click(
    notification_id: Annotated[int, Path(alias="notificationId", ge=1, le=MAX_INT)],
    svc: ServicesDep,
    actor: CurrentActor,
) -> N.ReadResult:
    return await N.track_click(svc, actor, N.MarkAsRead(notification_id=notification_id))


@router.post("/notifications/read-all", response_model=N.ReadResult, **RESPONSE_OPTIONS)
async def notifications_read_all(svc: ServicesDep, actor: CurrentActor) -> N.ReadResult:
    return await N.mark_all_as_read(svc, actor, N.Empty())


@router.get("/notifications/unread-count", response_model=N.UnreadCount, **RESPONSE_OPTIONS)
async def notifications_unread(svc: ServicesDep, actor: CurrentActor) -> N.UnreadCount:
    return await N.get_unread_count(svc, actor, N.Empty())


@router.post("/notifications/clear", response_model=N.Cleared, **RESPONSE_OPTIONS)
async def notifications_clear(svc: ServicesDep, actor: CurrentActor) -> N.Cleared:
    return await N.clear_all(svc, actor, N.Empty())


@router.get("/notifications/preferences", response_model=Preferences, **RESPONSE_OPTIONS)
async def notification_preferences(svc: ServicesDep, actor: CurrentActor) -> Preferences:
    return await N.get_preferences(svc, actor, N.Empty())


@router.put("/notifications/preferences", response_model=Preferences, **RESPONSE_OPTIONS)
async def update_notification_preferences(
    body: N.PreferencesUpdate, svc: ServicesDep, actor: CurrentActor
) -> Preferences:
    return await N.update_preferences(svc, actor, body)


@router.get("/notifications/stats", response_model=N.Stats, **RESPONSE_OPTIONS)
async def notification_stats(svc: ServicesDep, actor: CurrentActor) -> N.Stats:
    return await N.get_stats(svc, actor, N.Empty())


IdempotencyHeader = Annotated[str | None, Header(alias="Idempotency-Key")]


@router.post(
    "/admin/notifications", response_model=N.Notification, status_code=201, **RESPONSE_OPTIONS
)
async def create_notification(
    body: N.CreateNotification,
    svc: ServicesDep,
    actor: CurrentActor,
    idempotency_key: IdempotencyHeader = None,
) -> N.Notification:
    return await N.create_notification(svc, actor, body, idempotency_key)


@router.post(
    "/admin/notifications/broadcast",
    response_model=N.BroadcastResult,
    status_code=201,
    **RESPONSE_OPTIONS,
)
async def broadcast_notification(
    body: N.Broadcast,
    svc: ServicesDep,
    actor: CurrentActor,
    idempotency_key: IdempotencyHeader = None,
) -> N.BroadcastResult:
    return await N.broadcast(svc, actor, body, idempotency_key)


# -- rewards, recommendations, compliance, audit, jobs (SPEC §9) ---------------------------------


@router.get("/rewards/tiers", response_model=list[tiers.TierOut], **RESPONSE_OPTIONS)
async def reward_tiers(svc: ServicesDep, actor: CurrentActor) -> list[tiers.TierOut]:
    return await tiers.get_tiers(svc, actor, tiers.Empty())


@router.put("/rewards/tiers", response_model=list[tiers.TierOut], **RESPONSE_OPTIONS)
async def set_reward_tiers(
    body: tiers.TiersUpdate, svc: ServicesDep, actor: CurrentActor
) -> list[tiers.TierOut]:
    return await tiers.set_tiers(svc, actor, body)


@router.get("/me/tier", response_model=tiers.MyTier, **RESPONSE_OPTIONS)
async def my_tier(svc: ServicesDep, actor: CurrentActor) -> tiers.MyTier:
    return await tiers.get_my_tier(svc, actor, tiers.Empty())


@router.post(
    "/employees/{userId}/points",
    response_model=points.PointsAwarded,
    status_code=201,
    **RESPONSE_OPTIONS,
)
async def award_points(
    user_id: UserIdPath,
    body: points.PointsIn,
    svc: ServicesDep,
    actor: CurrentActor,
    idempotency_key: IdempotencyHeader = None,
) -> points.PointsAwarded:
    inp = points.AwardPoints(user_id=user_id, points=body.points, reason=body.reason)
    return await points.award_points(svc, actor, inp, idempotency_key)


@router.post(
    "/employees/{userId}/activity",
    response_model=points.ActivityOut,
    status_code=201,
    **RESPONSE_OPTIONS,
)
async def record_activity(
    user_id: UserIdPath, body: points.ActivityBody, svc: ServicesDep, actor: CurrentActor
) -> points.ActivityOut:
    return await points.record_activity(
        svc, actor, points.ActivityIn(user_id=user_id, kind=body.kind)
    )


@router.post(
    "/me/recommendations/{recommendationId}/{action}",
    response_model=feedback.FeedbackOut,
    **RESPONSE_OPTIONS,
)
async def recommendation_feedback(
    recommendation_id: Annotated[str, Path(alias="recommendationId", max_length=64)],
    action: feedback.Action,
    svc: ServicesDep,
    actor: CurrentActor,
) -> feedback.FeedbackOut:
    ref = feedback.RecommendationRef(recommendation_id=recommendation_id)
    return await feedback.ACTIONS[action](svc, actor, ref)


@router.post(
    "/admin/compliance-alerts",
    response_model=compliance.ComplianceScheduled,
    status_code=202,
    **RESPONSE_OPTIONS,
)
async def compliance_alert(
    body: compliance.ComplianceAlert, svc: ServicesDep, actor: CurrentActor
) -> compliance.ComplianceScheduled:
    return await compliance.compliance_alert(svc, actor, body)


@router.get("/audit", response_model=audit.AuditPage, **RESPONSE_OPTIONS)
async def audit_log(
    svc: ServicesDep, actor: CurrentActor, query: Annotated[audit.AuditListInput, Query()]
) -> audit.AuditPage:
    return await audit.list_audit(svc, actor, query)


@router.get("/jobs", response_model=list[jobs.JobOut], **RESPONSE_OPTIONS)
async def job_list(svc: ServicesDep, actor: CurrentActor) -> list[jobs.JobOut]:
    return await jobs.list_jobs(svc, actor, jobs.Empty())


# -- campaigns (SPEC §9 Campaigns) ----------------------------------------------------------------

CampaignPath = Annotated[int, Path(alias="campaignId", ge=1, le=MAX_INT)]


@router.post("/campaigns", response_model=C.CampaignOut, status_code=201, **RESPONSE_OPTIONS)
async def create_campaign(
    body: C.CampaignCreate, svc: ServicesDep, actor: CurrentActor
) -> C.CampaignOut:
    return await C.create_campaign(svc, actor, body)


@router.get("/campaigns", response_model=C.CampaignPage, **RESPONSE_OPTIONS)
async def list_campaigns(
    svc: ServicesDep, actor: CurrentActor, query: Annotated[C.CampaignListInput, Query()]
) -> C.CampaignPage:
    return await C.list_campaigns(svc, actor, query)


@router.get("/campaigns/{campaignId}", response_model=C.CampaignOut, **RESPONSE_OPTIONS)
async def get_campaign(
    campaign_id: CampaignPath, svc: ServicesDep, actor: CurrentActor
) -> C.CampaignOut:
    return await C.get_campaign(svc, actor, C.CampaignRef(campaign_id=campaign_id))


@router.post("/campaigns/{campaignId}/{action}", response_model=C.CampaignOut, **RESPONSE_OPTIONS)
async def campaign_action(
    campaign_id: CampaignPath,
    action: Literal["pause", "resume", "cancel"],
    svc: ServicesDep,
    actor: CurrentActor,
) -> C.CampaignOut:
    act = {"pause": C.pause_campaign, "resume": C.resume_campaign, "cancel": C.cancel_campaign}
    return await act[action](svc, actor, C.CampaignRef(campaign_id=campaign_id))


@router.get("/campaigns/{campaignId}/stats", response_model=C.CampaignStats, **RESPONSE_OPTIONS)
async def campaign_stats(
    campaign_id: CampaignPath, svc: ServicesDep, actor: CurrentActor
) -> C.CampaignStats:
    return await C.get_stats(svc, actor, C.CampaignRef(campaign_id=campaign_id))


@router.get(
    "/campaigns/{campaignId}/experiment", response_model=A.ExperimentOut, **RESPONSE_OPTIONS
)
async def campaign_experiment(
    campaign_id: CampaignPath,
    svc: ServicesDep,
    actor: CurrentActor,
    query: Annotated[A.ExperimentPlan, Query()],
) -> A.ExperimentOut:
    inp = A.ExperimentInput(campaign_id=campaign_id, **query.model_dump())
    return await A.get_experiment(svc, actor, inp)


# -- interventions and teams (SPEC §9 Crisis interventions, Managers) -----------------------------

InterventionPath = Annotated[int, Path(alias="interventionId", ge=1, le=MAX_INT)]


@router.get("/interventions", response_model=I.InterventionPage, **RESPONSE_OPTIONS)
async def list_interventions(
    svc: ServicesDep, actor: CurrentActor, query: Annotated[I.InterventionListInput, Query()]
) -> I.InterventionPage:
    return await I.list_interventions(svc, actor, query)


@router.get("/interventions/{interventionId}", response_model=I.InterventionOut, **RESPONSE_OPTIONS)
async def get_intervention(
    intervention_id: InterventionPath, svc: ServicesDep, actor: CurrentActor
) -> I.InterventionOut:
    return await I.get_intervention(svc, actor, I.InterventionRef(intervention_id=intervention_id))


@router.patch(
    "/interventions/{interventionId}", response_model=I.InterventionOut, **RESPONSE_OPTIONS
)
async def update_intervention(
    intervention_id: InterventionPath,
    body: I.InterventionChange,
    svc: ServicesDep,
    actor: CurrentActor,
) -> I.InterventionOut:
    inp = I.InterventionUpdate(intervention_id=intervention_id, status=body.status, note=body.note)
    return await I.update_intervention(svc, actor, inp)


@router.get("/me/intervention", response_model=I.MyIntervention, **RESPONSE_OPTIONS)
async def my_intervention(svc: ServicesDep, actor: CurrentActor) -> I.MyIntervention:
    return await I.get_my_intervention(svc, actor, I.Empty())


@router.get("/team/overview", response_model=team.TeamOverview, **RESPONSE_OPTIONS)
async def team_overview(
    svc: ServicesDep, actor: CurrentActor, query: Annotated[team.TeamInput, Query()]
) -> team.TeamOverview:
    return await team.get_overview(svc, actor, query)


@router.get("/team/alerts", response_model=team.TeamAlerts, **RESPONSE_OPTIONS)
async def team_alerts(
    svc: ServicesDep, actor: CurrentActor, query: Annotated[team.TeamInput, Query()]
) -> team.TeamAlerts:
    return await team.get_alerts(svc, actor, query)


# -- analytics (SPEC §10) ------------------------------------------------------------------------


@router.get("/analytics/transitions", response_model=A.TransitionsOut, **RESPONSE_OPTIONS)
async def analytics_transitions(
    svc: ServicesDep, actor: CurrentActor, query: Annotated[A.TransitionsInput, Query()]
) -> A.TransitionsOut:
    return await A.get_transitions(svc, actor, query)


@router.get("/analytics/cohorts", response_model=A.CohortsOut, **RESPONSE_OPTIONS)
async def analytics_cohorts(svc: ServicesDep, actor: CurrentActor) -> A.CohortsOut:
    return await A.get_cohorts(svc, actor, A.Empty())


@router.get("/analytics/churn", response_model=A.ChurnOut, **RESPONSE_OPTIONS)
async def analytics_churn(svc: ServicesDep, actor: CurrentActor) -> A.ChurnOut:
    return await A.get_churn(svc, actor, A.Empty())


@router.get("/analytics/intervention-effect", response_model=A.EffectOut, **RESPONSE_OPTIONS)
async def analytics_intervention_effect(
    svc: ServicesDep, actor: CurrentActor, query: Annotated[A.EffectInput, Query()]
) -> A.EffectOut:
    return await A.get_intervention_effect(svc, actor, query)


@router.get("/models", response_model=list[models.ModelOut], **RESPONSE_OPTIONS)
async def model_list(svc: ServicesDep, actor: CurrentActor) -> list[models.ModelOut]:
    return await models.list_models(svc, actor, models.Empty())
