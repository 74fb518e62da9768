"""Settings from ``TREEVU_*`` environment variables (SPEC §1), built once at start-up."""

from __future__ import annotations

import base64
import importlib.util
import os
from pathlib import Path
from typing import Annotated, Final, Literal, get_args

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

DEFAULT_DATA_DIR = Path(".treevu")
#: URL schemes without a driver, and what they are read as (``postgres://…`` as many tools
#: write it, too). PostgreSQL has one driver, psycopg 3, for both the event loop and the bulk
#: path (COPY); ``postgresql+asyncpg://``, the spelling SPEC §1 shows, is read as it.
ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "mysql": "mysql+asyncmy",
    "mariadb": "mysql+asyncmy",
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "postgresql+asyncpg": "postgresql+psycopg",
}
#: The extra that installs each backend's drivers (``pip install 'treevu[postgres]'``).
DRIVER_EXTRAS = {
    "mysql+asyncmy": ("mysql", ("asyncmy", "pymysql")),
    "postgresql+psycopg": ("postgres", ("psycopg",)),
}
#: The synchronous twin of each async driver, for migrations and bulk jobs run off the loop
#: (psycopg is both: SQLAlchemy picks its async or sync side by the engine).
SYNC_DRIVERS = {
    "sqlite+aiosqlite": "sqlite+pysqlite",
    "mysql+asyncmy": "mysql+pymysql",
    "postgresql+psycopg": "postgresql+psycopg",
}


#: What ``treevu serve`` carries (``--role``, ``TREEVU_ROLE``).
Role = Literal["all", "api", "ws"]
ROLES: Final = get_args(Role)


class Settings(BaseSettings):
    """Everything configurable; see the README's configuration table."""

    model_config = SettingsConfigDict(env_prefix="TREEVU_", env_file=".env", extra="ignore")

    database_url: str = "sqlite+aiosqlite:///./.treevu/treevu.db"
    redis_url: str | None = None
    #: Pub/sub channel; default ``treevu:notifications:<redis db number>``.
    redis_channel: str | None = None
    jwt_secret: str | None = None
    jwt_public_key: str | None = None
    jwt_audience: str = "treevu"
    jwt_issuer: str | None = None
    jwt_leeway_seconds: int = Field(default=10, ge=0, le=30)
    host: str = "127.0.0.1"
    port: int = Field(default=3000, ge=1, le=65535)
    encryption_key: str | None = None
    data_dir: Path = DEFAULT_DATA_DIR
    heartbeat_interval: float = Field(default=30.0, gt=0)
    ws_auth_timeout: float = Field(default=10.0, gt=0)
    ws_queue_size: int = Field(default=1000, ge=8)
    sweep_interval: float = Field(default=2.0, gt=0)
    #: Sockets whose opening reads (user, unread count, replay) run at once, and how many more
    #: may wait; beyond that a socket is closed with 1013 and told to retry later.
    ws_opening_concurrency: int = Field(default=8, ge=1)
    ws_opening_queue: int = Field(default=500, ge=0)
    ws_busy_retry_after: float = Field(default=2.0, gt=0)
    #: Seconds between looks for notifications committed by other processes (no Redis).
    tail_interval: float = Field(default=0.2, gt=0)
    #: Seconds between outbox relay passes (a local commit wakes the relay at once).
    outbox_interval: float = Field(default=1.0, gt=0)
    ws_compression: bool = True
    #: What ``treevu serve`` carries: ``all``; ``api`` (HTTP, jobs, outbox; no ``/ws``); ``ws``
    #: (``/ws`` and the health and metrics routes only, nothing of the engine or the admin API).
    role: Role = "all"
    replay_bound: int = Field(default=500, ge=1)
    max_message_bytes: int = Field(default=64 * 1024, ge=256)
    #: Largest HTTP request body (413 beyond it).
    max_body_bytes: int = Field(default=2 * 1024 * 1024, ge=1024)
    #: Seconds a connection has to finish its request headers before it is closed.
    header_timeout: float = Field(default=10.0, gt=0)
    allowed_origins: Annotated[list[str], NoDecode] = []
    ws_messages_per_minute: int = Field(default=100, ge=1)
    admin_notifications_per_minute: int = Field(default=1000, ge=1)
    recompute_per_day: int = Field(default=1, ge=1)
    stats_cache_seconds: float = Field(default=3600.0, ge=0)
    survey_valid_days: int = Field(default=180, ge=1)
    #: Interval overrides of scheduled jobs, in seconds, by name (JSON; tests, operations).
    job_intervals: dict[str, Annotated[float, Field(gt=0)]] = {}

    @field_validator("allowed_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [o.strip() for o in value.split(",") if o.strip()]
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_installed(cls, value: str | None) -> str | None:
        if value and importlib.util.find_spec("redis") is None:
            raise ValueError("Redis needs the redis client: pip install 'treevu[redis]'")
        return value

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        try:
            url = make_url(value)
        except ArgumentError as exc:
            raise ValueError(f"not a database URL: {value!r}") from exc
        if url.drivername in ASYNC_DRIVERS:
            url = url.set(drivername=ASYNC_DRIVERS[url.drivername])
            value = url.render_as_string(hide_password=False)
        if url.drivername not in SYNC_DRIVERS:
            known = ", ".join(sorted(SYNC_DRIVERS))
            raise ValueError(f"unsupported driver {url.drivername!r}; use one of {known}")
        extra, modules = DRIVER_EXTRAS.get(url.drivername, ("", ()))
        missing = [m for m in modules if importlib.util.find_spec(m) is None]
        if missing:
            raise ValueError(
                f"{url.drivername} needs {', '.join(missing)}: pip install 'treevu[{extra}]'"
            )
        return value

    @model_validator(mode="after")
    def _one_key_kind(self) -> Settings:
        if self.jwt_secret and self.jwt_public_key:
            raise ValueError("set TREEVU_JWT_SECRET or TREEVU_JWT_PUBLIC_KEY, not both")
        return self

    @property
    def sync_database_url(self) -> str:
        url = make_url(self.database_url)
        return url.set(drivername=SYNC_DRIVERS[url.drivername]).render_as_string(
            hide_password=False
        )

    @property
    def pg_notify_channel(self) -> str | None:
        """On PostgreSQL without Redis: every store ``NOTIFY``s this channel in the transaction
        that adds notifications, and servers ``LISTEN`` to it (no polling delay)."""
        if self.redis_url or make_url(self.database_url).get_backend_name() != "postgresql":
            return None
        return "treevu_notifications"

    @property
    def is_sqlite(self) -> bool:
        return make_url(self.database_url).get_backend_name() == "sqlite"

    def with_local_secrets(self) -> Settings:
        """Fill an unset JWT secret and encryption key from files under ``data_dir``.

        The demo (and a bare ``serve``/``token`` on one machine) generate them once and keep them
        there, so that tokens minted by ``treevu token`` verify in ``treevu serve``.
        """
        updates: dict[str, str] = {}
        if not self.jwt_secret and not self.jwt_public_key:
            updates["jwt_secret"] = _kept_secret(self.data_dir / "jwt_secret")
        if not self.encryption_key:
            updates["encryption_key"] = _kept_secret(self.data_dir / "encryption_key")
        return self.model_copy(update=updates) if updates else self

    def ensure_sqlite_dir(self) -> None:
        url = make_url(self.database_url)
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)


def _kept_secret(path: Path) -> str:
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    # 32 random bytes, url-safe base64: valid as an HS256 secret and as a Fernet key.
    value = base64.urlsafe_b64encode(os.urandom(32)).decode()
    path.write_text(value + "\n")
    path.chmod(0o600)
    return value
