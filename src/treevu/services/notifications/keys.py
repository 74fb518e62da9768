"""Encryption-key rotation of stored notification data (``treevu keys rotate``)."""

from __future__ import annotations

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from treevu.db import NotificationQueue
from treevu.notifications.crypto import DataCipher

#: Rows re-encrypted per transaction (a long rotation never holds one huge transaction).
BATCH = 1000


def rotate_stored_data(engine: Engine, cipher: DataCipher) -> int:
    """Re-encrypt every stored notification's sensitive data under the cipher's first key,
    a batch per transaction in id order; returns how many rows changed."""
    rotated = 0
    last = 0
    while True:
        with Session(engine) as session, session.begin():
            batch = list(
                session.scalars(
                    select(NotificationQueue)
                    .where(NotificationQueue.id > last, NotificationQueue.data.is_not(None))
                    .order_by(NotificationQueue.id)
                    .limit(BATCH)
                )
            )
            for row in batch:
                new = cipher.rotate(row.data)
                if new != row.data:
                    row.data = new
                    rotated += 1
            if not batch:
                return rotated
            last = batch[-1].id  # read before the commit expires it
