"""Sensitive notification fields are encrypted at rest, and keys rotate."""

from __future__ import annotations

import json

import pytest
from cryptography.fernet import Fernet

from treevu.notifications.crypto import DataCipher

OLD, NEW = Fernet.generate_key().decode(), Fernet.generate_key().decode()


def test_seal_encrypts_only_sensitive_fields_and_open_restores() -> None:
    cipher = DataCipher(OLD)
    data = {"amount": 125.5, "tierName": "Sprout", "balance": {"checking": 10}}
    sealed = cipher.seal(data)
    assert sealed is not None and sealed["tierName"] == "Sprout"
    assert set(sealed["amount"]) == {"$enc"} and "125.5" not in json.dumps(sealed)
    assert cipher.open(sealed) == data
    assert cipher.seal(None) is None and cipher.open({}) == {}


def test_rotation_old_key_still_decrypts_then_rotate_moves_to_new() -> None:
    sealed_old = DataCipher(OLD).seal({"amount": 7})
    both = DataCipher(f"{NEW},{OLD}")
    assert both.open(sealed_old) == {"amount": 7}
    rotated = both.rotate(sealed_old)
    assert DataCipher(NEW).open(rotated) == {"amount": 7}
    # A retired key's ciphertext never leaks: it opens to None.
    assert DataCipher(NEW).open(sealed_old) == {"amount": None}


def test_bad_keys_are_a_clear_error() -> None:
    with pytest.raises(ValueError, match="Fernet"):
        DataCipher("not-a-key")
    with pytest.raises(ValueError, match="empty"):
        DataCipher(" , ")
