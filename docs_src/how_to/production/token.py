import os

from fastapi import FastAPI

from fastapi_mysqlpool import Cursor, mysql_pool_lifespan


def fresh_token() -> str:
    """Called for each new connection. With RDS IAM authentication:
    boto3.client("rds").generate_db_auth_token(host, port, user)."""
    return os.environ["DB_PASSWORD"]


cfg = {
    "host": os.environ["DB_HOST"],
    "port": int(os.environ["DB_PORT"]),
    "user": os.environ["DB_USER"],
    "password": fresh_token,
    "database": os.environ["DB_NAME"],
}
app = FastAPI(lifespan=mysql_pool_lifespan(cfg))


@app.get("/ping")
def ping(cursor: Cursor):
    cursor.execute("SELECT 1")
    return {"status": "ok"}
