"""The notification wire format of SPEC §4 — the one module that spells it.

A notification is ``{"id", "type", "title", "message", "data", "timestamp", "read"}``; on the
socket it travels inside ``{"type": "notification", "notification": …}``. The limits on what a
notification may carry are here too, so that every way in (REST, tRPC, CLI, jobs) refuses the
same things before a database does.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Any, Final, Literal, get_args

NotificationType = Literal[
    "tier_upgrade", "milestone", "compliance_alert", "recommendation", "intervention_update"
]
NOTIFICATION_TYPES: Final[tuple[NotificationType, ...]] = get_args(NotificationType)
#: Status values of ``notification_queue`` that count as unread, and as not yet acknowledged.
UNREAD: Final = ("pending", "sent", "delivered")
UNACKED: Final = ("pending", "sent")

#: ``data`` limits: nesting (MariaDB refuses JSON deeper than 32) and encoded size.
MAX_DATA_DEPTH: Final = 16
MAX_DATA_BYTES: Final = 32 * 1024

FRAME_HEAD: Final = '{"type":"notification","notification":{"id":'


def iso(ts: datetime) -> str:
    return ts.isoformat().replace("+00:00", "Z")


def notification(
    nid: int,
    type_: str,
    title: str,
    message: str,
    data: dict[str, Any] | None,
    created_at: datetime,
    read: bool,
) -> dict[str, Any]:
    """A notification exactly as SPEC §4 shows it."""
    return {
        "id": nid,
        "type": type_,
        "title": title,
        "message": message,
        "data": data or {},
        "timestamp": iso(created_at),
        "read": read,
    }


def frame(notification: dict[str, Any]) -> str:
    """The socket frame carrying ``notification``."""
    return json.dumps({"type": "notification", "notification": notification}, separators=(",", ":"))


def frame_tail(
    type_: str, title: str, message: str, data: dict[str, Any] | None, timestamp: str
) -> str:
    """Everything of :func:`frame`'s text after the id: ``,"type":…,"read":false}}``.

    ``FRAME_HEAD + str(id) + tail`` is the frame of a new notification; a broadcast shares one
    tail between all its notifications, so it is encoded once per batch.
    """
    rest = json.dumps(
        {
            "type": type_,
            "title": title,
            "message": message,
            "data": data or {},
            "timestamp": timestamp,
            "read": False,
        },
        separators=(",", ":"),
    )
    return "," + rest[1:] + "}"


def check_text(name: str, value: str) -> str:
    """Text every database stores: no NUL character (PostgreSQL refuses it)."""
    if "\x00" in value:
        raise ValueError(f"{name}: must not contain a NUL character")
    return value


def check_data(data: dict[str, Any] | None) -> dict[str, Any] | None:
    """Refuse what a database would: nesting deeper than ``MAX_DATA_DEPTH``, more than
    ``MAX_DATA_BYTES`` of JSON, NaN or infinite numbers, NUL characters. Raises ValueError
    naming the problem."""
    if data is None:
        return None
    _check_value(data, "data", 1)
    try:
        size = len(json.dumps(data, allow_nan=False, separators=(",", ":")).encode())
    except (TypeError, ValueError) as exc:
        raise ValueError(f"data: not JSON: {exc}") from None
    if size > MAX_DATA_BYTES:
        raise ValueError(f"data: {size} bytes of JSON; at most {MAX_DATA_BYTES}")
    return data


def _check_value(value: Any, path: str, depth: int) -> None:
    if isinstance(value, dict | list):
        if depth > MAX_DATA_DEPTH:
            raise ValueError(f"{path}: nested deeper than {MAX_DATA_DEPTH} levels")
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            if isinstance(key, str):
                check_text(f"{path} key", key)
            _check_value(
                item, f"{path}.{key}" if isinstance(value, dict) else f"{path}[{key}]", depth + 1
            )
    elif isinstance(value, str):
        check_text(path, value)
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{path}: must be a finite number")
