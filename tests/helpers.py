"""Small helpers shared by tests: set up assemblies, drive the worker, inspect rows."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from server import assemblies, communiques
from server.context import Context
from server.models import Base


async def approved_assembly(ctx: Context, handle: str = "libertyplaza", **kw: Any) -> None:
    async with ctx.sessions() as session, session.begin():
        await assemblies.create(
            session, handle=handle, name=kw.pop("name", "Liberty Plaza General Assembly"), **kw
        )
        await assemblies.approve(session, handle, now=ctx.clock())


async def post(ctx: Context, handle: str, text: str, language: str = "en") -> communiques.Published:
    async with ctx.sessions() as session, session.begin():
        return await communiques.publish(
            session, ctx.urls, handle=handle, source=text, language=language, now=ctx.clock()
        )


async def count(ctx: Context, model: type[Base], *where: Any) -> int:
    async with ctx.sessions() as session:
        query = select(func.count()).select_from(model)
        for clause in where:
            query = query.where(clause)
        return int(await session.scalar(query) or 0)
