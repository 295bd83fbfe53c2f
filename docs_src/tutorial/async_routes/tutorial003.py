import os

from fastapi import FastAPI, WebSocket, WebSocketDisconnect

from fastapi_mysqlpool import get_pool, mysql_pool_lifespan

app = FastAPI(lifespan=mysql_pool_lifespan(os.environ["DATABASE_URL"]))


@app.websocket("/prices")
async def prices(websocket: WebSocket):
    await websocket.accept()
    try:
        while True:
            name = await websocket.receive_text()
            # A connection per message, not one held for the whole session.
            async with get_pool(websocket).cursor() as cursor:
                await cursor.execute("SELECT price FROM items WHERE name = %s", (name,))
                row = await cursor.fetchone()
            await websocket.send_json({"name": name, "price": row and row[0]})
    except WebSocketDisconnect:
        pass
