"""What a hostile inbox answers cannot jam our delivery records.

An answer's body is kept (the start of it) as the delivery's last error, shown to
facilitators and admins. A body with NUL and other control characters must still be
recorded: PostgreSQL refuses NUL in text, and a row whose attempt cannot be written would
be sent again at every lease's end, for ever, without ever counting an attempt.
"""

from __future__ import annotations

from sqlalchemy import select

from server import worker
from server.context import Context
from server.models import Delivery, DeliveryAttempt, DeliveryStatus
from tests.helpers import approved_assembly, post
from tests.support.sinks import Sinks
from tests.test_delivery_slots import follow_from


async def test_an_answer_full_of_control_characters_is_recorded_cleaned(ctx: Context) -> None:
    with Sinks() as sinks:
        hostile = sinks.live(status=500, answer=b"down\x00\x00 for\x1b[31m maintenance\r\n\x07!")
        await approved_assembly(ctx, "plaza")
        await follow_from(ctx, "plaza", [hostile.inbox()])
        await post(ctx, "plaza", "Assembly tonight.")
        assert await worker.run_once(ctx) == 1
    assert len(hostile.received) == 1
    async with ctx.sessions() as session:
        row = (await session.scalars(select(Delivery))).one()
        attempt = (await session.scalars(select(DeliveryAttempt))).one()
    assert row.status is DeliveryStatus.PENDING and row.attempts == 1 and row.last_status == 500
    assert row.claim_token is None  # recorded, not left to its lease
    assert row.last_error == attempt.error == "down for[31m maintenance\n!"
    # Retried on the schedule, not at once.
    assert row.next_attempt_at > row.created_at
