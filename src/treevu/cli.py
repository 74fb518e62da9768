"""The ``treevu`` command (Typer): parses arguments, then calls services."""

from __future__ import annotations

import asyncio
import io
import json
import os
import socket
import sys
import traceback
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID
    from sqlalchemy import Engine

    from treevu.config import Settings
    from treevu.services.context import Services
    from treevu.services.notifications.store import NewNotification
    from treevu.services.people.importer import RowError
    from treevu.services.segmentation.recompute import RecomputeResult
from rich.console import Console

app = typer.Typer(
    help="Treevü Engage: notifications and financial-wellness segmentation. "
    "Add --debug to any command for the full traceback of a failure.",
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database migrations.")
segment_app = typer.Typer(help="Segmentation jobs.")
import_app = typer.Typer(help="Load users or employee inputs from CSV.")
jobs_app = typer.Typer(help="Scheduled jobs: list them, or run one now.")
app.add_typer(jobs_app, name="jobs")
models_app = typer.Typer(help="Risk models: train them on the stored history.")
app.add_typer(models_app, name="models")
keys_app = typer.Typer(help="Encryption keys.")
app.add_typer(db_app, name="db")
app.add_typer(segment_app, name="segment")
app.add_typer(import_app, name="import")
app.add_typer(keys_app, name="keys")
err = Console(stderr=True)
T = TypeVar("T")
#: Import errors printed at most (every error is found; the rest are counted).
ERRORS_SHOWN = 200
out = Console()


class StartupFailure(Exception):
    """What keeps a command from starting, as the lines that name the setting and the fix."""

    def __init__(self, *lines: str) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


def _settings() -> Settings:
    from pydantic import ValidationError

    from treevu.config import ASYNC_DRIVERS, Settings

    try:
        settings = Settings().with_local_secrets()
    except ValidationError as exc:
        raise StartupFailure(
            *(
                f"invalid setting TREEVU_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
                for e in exc.errors()
            )
        ) from exc
    scheme = os.environ.get("TREEVU_DATABASE_URL", "").split("://", 1)[0]
    if scheme in ASYNC_DRIVERS:
        err.print(f"note: TREEVU_DATABASE_URL {scheme}://… is read as {ASYNC_DRIVERS[scheme]}://…")
    _check_keys(settings)
    return settings


def _check_keys(settings: Settings) -> None:
    """A bad key is one line naming its variable (exit 2), not a traceback at start-up."""
    from treevu.notifications.crypto import DataCipher
    from treevu.services.auth import TokenVerifier

    checks = (
        ("TREEVU_ENCRYPTION_KEY", lambda: DataCipher(settings.encryption_key or "")),
        (
            "TREEVU_JWT_PUBLIC_KEY" if settings.jwt_public_key else "TREEVU_JWT_SECRET",
            lambda: TokenVerifier(settings),
        ),
    )
    for name, check in checks:
        try:
            check()
        except ValueError as exc:
            reason = str(exc).splitlines()[0].split(". See ")[0]
            raise StartupFailure(f"invalid setting {name}: {reason}") from exc


def _bulk_engine(settings: Settings) -> Any:
    from treevu.app import make_engines

    async_engine, bulk = make_engines(settings)
    async_engine.sync_engine.dispose()
    return bulk


def _require_migrated(settings: Settings) -> None:
    """A new or unmigrated database is one line naming the setting and ``treevu db upgrade``
    (exit 2); a SQLite file that does not exist is not created by looking at it."""
    from sqlalchemy import make_url

    from treevu.app import NotMigrated, check_migrated

    setting = _database_setting(settings.database_url)
    path = make_url(settings.sync_database_url).database
    if settings.is_sqlite and path not in (None, "", ":memory:") and not Path(path).exists():
        raise StartupFailure(
            f"cannot use the database {setting}: the file {path} does not exist; "
            "`treevu db upgrade` creates it"
        )
    try:
        check_migrated(settings)
    except NotMigrated as exc:
        raise StartupFailure(f"cannot use the database {setting}: {exc}") from exc


def _database_setting(url: str | None) -> str:
    """``TREEVU_DATABASE_URL=…`` as it is read, its password hidden."""
    from sqlalchemy import make_url
    from sqlalchemy.exc import ArgumentError

    if not url:
        return "TREEVU_DATABASE_URL (unset: the default SQLite file ./.treevu/treevu.db)"
    try:
        return f"TREEVU_DATABASE_URL={make_url(url).render_as_string()}"
    except ArgumentError:
        return "TREEVU_DATABASE_URL"


class _Bar:
    """Adapts ``(stage, done, total)`` progress callbacks to a rich progress bar."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._tasks: dict[str, TaskID] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage not in self._tasks:
            self._tasks[stage] = self._progress.add_task(stage, total=max(total, 1))
        self._progress.update(self._tasks[stage], completed=done, total=max(total, 1))


def _progress() -> Progress:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description:>16}"),
        BarColumn(),
        TextColumn("{task.completed:>10,}/{task.total:,}"),
        TimeElapsedColumn(),
        console=err,
        disable=not err.is_terminal,
    )


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply all migrations to the configured database."""
    from treevu.db.migrate import upgrade

    settings = _settings()
    settings.ensure_sqlite_dir()
    upgrade(settings.sync_database_url)
    out.print("database is at the newest migration")


@app.command()
def seed(
    users: Annotated[int, typer.Option(min=5, help="how many users in all")] = 2000,
    seed: Annotated[int, typer.Option(min=0, help="random seed: same seed, same data")] = 1,
    history_months: Annotated[
        int,
        typer.Option(
            min=0,
            max=36,
            help="also a synthetic history of this many past months, with known "
            "effects (docs/analytics.md); profiles are placed and this month's snapshot taken",
        ),
    ] = 0,
) -> None:
    """Write a deterministic synthetic company (replaces users with the same ids)."""
    from treevu.population import ADMIN_EMAIL, generate_population
    from treevu.services.people.seed import write_population

    settings = _settings()
    _require_migrated(settings)
    population = generate_population(users, seed)
    engine = _bulk_engine(settings)
    now = datetime.now(UTC)
    with _progress() as progress:
        write_population(engine, population, now=now, progress=_Bar(progress))
    out.print(f"seeded {users:,} users (seed {seed}); admin is {ADMIN_EMAIL}")
    if history_months:
        _seed_history(settings, engine, population, history_months, seed, now)


def _seed_history(
    settings: Settings, engine: Engine, population: Any, months: int, seed: int, now: datetime
) -> None:
    import json

    from treevu.services.people.seed import seed_history

    with _progress() as progress:
        history, truth = seed_history(
            engine,
            population,
            months,
            seed=seed,
            now=now,
            survey_valid_days=settings.survey_valid_days,
            progress=_Bar(progress),
        )
    out.print(
        f"history: {months} months before {history.months[-1]:%Y-%m} and this month's snapshot; "
        f"{truth['interventions']:,} interventions"
    )
    out.print("what is true of it (docs/analytics.md):")
    out.print_json(json.dumps(truth))


@segment_app.command("recompute")
def segment_recompute(
    all_users: Annotated[bool, typer.Option("--all", help="every active user")] = False,
    user: Annotated[int | None, typer.Option("--user", min=1, help="one user id")] = None,
) -> None:
    """Recompute profiles and segments; writes only what changed."""
    if all_users == (user is not None):
        err.print("[red]give exactly one of --all or --user ID[/red]")
        raise typer.Exit(2)
    settings = _settings()
    _require_migrated(settings)
    result = _recompute(settings, _bulk_engine(settings), None if user is None else [user])
    if user is not None and result.scored == 0:
        err.print(f"[red]user {user} has no inputs or is inactive[/red]")
        raise typer.Exit(1)
    out.print(
        f"scored {result.scored:,}, wrote {result.written:,} changed profiles, "
        f"{len(result.segment_changes):,} segment changes in {result.timings['total']:.2f}s"
    )
    _relay_events(settings)


def _recompute(settings: Settings, engine: Engine, user_ids: list[int] | None) -> RecomputeResult:
    """Recompute with a progress bar (profiles and their outbox events, one transaction)."""
    from treevu.segmentation.policy import default_policy
    from treevu.services.segmentation.recompute import recompute

    with _progress() as progress:
        result = recompute(
            engine,
            default_policy(),
            now=datetime.now(UTC),
            survey_valid_days=settings.survey_valid_days,
            user_ids=user_ids,
            progress=_Bar(progress),
        )
    engine.dispose()
    return result


def _relay_events(settings: Settings) -> None:
    """Turn the committed segment-change events into notifications now (a server's relay
    would do it too; whichever comes first does, exactly once)."""
    from treevu.faults import crash_point

    crash_point("recompute.committed")
    relayed = asyncio.run(_with_services(settings, lambda svc: svc.relay.drain()))
    if relayed:
        out.print(f"relayed {relayed:,} events to notifications")


async def _with_services(settings: Settings, run: Callable[[Services], Awaitable[T]]) -> T:
    """Services without a socket hub (the CLI's): the store, the relay, a publish-only broker."""
    from treevu.app import build_services, make_engines

    async_engine, bulk = make_engines(settings)
    services = build_services(settings, async_engine, bulk)
    await services.open()
    try:
        return await run(services)
    finally:
        await services.close()
        await async_engine.dispose()
        bulk.dispose()


@app.command()
def profile() -> None:
    """Read inputs as JSON lines on stdin; print one profile a line. Stores nothing."""
    from treevu.segmentation.engine import InputError, Inputs, profile_at, score
    from treevu.segmentation.policy import default_policy
    from treevu.segmentation.recommendations import recommendation_counts
    from treevu.segmentation.survey import SurveyError

    policy = default_policy()
    status = 0
    for number, line in enumerate(sys.stdin, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise InputError("line", "expected a JSON object")
            record = _with_survey(record)
            inputs = Inputs.from_records([record])
        except json.JSONDecodeError as exc:
            err.print(f"line {number}: not JSON: {exc.msg}")
            status = 1
            continue
        except (InputError, SurveyError) as exc:
            err.print(f"line {number}: {exc}")
            status = 1
            continue
        profiles = score(inputs, policy)
        p = profile_at(profiles, 0, policy)
        recommendation_count = int(recommendation_counts(inputs, profiles)[0])
        print(
            json.dumps(
                {
                    "wellnessScore": round(p.wellness_score, 2),
                    "fwiScore": round(p.fwi_score, 2),
                    "spendingLevel": p.spending_level,
                    "riskLevel": p.risk_level,
                    "engagementScore": round(p.engagement_score, 2),
                    "segment": p.segment,
                    "interventionType": p.intervention_type,
                    "rule": p.rule,
                    "reasons": p.reasons,
                    "recommendationCount": recommendation_count,
                    "policyVersion": policy.version,
                }
            )
        )
    raise typer.Exit(status)


def _with_survey(record: dict[str, Any]) -> dict[str, Any]:
    """``surveyAnswers``/``surveyAgeBand``/``surveyMode`` in place of ``surveyScore``."""
    from treevu.segmentation.engine import InputError
    from treevu.segmentation.survey import SurveyError, score_survey

    keys = ("surveyAnswers", "surveyAgeBand", "surveyMode")
    if not any(k in record for k in keys):
        return record
    if "surveyScore" in record:
        raise InputError("surveyScore", "give surveyScore or surveyAnswers, not both")
    for k in keys:
        if k not in record:
            raise InputError(k, "is required with surveyAnswers")
    try:
        result = score_survey(
            record["surveyAnswers"], record["surveyAgeBand"], record["surveyMode"]
        )
    except SurveyError as exc:
        names = {"answers": "surveyAnswers", "ageBand": "surveyAgeBand", "mode": "surveyMode"}
        head, bracket, index = exc.field.partition("[")
        raise InputError(names.get(head, head) + bracket + index, exc.detail) from exc
    rest = {k: v for k, v in record.items() if k not in keys}
    rest["surveyScore"] = result.scale_score
    return rest


def _import(kind: str, file: Path, skip_invalid: bool, recompute_after: bool = False) -> None:
    from treevu.services.people.importer import ImportRejected, import_inputs, import_users

    settings = _settings()
    _require_migrated(settings)
    if not file.is_file():
        err.print(f"[red]{file}: no such file[/red]")
        raise typer.Exit(2)
    engine = _bulk_engine(settings)
    run = import_users if kind == "users" else import_inputs
    raw = file.read_bytes()
    try:
        text = raw.decode("utf-8-sig")  # with or without a byte-order mark
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        err.print(
            f"[red]{file}: line {line}: not UTF-8 (byte 0x{raw[exc.start]:02X}); "
            "save the file as UTF-8 and import it again; nothing imported[/red]"
        )
        raise typer.Exit(1) from None
    try:
        report = run(
            engine, io.StringIO(text, newline=""), skip_invalid=skip_invalid, now=datetime.now(UTC)
        )
    except ImportRejected as exc:
        rows = _print_row_errors(file, exc.errors, "")
        err.print(f"[red]nothing imported: {len(exc.errors)} error(s) in {rows} row(s)[/red]")
        raise typer.Exit(1) from exc
    skipped = _print_row_errors(file, report.errors, " (skipped)")
    out.print(f"imported {report.applied:,} {kind}; skipped {skipped:,} rows")
    if recompute_after and report.user_ids:
        result = _recompute(settings, engine, report.user_ids)
        out.print(
            f"recomputed {result.scored:,} profiles: {result.written:,} changed, "
            f"{len(result.segment_changes):,} segment changes"
        )
        _relay_events(settings)


def _print_row_errors(file: Path, errors: Sequence[RowError], suffix: str) -> int:
    """The first ``ERRORS_SHOWN`` errors, one a line, and how many more; returns the rows."""
    for e in errors[:ERRORS_SHOWN]:
        err.print(f"{file}:{e}{suffix}", soft_wrap=True, markup=False, highlight=False)
    if len(errors) > ERRORS_SHOWN:
        err.print(f"… and {len(errors) - ERRORS_SHOWN:,} more errors")
    return len({e.line for e in errors})


@import_app.command("users")
def import_users_cmd(
    file: Annotated[Path, typer.Argument(help="CSV: id,email,name,role,managerId,department")],
    skip_invalid: Annotated[bool, typer.Option("--skip-invalid")] = False,
) -> None:
    """Load users; a bad row aborts the whole file unless --skip-invalid."""
    _import("users", file, skip_invalid)


@import_app.command("inputs")
def import_inputs_cmd(
    file: Annotated[Path, typer.Argument(help="CSV: userId plus the input names")],
    skip_invalid: Annotated[bool, typer.Option("--skip-invalid")] = False,
    no_recompute: Annotated[
        bool, typer.Option("--no-recompute", help="leave the profiles as they are")
    ] = False,
) -> None:
    """Load employee inputs and recompute the profiles of those people (their segment changes
    are notified); a bad row aborts the whole file unless --skip-invalid."""
    _import("inputs", file, skip_invalid, recompute_after=not no_recompute)


@app.command()
def token(
    user: Annotated[int | None, typer.Option("--user", min=1)] = None,
    email: Annotated[str | None, typer.Option("--email")] = None,
    ttl: Annotated[int, typer.Option("--ttl", min=1, help="seconds")] = 3600,
) -> None:
    """Mint a JWT for a user (sub = user id), signed with the configured secret."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from treevu.db import User
    from treevu.services.auth import mint_token

    if (user is None) == (email is None):
        err.print("[red]give exactly one of --user ID or --email EMAIL[/red]")
        raise typer.Exit(2)
    settings = _settings()
    engine = _bulk_engine(settings)
    with Session(engine) as session:
        stmt = select(User).where(User.id == user if user else User.email == email)
        found = session.scalar(stmt)
    if found is None:
        err.print(f"[red]no user {user if user else email}[/red]")
        raise typer.Exit(1)
    if not found.is_active:
        err.print(f"[red]user {found.id} is inactive[/red]")
        raise typer.Exit(1)
    try:
        print(mint_token(settings, found.id, ttl))
    except ValueError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc


@app.command()
def notify(
    user: Annotated[int, typer.Option("--user", min=1, help="recipient user id")],
    type_: Annotated[str, typer.Option("--type", help="notification type")],
    title: Annotated[str, typer.Option("--title")],
    message: Annotated[str, typer.Option("--message")],
    data: Annotated[str | None, typer.Option("--data", help="a JSON object")] = None,
) -> None:
    """Create and deliver one notification (through Redis when configured)."""
    from treevu.notifications.wire import NOTIFICATION_TYPES, check_data, check_text
    from treevu.services.notifications.store import NewNotification

    if type_ not in NOTIFICATION_TYPES:
        err.print(f"[red]--type: unknown type {type_!r}; one of {', '.join(NOTIFICATION_TYPES)}")
        raise typer.Exit(2)
    payload: dict[str, Any] | None = None
    if data is not None:
        try:
            payload = json.loads(data)
        except json.JSONDecodeError as exc:
            err.print(f"[red]--data: not JSON: {exc.msg}[/red]")
            raise typer.Exit(2) from exc
        if not isinstance(payload, dict):
            err.print("[red]--data: must be a JSON object[/red]")
            raise typer.Exit(2)
    if not title.strip() or not message.strip():
        err.print("[red]--title and --message must not be empty[/red]")
        raise typer.Exit(2)
    try:
        check_text("--title", title)
        check_text("--message", message)
        check_data(payload)
    except ValueError as exc:
        err.print(f"[red]{str(exc).replace('data', '--data', 1)}[/red]")
        raise typer.Exit(2) from exc
    settings = _settings()
    _require_migrated(settings)
    item = NewNotification(user, type_, title, message, payload)
    try:
        ids, muted = asyncio.run(_with_services(settings, lambda svc: _notify(svc, item)))
    except LookupError as exc:
        err.print(f"[red]--user: {exc}[/red]")
        raise typer.Exit(1) from exc
    if muted:
        out.print(f"user {user} has muted {type_} notifications; nothing sent")
    else:
        out.print(f"notification {ids[0]} created for user {user}")


async def _notify(services: Services, item: NewNotification) -> tuple[list[int], int]:
    """Store one notification; Redis (when configured) or a running server's tail delivers it."""
    from treevu.db import User
    from treevu.services.notifications.inbox import send
    from treevu.services.notifications.store import AuditEntry, CreateRequest

    async with services.sessions() as session:
        user = await session.get(User, item.user_id)
    if user is None or not user.is_active:
        raise LookupError(f"no active user {item.user_id}")
    audit = AuditEntry(None, "notification.create", {"userId": item.user_id, "via": "cli"})
    ids, muted, _ = await send(services, CreateRequest([item], audit=audit))
    return ids, muted


@app.command()
def openapi(
    out: Annotated[Path | None, typer.Option(help="write here instead of stdout")] = None,
) -> None:
    """Print the OpenAPI document of the HTTP API (what /openapi.json serves)."""
    from cryptography.fernet import Fernet

    from treevu.app import openapi_document
    from treevu.config import Settings

    settings = Settings(jwt_secret="-" * 32, encryption_key=Fernet.generate_key().decode())
    text = json.dumps(openapi_document(settings), indent=2, sort_keys=True) + "\n"
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text, encoding="utf-8")


@models_app.command("train")
def models_train(
    cards: Annotated[Path, typer.Option(help="where the model cards are written (NAME.md)")] = Path(
        "docs/models"
    ),
) -> None:
    """Fit, calibrate and evaluate the crisis and disengagement models on the stored history
    (split by time), store them as the active versions, write their model cards and score
    every profile with them."""
    from treevu.services.models import card, registry

    settings = _settings()
    _require_migrated(settings)
    engine = _bulk_engine(settings)
    try:
        trained = registry.train(engine, datetime.now(UTC))
    except ValueError as exc:
        err.print(f"[red]cannot train: {exc}[/red]", soft_wrap=True)
        raise typer.Exit(2) from exc
    for model in trained:
        fit, rule = model.metrics["model"], model.metrics["baseline"]
        path = card.write(model, cards)
        out.print(
            f"{model.name} v{model.version}: AUC {fit['auc']} (rule {rule['auc']}), "
            f"Brier {fit['brier']} (rule {rule['brier']}) on "
            f"{', '.join(model.metrics['testMonths'])}; card {path}",
            soft_wrap=True,
            highlight=False,
        )
    result = _recompute(settings, engine, None)
    out.print(f"scored {result.scored:,} profiles with the new models ({result.written:,} changed)")


@jobs_app.command("list")
def jobs_list() -> None:
    """Every scheduled job: scope, schedule, last run and next run."""
    from treevu.services.context import Actor
    from treevu.services.jobs import Empty as JobsEmpty
    from treevu.services.jobs import list_jobs

    settings = _settings()
    _require_migrated(settings)
    admin = Actor(0, "admin")
    listed = asyncio.run(_with_services(settings, lambda svc: list_jobs(svc, admin, JobsEmpty())))
    # One line a job, never wrapped (a terminal library's table folds its cells when piped).
    for job in listed:
        last = job.last_run
        ran = (
            "never run"
            if last is None
            else f"last {last.started_at:%Y-%m-%d %H:%M:%S} on {last.node or '-'}: "
            f"{'ok' if last.ok else 'FAILED'} {json.dumps(last.result)}"
        )
        out.print(
            f"{job.name:<18} {job.scope:<8} {job.schedule:<20} "
            f"next {job.next_run:%Y-%m-%d %H:%M:%S} UTC  {ran}",
            soft_wrap=True,
            highlight=False,
            markup=False,
        )


@jobs_app.command("run")
def jobs_run(name: Annotated[str, typer.Argument(help="a job from `treevu jobs list`")]) -> None:
    """Run a cluster job now (recorded and audited like a scheduled run)."""
    from treevu.services.errors import ServiceError
    from treevu.services.jobs import run_now as run_job_now

    settings = _settings()
    _require_migrated(settings)
    try:
        run = asyncio.run(_with_services(settings, lambda svc: run_job_now(svc, name)))
    except ServiceError as exc:
        err.print(f"[red]{exc.message}[/red]")
        raise typer.Exit(2) from exc
    status = "ok" if run.ok else "FAILED"
    out.print(f"{name}: {status} {json.dumps(run.result)}")
    if not run.ok:
        raise typer.Exit(1)


@keys_app.command("rotate")
def keys_rotate() -> None:
    """Re-encrypt stored notification data under the first TREEVU_ENCRYPTION_KEY."""
    from treevu.notifications.crypto import DataCipher
    from treevu.services.notifications.keys import rotate_stored_data

    settings = _settings()
    _require_migrated(settings)
    assert settings.encryption_key is not None
    cipher = DataCipher(settings.encryption_key)  # _settings() refused a bad key
    rotated = rotate_stored_data(_bulk_engine(settings), cipher)
    out.print(f"re-encrypted {rotated:,} notifications under the first key")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="default TREEVU_HOST")] = None,
    port: Annotated[int | None, typer.Option(min=1, max=65535)] = None,
    workers: Annotated[int, typer.Option(min=1)] = 1,
    role: Annotated[
        str | None,
        typer.Option(
            help="all (default TREEVU_ROLE): everything; api: HTTP, jobs and the outbox, no "
            "/ws; ws: /ws with the health and metrics routes only (a socket node)",
        ),
    ] = None,
) -> None:
    """Run the server (HTTP and WebSocket on one port)."""
    settings = _settings()
    if role is not None:
        from treevu.config import ROLES

        if role not in ROLES:
            err.print(f"[red]--role: {role!r} is not one of {', '.join(ROLES)}[/red]")
            raise typer.Exit(2)
        os.environ["TREEVU_ROLE"] = role  # for --workers, which read the environment
        settings = settings.model_copy(update={"role": role})
    _require_migrated(settings)
    if workers > 1 and not settings.redis_url:
        err.print("[red]--workers > 1 needs TREEVU_REDIS_URL (notifications fan out through it)")
        raise typer.Exit(2)
    _require_free_port(host or settings.host, port or settings.port, "treevu serve --port")
    _run(settings, host or settings.host, port or settings.port, workers)


