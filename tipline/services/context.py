"""What every service works against: database sessions, keys, settings and a clock.

Services are called as `service.action(ctx, ...)` (or hold a `ctx`, for the long-lived workers),
with one `ServiceContext` built by the runtime. Tests build theirs from the same runtime, so a
test calls a service exactly as the console and the command line do.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.orm import Session, sessionmaker

from tipline.config import Settings
from tipline.core.crypto import Keyring
from tipline.storage.keystore import KeyStore
from tipline.storage.models import utcnow


@dataclass(frozen=True)
class ServiceContext:
    factory: sessionmaker[Session]
    keys: KeyStore
    settings: Settings
    clock: Callable[[], dt.datetime] = field(default=utcnow)

    @property
    def keyring(self) -> Keyring:
        """The keys as of now (a rotation elsewhere is picked up within a second)."""
        return self.keys.keyring

    def now(self) -> dt.datetime:
        return self.clock()
