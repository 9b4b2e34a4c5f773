"""A kit-built app whose requests take a while, for the graceful-shutdown test."""

from __future__ import annotations

import asyncio
import os

from consort.kit.service import ServiceKit, create_app
from consort.kit.settings import ServiceSettings

WORK_S = float(os.environ.get("SLOW_APP_WORK_S", "2"))

kit = ServiceKit(ServiceSettings(app_id="slow"), version="0.1.0")
app = create_app(kit, title="slow", description="Requests that take SLOW_APP_WORK_S.")


@app.post("/work")
async def work() -> dict[str, str]:
    """A request in flight for WORK_S seconds."""
    await asyncio.sleep(WORK_S)
    return {"status": "done"}


@app.post("/events/work")
async def event_batch() -> dict[str, str]:
    """An event delivery whose handler runs for WORK_S seconds."""
    await asyncio.sleep(WORK_S)
    return {"status": "SUCCESS"}
