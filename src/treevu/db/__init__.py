"""SQLAlchemy models, re-exported; migrations live in ``treevu.db.migrations``."""

from treevu.db.base import Base, UtcDateTime, utcnow
from treevu.db.engagement import (
    RECOMMENDATION_EVENT_KINDS,
    Achievement,
    AuditLog,
    PointRule,
    PointsEntry,
    RecommendationEvent,
    RewardTier,
)
from treevu.db.inputs import EmployeeInputs, SurveyResponse
from treevu.db.jobs import JobRun
from treevu.db.notifications import (
    NOTIFICATION_STATUSES,
    IdempotencyKey,
    NotificationPreferences,
    NotificationQueue,
    WebsocketConnection,
)
from treevu.db.outbox import ACHIEVEMENTS_CHECK, COMPLIANCE_BATCH, SEGMENT_CHANGED, OutboxEvent
from treevu.db.programs import Campaign, CampaignDelivery, Intervention
from treevu.db.segments import (
    AnalyticsResult,
    EmployeeSegment,
    PredictionModel,
    ProfileSnapshot,
    SegmentHistory,
)
from treevu.db.users import ROLES, User

__all__ = [
    "NOTIFICATION_STATUSES",
    "RECOMMENDATION_EVENT_KINDS",
    "ROLES",
    "ACHIEVEMENTS_CHECK",
    "COMPLIANCE_BATCH",
    "SEGMENT_CHANGED",
    "Achievement",
    "AnalyticsResult",
    "AuditLog",
    "Base",
    "Campaign",
    "CampaignDelivery",
    "EmployeeInputs",
    "EmployeeSegment",
    "IdempotencyKey",
    "Intervention",
    "JobRun",
    "NotificationPreferences",
    "NotificationQueue",
    "OutboxEvent",
    "PredictionModel",
    "ProfileSnapshot",
    "PointRule",
    "PointsEntry",
    "RecommendationEvent",
    "RewardTier",
    "SegmentHistory",
    "SurveyResponse",
    "User",
    "UtcDateTime",
    "WebsocketConnection",
    "utcnow",
]
