import os
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

# DATABASE_URL=mysql+asyncmy://user:password@127.0.0.1:3306/db
engine = create_async_engine(os.environ["DATABASE_URL"], pool_size=10)
Session = async_sessionmaker(engine, expire_on_commit=False)


async def get_session() -> AsyncIterator[AsyncSession]:
    async with Session() as session, session.begin():  # commits, or rolls back
        yield session


app = FastAPI()


@app.post("/items", status_code=201)
async def create_item(
    name: str, price: int, session: Annotated[AsyncSession, Depends(get_session)]
):
    result = await session.execute(
        text("INSERT INTO items (name, price) VALUES (:name, :price)"),
        {"name": name, "price": price},
    )
    return {"id": result.lastrowid}


@app.get("/items")
async def list_items(session: Annotated[AsyncSession, Depends(get_session)]):
    result = await session.execute(text("SELECT id, name, price FROM items"))
    return [dict(row) for row in result.mappings()]
