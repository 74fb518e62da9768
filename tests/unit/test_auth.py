"""JWT verification refuses every token SPEC §7 says it must."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from treevu.config import Settings
from treevu.services.auth import AuthError, TokenVerifier, mint_token

SECRET = "unit-test-secret-0123456789abcdef0123456789"


def settings(**kw: Any) -> Settings:
    base: dict[str, Any] = {"jwt_secret": SECRET}
    base.update(kw)
    return Settings.model_validate(base)


def claims(**kw: Any) -> dict[str, Any]:
    now = int(time.time())
    c: dict[str, Any] = {"sub": "42", "aud": "treevu", "iat": now, "exp": now + 600}
    c.update(kw)
    return {k: v for k, v in c.items() if v is not None}


def refused(verifier: TokenVerifier, token: str, reason: str = "invalid") -> AuthError:
    with pytest.raises(AuthError) as info:
        verifier.verify(token)
    assert info.value.reason == reason
    return info.value


def test_minted_token_verifies() -> None:
    s = settings()
    assert TokenVerifier(s).verify(mint_token(s, 7, 60)).user_id == 7


def test_alg_none_refused() -> None:
    header = jwt.utils.base64url_encode(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    body = jwt.utils.base64url_encode(json.dumps(claims()).encode())
    token = (header + b"." + body + b".").decode()
    refused(TokenVerifier(settings()), token)


def test_wrong_key_refused() -> None:
    token = jwt.encode(claims(), "another-secret-0123456789abcdef0123456789", algorithm="HS256")
    refused(TokenVerifier(settings()), token)


def test_expired_refused_as_expired() -> None:
    token = jwt.encode(claims(exp=int(time.time()) - 60), SECRET, algorithm="HS256")
    refused(TokenVerifier(settings()), token, "expired")


def test_leeway_is_small() -> None:
    token = jwt.encode(claims(exp=int(time.time()) - 5), SECRET, algorithm="HS256")
    assert TokenVerifier(settings(jwt_leeway_seconds=10)).verify(token).user_id == 42
    with pytest.raises(ValueError):
        settings(jwt_leeway_seconds=31)


def test_not_yet_valid_refused() -> None:
    token = jwt.encode(claims(nbf=int(time.time()) + 300), SECRET, algorithm="HS256")
    refused(TokenVerifier(settings()), token)


def test_wrong_audience_refused_and_missing_audience_refused() -> None:
    v = TokenVerifier(settings())
    refused(v, jwt.encode(claims(aud="someone-else"), SECRET, algorithm="HS256"))
    refused(v, jwt.encode(claims(aud=None), SECRET, algorithm="HS256"))


def test_issuer_checked_when_configured() -> None:
    v = TokenVerifier(settings(jwt_issuer="https://idp.example"))
    refused(v, jwt.encode(claims(iss="https://evil.example"), SECRET, algorithm="HS256"))
    refused(v, jwt.encode(claims(), SECRET, algorithm="HS256"))
    ok = jwt.encode(claims(iss="https://idp.example"), SECRET, algorithm="HS256")
    assert v.verify(ok).user_id == 42


def test_missing_exp_refused() -> None:
    token = jwt.encode(claims(exp=None), SECRET, algorithm="HS256")
    refused(TokenVerifier(settings()), token)


def test_sub_must_be_a_user_id() -> None:
    refused(TokenVerifier(settings()), jwt.encode(claims(sub="alice"), SECRET, algorithm="HS256"))
    refused(TokenVerifier(settings()), jwt.encode(claims(sub=None), SECRET, algorithm="HS256"))


def _pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def test_rs256_with_public_key_and_key_confusion_refused() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = _pem(key)
    v = TokenVerifier(settings(jwt_secret=None, jwt_public_key=pem))
    assert v.verify(jwt.encode(claims(), key, algorithm="RS256")).user_id == 42
    # HS256 signed with the public key's text: the classic key-confusion attack.
    header = jwt.utils.base64url_encode(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = jwt.utils.base64url_encode(json.dumps(claims()).encode())
    mac = hmac.new(pem.encode(), header + b"." + body, hashlib.sha256).digest()
    forged = (header + b"." + body + b"." + jwt.utils.base64url_encode(mac)).decode()
    refused(v, forged)
    refused(v, jwt.encode(claims(), SECRET, algorithm="HS256"))
    other = ec.generate_private_key(ec.SECP256R1())
    refused(v, jwt.encode(claims(), other, algorithm="ES256"))


def test_es256_with_public_key() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    v = TokenVerifier(settings(jwt_secret=None, jwt_public_key=_pem(key)))
    assert v.verify(jwt.encode(claims(), key, algorithm="ES256")).user_id == 42
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    refused(v, jwt.encode(claims(), rsa_key, algorithm="RS256"))


def test_secret_and_public_key_together_is_a_setting_error() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(ValueError, match="not both"):
        settings(jwt_public_key=_pem(key))


def test_mint_needs_the_secret() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(ValueError, match="identity provider"):
        mint_token(settings(jwt_secret=None, jwt_public_key=_pem(key)), 1, 60)
