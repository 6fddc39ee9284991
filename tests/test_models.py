"""ImageRequest validation, tolerant Task parsing and task-id safety (no server needed)."""

from __future__ import annotations

from typing import Any

import pytest

from nanobanana_async import (
    MODELS,
    SIZES,
    ImageRequest,
    InvalidRequestError,
    MalformedResponseError,
    NanoBananaError,
    Task,
    TaskStatus,
)
from nanobanana_async._models import validate_task_id
from nanobanana_async._naming import file_stem, slugify


def test_request_defaults_to_nano_banana_2_and_leaves_optional_fields_out_of_the_payload() -> None:
    """A bare prompt gets the default model and sends only model and prompt."""
    request = ImageRequest(prompt="a red fox")
    assert request.model == "nano-banana-2"
    assert request.to_payload() == {"model": "nano-banana-2", "prompt": "a red fox"}


def test_request_payload_carries_every_set_field() -> None:
    """Resolution, size and reference images all reach the create body."""
    request = ImageRequest(
        prompt="p",
        model="nano-banana-pro",
        resolution="4K",
        size="21:9",
        image_urls=["https://x/a.png"],
    )
    assert request.to_payload() == {
        "model": "nano-banana-pro",
        "prompt": "p",
        "resolution": "4k",
        "size": "21:9",
        "image_urls": ["https://x/a.png"],
    }


@pytest.mark.parametrize("model", MODELS)
def test_every_documented_model_is_accepted(model: str) -> None:
    """All five documented model names validate."""
    assert ImageRequest(prompt="p", model=model).model == model


@pytest.mark.parametrize("size", SIZES)
def test_every_documented_aspect_ratio_is_accepted(size: str) -> None:
    """All ten documented sizes validate."""
    assert ImageRequest(prompt="p", size=size).size == size


@pytest.mark.parametrize(
    ("fields", "field", "allowed_hint"),
    [
        ({"prompt": ""}, "prompt", "non-empty"),
        ({"prompt": "   "}, "prompt", "non-empty"),
        ({"prompt": 42}, "prompt", "non-empty"),
        ({"prompt": "p", "model": "nano-banana-fast"}, "model", "nano-banana-pro-stable"),
        ({"prompt": "p", "resolution": "8k"}, "resolution", "1k, 2k, 4k"),
        ({"prompt": "p", "size": "7:5"}, "size", "21:9"),
        ({"prompt": "p", "image_urls": ["https://x/a.png"] * 7}, "image_urls", "at most 6"),
        ({"prompt": "p", "image_urls": ["ftp://x/a.png"]}, "image_urls", "http(s)"),
        ({"prompt": "p", "image_urls": ["/relative.png"]}, "image_urls", "http(s)"),
        ({"prompt": "p", "image_urls": "https://x/a.png"}, "image_urls", "list"),
    ],
)
def test_invalid_field_raises_typed_error_naming_field_value_and_allowed_values(
    fields: dict[str, Any], field: str, allowed_hint: str
) -> None:
    """Each bad field gives InvalidRequestError (a ValueError) that says what is allowed."""
    with pytest.raises(InvalidRequestError) as caught:
        ImageRequest(**fields)
    error = caught.value
    assert isinstance(error, ValueError)
    assert isinstance(error, NanoBananaError)
    assert error.field == field
    assert field in str(error)
    assert allowed_hint in str(error)


def test_request_is_frozen() -> None:
    """A validated request cannot be mutated into an invalid one."""
    request = ImageRequest(prompt="p")
    with pytest.raises(AttributeError):
        request.model = "bad"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        ("queued", TaskStatus.QUEUED),
        ("PROCESSING", TaskStatus.PROCESSING),
        (" Completed ", TaskStatus.COMPLETED),
        ("failed", TaskStatus.FAILED),
        ("mystery", TaskStatus.UNKNOWN),
        (None, TaskStatus.UNKNOWN),
        (7, TaskStatus.UNKNOWN),
    ],
)
def test_status_is_case_insensitive_and_unknown_values_are_kept_as_unfinished(
    raw: object, status: TaskStatus
) -> None:
    """Statuses normalise; anything unknown is UNKNOWN, which is not terminal."""
    data = {"id": "abc", "status": raw, "image_url": "https://cdn/x.png"}
    task = Task.from_response(data)
    assert task.status is status
    assert task.is_terminal == (status in (TaskStatus.COMPLETED, TaskStatus.FAILED))


def test_task_parsing_ignores_object_and_extra_fields_and_odd_model_spelling() -> None:
    """`object`, `amount` and a differently spelled model do not matter."""
    task = Task.from_response(
        {
            "id": "abc123def456",
            "object": "nanobanana",
            "created": 1761635478,
            "model": "NanoBanana2",
            "status": "queued",
            "amount": 0.04,
            "whatever": {"nested": [1, 2]},
        }
    )
    assert task == Task(
        id="abc123def456",
        status=TaskStatus.QUEUED,
        model="NanoBanana2",
        created=1761635478,
        raw_status="queued",
    )
    assert task.created_at is not None
    assert task.created_at.year == 2025