def _require_free_port(host: str, port: int, how: str) -> None:
    """Exit 2 before announcing anything when ``port`` is taken (uvicorn would die later)."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # As uvicorn binds: connections of a previous server in TIME_WAIT do not make it "in use".
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        probe.bind((host, port))
    except OSError as exc:
        raise StartupFailure(
            f"port {port} on {host} is in use; pick another: {how} {port + 1}"
        ) from exc
    finally:
        probe.close()


def _run(settings: Settings, host: str, port: int, workers: int) -> None:
    # /ws through TreevuWebSocketProtocol: deflate without context takeover, the message-size
    # limit (1009), pings at the heartbeat interval.
    if workers > 1:
        # A light main module for the workers to import (treevu/workers.py), in this process.
        sys.stdout.flush()
        sys.stderr.flush()
        argv = [sys.executable, "-m", "treevu.workers", host, str(port), str(workers)]
        os.execv(sys.executable, argv)  # noqa: S606 (this interpreter, our own arguments)
    import uvicorn

    from treevu.app import create_app, tune_collector, ws_options

    ws = ws_options(settings)
    served = create_app(settings)
    tune_collector()
    uvicorn.run(served, host=host, port=port, log_level="info", **ws)


@app.command()
def demo(
    port: Annotated[int, typer.Option(min=1, max=65535)] = 3000,
    users: Annotated[int, typer.Option(min=5)] = 2000,
) -> None:
    """SQLite, a synthetic company, segmentation once, the server, and sign-in links."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from treevu.db import User
    from treevu.db.migrate import upgrade
    from treevu.population import ADMIN_EMAIL, generate_population
    from treevu.segmentation.policy import default_policy
    from treevu.services.auth import mint_token
    from treevu.services.people.seed import write_population
    from treevu.services.segmentation.recompute import recompute

    _require_free_port("127.0.0.1", port, "treevu demo --port")
    settings = _settings()
    settings.ensure_sqlite_dir()
    upgrade(settings.sync_database_url)
    engine = _bulk_engine(settings)
    with Session(engine) as session:
        has_admin = session.scalar(select(User.id).where(User.email == ADMIN_EMAIL))
    if has_admin is None:
        out.print(f"creating a synthetic company of {users:,} people …")
        write_population(engine, generate_population(users, 1), now=datetime.now(UTC))
    result = recompute(engine, default_policy(), now=datetime.now(UTC))
    out.print(f"segmentation: {result.scored:,} profiles, {result.written:,} written")
    with Session(engine) as session:
        people = {
            role: session.scalar(select(User).where(User.role == role).order_by(User.id))
            for role in ("employee", "manager", "counselor", "admin")
        }
    base = f"http://127.0.0.1:{port}"
    out.print(f"\nTreevü Engage is running on {base}  (API docs: {base}/docs)\n")
    for role, person in people.items():
        if person is None:
            continue
        jwt = mint_token(settings, person.id, 7 * 24 * 3600)
        out.print(f"[bold]{role:>9}[/bold] {person.name} <{person.email}>")
        # One line each, never wrapped: a folded link or command does not work when copied.
        out.print(f"{base}/app/#token={jwt}", soft_wrap=True, highlight=False)
        out.print(
            f"curl -H 'Authorization: Bearer {jwt}' {base}/api/v1/me",
            soft_wrap=True,
            highlight=False,
        )
    out.print("\nCtrl-C stops it; running `treevu demo` again reuses the data.\n")
    _run(settings, "127.0.0.1", port, 1)


