"""A communiqué's deliveries in every state, made directly in the database.

The delivery pages' tests (tests/test_web_deliveries.py, tests/security/
test_delivery_visibility.py, tests/browser/test_pages.py) read this one scene:

- up.example answers: two deliveries delivered, one pending;
- down.example is failing: three held, and one more a worker holds right now (in flight);
- gone.example is unavailable: one skipped, one pending (its probe);
- refuse.example refused: one failed, "HTTP 403".

Its inboxes name people (``/users/someone-at-risk/inbox``): no page may show them to the
public. Times are around ``now``, the caller's clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from server.models import Delivery, DeliveryHost, DeliveryStatus, HostState

MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)

UP, DOWN, GONE, REFUSE = "up.example", "down.example", "gone.example", "refuse.example"
HOSTS = (UP, DOWN, GONE, REFUSE)
DOWN_ERROR = "connect timeout after 5 s"
GONE_ERROR = "no answer from the server"
REFUSED = "HTTP 403 from refuse.example"
ERRORS = (DOWN_ERROR, GONE_ERROR, REFUSED)


@dataclass(frozen=True)
class Scene:
    held: list[int]  # down.example's held deliveries, oldest first
    in_flight: int  # down.example's delivery a worker holds
    inboxes: list[str]


def inbox(host: str, n: int) -> str:
    return f"https://{host}/users/someone-at-risk-{n}/inbox"


async def add_scene(session: AsyncSession, activity_id: int, *, now: datetime) -> Scene:
    """Add the scene's hosts and deliveries (of the activity ``activity_id``)."""
    session.add_all(
        [
            DeliveryHost(
                host=DOWN,
                state=HostState.FAILING,
                failures=6,
                failing_since=now - 2 * HOUR,
                last_error=DOWN_ERROR,
                last_failure_at=now - 10 * MINUTE,
                next_probe_at=now + 10 * MINUTE,
            ),
            DeliveryHost(
                host=GONE,
                state=HostState.UNAVAILABLE,
                failures=40,
                failing_since=now - 8 * DAY,
                unavailable_since=now - DAY,
                last_error=GONE_ERROR,
                last_failure_at=now - HOUR,
                next_probe_at=now + 6 * HOUR,
            ),
        ]
    )

    def row(host: str, n: int, status: DeliveryStatus, **kw: object) -> Delivery:
        values: dict[str, object] = {
            "next_attempt_at": now + 3 * HOUR,
            "created_at": now - HOUR,
            "attempts": 0,
        }
        values.update(kw)
        return Delivery(
            activity_id=activity_id,
            inbox_uri=inbox(host, n),
            host=host,
            status=status,
            **values,
        )

    held = [row(DOWN, n, DeliveryStatus.PENDING, attempts=2) for n in (1, 2, 3)]
    in_flight = row(DOWN, 4, DeliveryStatus.PENDING, claimed_until=now + 5 * MINUTE)
    rows = [
        row(UP, 1, DeliveryStatus.DELIVERED, attempts=1, delivered_at=now - HOUR),
        row(UP, 2, DeliveryStatus.DELIVERED, attempts=1, delivered_at=now - HOUR),
        row(UP, 3, DeliveryStatus.PENDING, next_attempt_at=now + 5 * MINUTE),
        *held,
        in_flight,
        row(GONE, 1, DeliveryStatus.SKIPPED, last_error="host unavailable"),
        row(GONE, 2, DeliveryStatus.PENDING),
        row(REFUSE, 1, DeliveryStatus.FAILED, attempts=1, last_status=403, last_error=REFUSED),
    ]
    session.add_all(rows)
    await session.flush()
    return Scene(
        held=[r.id for r in held],
        in_flight=in_flight.id,
        inboxes=[r.inbox_uri for r in rows],
    )
