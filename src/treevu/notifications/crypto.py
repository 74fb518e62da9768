"""Encryption at rest of the sensitive fields of a notification's ``data``.

A field whose name is in ``SENSITIVE_FIELDS`` is stored as ``{"$enc": "<Fernet token>"}`` and
decrypted only when the notification leaves the server. Keys rotate with MultiFernet:
``TREEVU_ENCRYPTION_KEY`` may hold several comma-separated keys — the first encrypts, all
decrypt — and ``rotate`` re-encrypts a stored value under the first key.
"""

from __future__ import annotations

import json
from typing import Any, Final

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

SENSITIVE_FIELDS: Final = frozenset(
    {
        "amount",
        "balance",
        "income",
        "monthlyIncome",
        "monthlySpending",
        "savingsBalance",
        "monthlyDebtPayments",
        "debt",
        "savings",
        "fwiScore",
        "wellnessScore",
        "accountNumber",
        "counselorNotes",
    }
)
ENC: Final = "$enc"


class DataCipher:
    def __init__(self, keys: str) -> None:
        parts = [k.strip() for k in keys.split(",") if k.strip()]
        if not parts:
            raise ValueError("TREEVU_ENCRYPTION_KEY is empty")
        try:
            self._fernet = MultiFernet([Fernet(k.encode()) for k in parts])
        except ValueError as exc:
            raise ValueError(
                "TREEVU_ENCRYPTION_KEY must be Fernet keys (32 url-safe base64 bytes)"
            ) from exc

    def seal(self, data: dict[str, Any] | None) -> dict[str, Any] | None:
        """``data`` with its sensitive top-level fields encrypted."""
        if not data:
            return data
        return {
            k: {ENC: self._fernet.encrypt(json.dumps(v).encode()).decode()}
            if k in SENSITIVE_FIELDS
            else v
            for k, v in data.items()
        }

    def open(self, data: dict[str, Any] | None) -> dict[str, Any] | None:
        if not data:
            return data
        return {k: self._open_value(v) for k, v in data.items()}

    def _open_value(self, value: Any) -> Any:
        if isinstance(value, dict) and set(value) == {ENC}:
            try:
                return json.loads(self._fernet.decrypt(value[ENC].encode()))
            except InvalidToken:
                return None  # a key that was retired too early: never leak the ciphertext
        return value

    def rotate(self, data: dict[str, Any] | None) -> dict[str, Any] | None:
        if not data:
            return data
        return {
            k: {ENC: self._fernet.rotate(v[ENC].encode()).decode()}
            if isinstance(v, dict) and set(v) == {ENC}
            else v
            for k, v in data.items()
        }