def main() -> None:
    """``treevu``: a start-up failure (a setting, a key, the database, the port) is a line or
    two naming the setting and the fix, exit code 2; ``--debug`` anywhere on the command line
    shows the traceback of its cause before them. Each command imports what it uses, so that
    ``--help`` and the light commands start fast."""
    debug = "--debug" in sys.argv
    if debug:
        sys.argv.remove("--debug")
    try:
        app()
    except StartupFailure as failure:
        _explain(failure, failure.__cause__ or failure, debug)
    except Exception as exc:
        from sqlalchemy.exc import DBAPIError

        if not isinstance(exc, DBAPIError):
            raise
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
        setting = _database_setting(os.environ.get("TREEVU_DATABASE_URL"))
        unusable = StartupFailure(
            f"cannot use the database {setting}: {reason}",
            "check that the server runs and the database exists (create it on the server; "
            "`treevu db upgrade` creates its tables); --debug shows the traceback",
        )
        _explain(unusable, exc, debug)


def _explain(failure: StartupFailure, cause: BaseException, debug: bool) -> NoReturn:
    """Print the failure's lines (after the traceback of its cause with ``--debug``); exit 2."""
    if debug:
        traceback.print_exception(cause)
    for line in failure.lines:
        err.print(line, style="red", soft_wrap=True, markup=False, highlight=False)
    raise SystemExit(2)
