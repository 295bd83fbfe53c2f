import os
from typing import Any

from fastapi import FastAPI
from opentelemetry import metrics, trace
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

from fastapi_mysqlpool import AsyncCursor, mysql_pool_lifespan

# The SDK, set up once at startup (use your OTLP exporters in place of these).
tracer_provider = TracerProvider()
tracer_provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
trace.set_tracer_provider(tracer_provider)
meter_provider = MeterProvider(
    metric_readers=[PeriodicExportingMetricReader(ConsoleMetricExporter())]
)
metrics.set_meter_provider(meter_provider)

app = FastAPI(lifespan=mysql_pool_lifespan(os.environ["DATABASE_URL"], name="shop"))
FastAPIInstrumentor.instrument_app(app)


@app.get("/items/{item_id}")
async def read_item(item_id: int, cursor: AsyncCursor) -> dict[str, Any] | None:
    await cursor.execute("SELECT name FROM items WHERE id = %s", (item_id,))
    row = await cursor.fetchone()
    return None if row is None else {"name": row[0]}
