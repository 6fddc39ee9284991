"""The public API as a consumer types it: mypy --strict checks this file, nothing runs it.

If a change breaks these lines, it breaks users' type-checked code too.
"""

from __future__ import annotations

from pathlib import Path

from nanobanana_async import (
    AdaptivePolling,
    FixedPolling,
    ImageRequest,
    ImageResult,
    NanoBanana,
    NanoBananaError,
    Outcome,
    RetryPolicy,
    Task,
    TaskFailedError,
    TaskStatus,
    TaskTimeoutError,
)


async def single_jobs(client: NanoBanana) -> None:
    task: Task = await client.submit(ImageRequest(prompt="a red fox", size="16:9"))
    task = await client.get_task(task.id)
    task = await client.wait(task.id, timeout=60)
    status: TaskStatus = task.status
    if status is TaskStatus.COMPLETED:
        url: str | None = task.image_url
        del url
    try:
        result: ImageResult = await client.generate("a red fox", model="nano-banana-2")
    except TaskFailedError as exc:
        failed: Task = exc.task
        del failed
        return
    except TaskTimeoutError as exc:
        last: str | None = exc.last_status
        del last
        return
    path: Path = await result.save("out/")
    data: bytes = await result.read()
    del path, data


async def many_jobs() -> None:
    async with NanoBanana(
        max_concurrency=64, polling=AdaptivePolling(), retry=RetryPolicy(poll_failures=3)
    ) as client:
        async for outcome in client.generate_many(["a", ImageRequest(prompt="b")], ordered=True):
            item: Outcome = outcome
            index: int = item.index
            error: NanoBananaError | None = item.error
            saved: Path | None = item.path
            del index, error, saved
        async with client.generate_many(["c"], save_to="out", journal="out/j.sqlite") as stream:
            async for outcome in stream:
                assert outcome.ok


def policies() -> None:
    FixedPolling(interval=0.5)
    AdaptivePolling(interval=2.0, quantile=0.1)
