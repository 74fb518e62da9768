"""Prometheus metrics, on a registry owned by the app (not the process-global one)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.active_connections = Gauge(
            "treevu_ws_active_connections", "Open authenticated WebSocket connections", registry=r
        )
        self.delivered = Counter(
            "treevu_notifications_delivered_total",
            "Notification frames written to a socket",
            registry=r,
        )
        self.created = Counter(
            "treevu_notifications_created_total", "Notifications committed", ["type"], registry=r
        )
        self.delivery_latency = Histogram(
            "treevu_notification_delivery_seconds",
            "From commit to written on a socket",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.reconnections = Counter(
            "treevu_ws_reconnections_total", "Connections that resumed from a last id", registry=r
        )
        self.queue_depth = Gauge(
            "treevu_ws_queue_depth", "Frames waiting in per-connection queues", registry=r
        )
        self.closed = Counter(
            "treevu_ws_closed_total", "Connections closed by the server", ["code"], registry=r
        )
        self.segment_size = Gauge(
            "treevu_segment_size", "Employees per segment", ["segment"], registry=r
        )
        self.read_rate = Gauge(
            "treevu_notification_read_rate", "Share of delivered notifications read", registry=r
        )
        self.click_rate = Gauge(
            "treevu_notification_click_rate",
            "Share of delivered notifications clicked",
            registry=r,
        )
        self.recommendation_click_rate = Gauge(
            "treevu_recommendation_click_rate",
            "Recommendation clicks per impression (an item shown in a person's own list)",
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
