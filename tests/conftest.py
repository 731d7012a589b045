"""Per-test Pulumi mocks: a fresh event loop, fresh mocks, and reset global state afterwards."""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pulumi
import pytest

from tests.mocks import RecordingMocks


@pytest.fixture
def mocks() -> Iterator[RecordingMocks]:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    # Pulumi runs resource RPCs in executor threads, and the mock monitor opens an event loop in each;
    # give each thread its loop here so teardown can close them instead of leaving them to the GC.
    thread_loops: list[asyncio.AbstractEventLoop] = []
    lock = threading.Lock()

    def open_thread_loop() -> None:
        thread_loop = asyncio.new_event_loop()
        asyncio.set_event_loop(thread_loop)
        with lock:
            thread_loops.append(thread_loop)

    executor = ThreadPoolExecutor(initializer=open_thread_loop)
    loop.set_default_executor(executor)

    # A test that expects a deployment to fail leaves the failed resources' futures unread; the
    # failure itself already reached the test through `pulumi.runtime.test`, so do not log it again.
    def quiet_unread_failures(event_loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
        if not str(context.get("message", "")).endswith("exception was never retrieved"):
            event_loop.default_exception_handler(context)

    loop.set_exception_handler(quiet_unread_failures)
    recording = RecordingMocks()
    pulumi.runtime.set_mocks(recording, project="nativelink-juicefs", stack="test", preview=False)
    try:
        yield recording
    finally:
        pulumi.runtime.reset_options()
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        # A deployment that failed leaves chains of dependent tasks; let every one finish cancelling.
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        gc.collect()
        executor.shutdown(wait=True)
        for thread_loop in thread_loops:
            thread_loop.close()
        loop.close()
        asyncio.set_event_loop(None)
