"""Dependency aliases declared once: handlers only parse, call a service, serialise."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from treevu.services.auth import AuthError, TokenVerifier
from treevu.services.context import Actor, Services
from treevu.services.errors import ServiceError
from treevu.services.people.users import get_user

bearer = HTTPBearer(auto_error=False, description="A JWT whose `sub` is the user id")


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def authenticate(services: Services, verifier: TokenVerifier, token: str) -> Actor:
    """Verify a token and load its user; missing or inactive users are refused."""
    try:
        claims = verifier.verify(token)
    except AuthError as exc:
        raise ServiceError("UNAUTHORIZED", exc.message) from exc
    user = await get_user(services, claims.user_id)
    if user is None or not user.is_active:
        raise ServiceError("UNAUTHORIZED", "invalid token: unknown or inactive user")
    return Actor(user_id=user.id, role=user.role, manager_id=user.manager_id)


async def current_actor(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Actor:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise ServiceError("UNAUTHORIZED", "missing bearer token")
    return await authenticate(
        get_services(request), request.app.state.verifier, credentials.credentials
    )


ServicesDep = Annotated[Services, Depends(get_services)]
CurrentActor = Annotated[Actor, Depends(current_actor)]
