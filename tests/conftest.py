"""Per-test Pulumi mocks: a fresh event loop, fresh mocks, and reset global state afterwards."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pulumi
import pytest

from tests.mocks import RecordingMocks


@pytest.fixture
def mocks() -> Iterator[RecordingMocks]:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    recording = RecordingMocks()
    pulumi.runtime.set_mocks(recording, project="nativelink-juicefs", stack="test", preview=False)
    try:
        yield recording
    finally:
        pulumi.runtime.reset_options()
        for task in asyncio.all_tasks(loop):
            task.cancel()
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()
        asyncio.set_event_loop(None)
