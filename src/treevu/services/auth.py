"""JWT verification and minting (SPEC §7).

Algorithms are pinned by the key kind — a shared secret allows only HS256, a public key only the
algorithm its type implies (RS256 for RSA, ES256 for EC) — so ``alg: none`` and key-confusion
tokens are refused. ``exp`` and ``sub`` are required, ``nbf`` honoured, ``aud`` always checked and
``iss`` when configured, with a small leeway.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from treevu.config import Settings


class AuthError(Exception):
    """A token that must be refused; ``reason`` tells an expired one from any other."""

    def __init__(self, reason: Literal["invalid", "expired"], message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True, slots=True)
class Claims:
    user_id: int
    expires_at: float


class TokenVerifier:
    def __init__(self, settings: Settings) -> None:
        self._audience = settings.jwt_audience
        self._issuer = settings.jwt_issuer
        self._leeway = settings.jwt_leeway_seconds
        self._key: str | rsa.RSAPublicKey | ec.EllipticCurvePublicKey
        if settings.jwt_public_key:
            key = load_pem_public_key(settings.jwt_public_key.encode())
            if isinstance(key, rsa.RSAPublicKey):
                self._algorithms = ["RS256"]
            elif isinstance(key, ec.EllipticCurvePublicKey):
                self._algorithms = ["ES256"]
            else:
                raise ValueError("TREEVU_JWT_PUBLIC_KEY must be an RSA or EC public key")
            self._key = key
        elif settings.jwt_secret:
            self._algorithms = ["HS256"]
            self._key = settings.jwt_secret
        else:
            raise ValueError("no JWT key configured (TREEVU_JWT_SECRET or TREEVU_JWT_PUBLIC_KEY)")

    def verify(self, token: str) -> Claims:
        try:
            payload = jwt.decode(
                token,
                self._key,
                algorithms=self._algorithms,
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": ["exp", "sub"], "verify_iss": self._issuer is not None},
            )
        except jwt.ExpiredSignatureError as exc:
            raise AuthError("expired", "token expired") from exc
        except jwt.PyJWTError as exc:
            raise AuthError("invalid", f"invalid token: {exc}") from exc
        sub = payload["sub"]
        if not isinstance(sub, str) or not sub.isdigit():
            raise AuthError("invalid", "invalid token: sub must be a user id")
        return Claims(user_id=int(sub), expires_at=float(payload["exp"]))


def mint_token(settings: Settings, user_id: int, ttl_seconds: int) -> str:
    """An HS256 token for ``user_id`` (operators and tests); needs the shared secret."""
    if not settings.jwt_secret:
        raise ValueError(
            "treevu token signs with TREEVU_JWT_SECRET; with a public key configured, "
            "tokens come from your identity provider"
        )
    now = int(time.time())
    claims: dict[str, object] = {
        "sub": str(user_id),
        "aud": settings.jwt_audience,
        "iat": now,
        "nbf": now,
        "exp": now + ttl_seconds,
    }
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    return jwt.encode(claims, settings.jwt_secret, algorithm="HS256")
