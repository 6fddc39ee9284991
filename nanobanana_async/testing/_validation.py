"""Validate a create request body the way the service does (field by field, with its 400 answers).

Returns the normalised fields, or the 400 error body naming the bad field, so
the handler stays a short sequence of checks.
"""

from __future__ import annotations

import attrs

from .._vocabulary import MAX_IMAGE_URLS, MODELS, RESOLUTIONS, SIZES


@attrs.frozen
class CreateFields:
    """The fields of a valid create request that the simulator acts on."""

    model: str
    prompt: str
    resolution: str | None
    size: str


@attrs.frozen
class Invalid:
    """Why a create request was rejected: the field it names and a message."""

    field: str
    message: str

    def body(self) -> dict[str, dict[str, str]]:
        """The JSON error body, shaped like an OpenAI-style service's."""
        return {
            "error": {
                "message": self.message,
                "type": "invalid_request_error",
                "code": f"invalid_{self.field}",
            }
        }


def _choice(field: str, value: object, allowed: tuple[str, ...]) -> Invalid | None:
    if isinstance(value, str) and value in allowed:
        return None
    return Invalid(field, f"{field} must be one of: {', '.join(allowed)}; got {value!r:.60}")


def validate_create(body: object) -> CreateFields | Invalid:
    """Check a parsed JSON body; unknown extra fields are ignored, as the service does."""
    if not isinstance(body, dict):
        return Invalid("body", "the request body must be a JSON object")
    model = body.get("model")
    if model is None:
        return Invalid("model", f"model is required; one of: {', '.join(MODELS)}")
    if problem := _choice("model", model, MODELS):
        return problem
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        return Invalid("prompt", "prompt is required and must be a non-empty string")
    resolution = body.get("resolution")
    if resolution is not None and (problem := _choice("resolution", resolution, RESOLUTIONS)):
        return problem
    size = body.get("size")
    if size is not None and (problem := _choice("size", size, SIZES)):
        return problem
    image_urls = body.get("image_urls")
    if image_urls is not None and (
        not isinstance(image_urls, list)
        or len(image_urls) > MAX_IMAGE_URLS
        or not all(isinstance(url, str) for url in image_urls)
    ):
        return Invalid(
            "image_urls", f"image_urls must be a list of at most {MAX_IMAGE_URLS} URL strings"
        )
    return CreateFields(
        model=str(model),
        prompt=prompt,
        resolution=str(resolution) if resolution is not None else None,
        size=str(size) if size is not None else "1:1",
    )