def test_completed_task_without_image_url_is_malformed_not_a_crash() -> None:
    """The service promises an image URL with "completed": without one, the task is malformed."""
    with pytest.raises(MalformedResponseError, match="no image_url"):
        Task.from_response({"id": "abc", "status": "completed", "image_url": None})


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        ("Content policy violation", "Content policy violation"),
        ({"message": "NSFW", "code": "content_policy"}, "NSFW [content_policy]"),
        (None, "the service gave no reason"),
        ({}, "the service gave no reason"),
    ],
)
def test_failure_reason_is_read_from_a_string_an_object_or_nothing(
    error: object, expected: str
) -> None:
    """The error field may be a string, an object or null."""
    task = Task.from_response({"id": "abc", "status": "failed", "error": error})
    assert task.error == expected


@pytest.mark.parametrize("created", [float("nan"), 10**30, -5, True, "1761635478", 1e300])
def test_implausible_created_values_become_none_instead_of_overflowing(created: object) -> None:
    """A huge, negative or non-numeric `created` never raises."""
    task = Task.from_response({"id": "abc", "status": "queued", "created": created})
    assert task.created is None


@pytest.mark.parametrize("body", [None, [], "text", 3, [{"id": "abc"}]])
def test_non_object_answers_are_malformed(body: object) -> None:
    """Only a JSON object can be a task."""
    with pytest.raises(MalformedResponseError):
        Task.from_response(body)


HOSTILE_IDS = [
    "../../x",
    "a/b",
    "a\\b",
    "",
    ".",
    "..",
    "CON",
    "nul",
    "LPT1",
    "a\x00b",
    "x" * 300,
    "abc\u202edef",
    "%2e%2e",
    "a b",
    "a\nb",
    "ünïcode",
    None,
    42,
]


@pytest.mark.parametrize("task_id", HOSTILE_IDS)
def test_hostile_task_ids_are_refused_as_malformed(task_id: object) -> None:
    """Ids that could escape a URL path or a folder never pass validation."""
    with pytest.raises(MalformedResponseError):
        validate_task_id(task_id)
    with pytest.raises(MalformedResponseError):
        Task.from_response({"id": task_id, "status": "queued"})


@pytest.mark.parametrize("task_id", ["abc123def456", "task_01-AB", "x" * 256])
def test_ordinary_task_ids_pass(task_id: str) -> None:
    """Hex, dashes, underscores and up to 256 characters are fine."""
    assert validate_task_id(task_id) == task_id


def test_file_stems_name_the_prompt_and_request_never_the_position() -> None:
    """Saved names are a short slug, the fingerprint's start, and which repeat it is."""
    assert file_stem("A red fox!", "3f2a9c1e0b7d5a64ff") == "a-red-fox-3f2a9c1e0b7d5a64"
    assert file_stem("A red fox!", "3f2a9c1e0b7d5a64ff", 1) == "a-red-fox-3f2a9c1e0b7d5a64-2"
    assert slugify("Ünïcödé café ☕") == "unicode-cafe"
    assert slugify("!!!") == "image"
    assert len(slugify("word " * 40)) <= 40


@pytest.mark.parametrize(
    ("prompt", "slug"),
    [
        ("日本の桜", "日本の桜"),
        ("一只红色的狐狸在雪中", "一只红色的狐狸在雪中"),
        ("лиса в снегу", "лиса-в-снегу"),
        ("قطة سوداء", "قطة-سوداء"),
        ("हिन्दी भाषा", "हिन्दी-भाषा"),
        ("Tokyo at night — neon & rain", "tokyo-at-night-neon-rain"),
        ("\u202egnp.exe", "gnp-exe"),
        ("../../etc/passwd", "etc-passwd"),
        ('a<b>c:d"e|f?g*h\\i', "a-b-c-d-e-f-g-h-i"),
        ("\uff26\uff35\uff2c\uff2c\u3000\uff57\uff49\uff44\uff54\uff48", "full-width"),
    ],
)
def test_slugs_keep_every_script_and_stay_safe_file_names(prompt: str, slug: str) -> None:
    """Letters of any script are kept; separators, reserved and direction marks never are."""
    made = slugify(prompt)
    assert made == slug
    assert not set(made) & set('<>:"/\\|?*.')
    assert made.isprintable()
    assert len(made) <= 40


def test_adaptive_polling_learns_from_all_jobs_not_only_the_slowest_last_ones() -> None:
    """A wave finishes fastest-first: the learned first poll tracks its low quantile anyway."""
    from nanobanana_async import AdaptivePolling

    policy = AdaptivePolling(seed=1)
    kind = ("nano-banana-pro", "2k")
    assert policy.first_delay(kind) < 2.0 * 1.11  # cold: the service's pace
    durations = sorted(8.0 + 22.0 * i / 999 for i in range(1000))
    for duration in durations:  # completions arrive in order of duration
        policy.observe(kind, last_pending=duration - 1.0, finished=duration + 1.0)
    learned = policy.expected_minimum(kind)
    assert learned is not None
    assert 8.0 <= learned <= 12.5  # near the 10th percentile (~10.2 s), not ~28 s
    assert policy.first_delay(kind) >= 2.0
    assert policy.next_delay(kind, 3) == 2.0
