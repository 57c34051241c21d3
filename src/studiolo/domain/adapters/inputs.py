"""The pictures a job's adapters take (issue 19): ControlNet units' images and the IP-Adapter reference.

A request gives each as one of the caller's gallery images (by id), a ``data:`` URL, or (multipart) an uploaded file
named ``control_image_<i>`` / ``reference_image``. They are validated like init images and kept with the job's
inputs under the names ``control<i>`` and ``reference`` (``jobs.input_keys``), so a job, its retries and a remix
read the same bytes.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Mapping
from typing import TypeVar

from studiolo.db.session import Database
from studiolo.domain.gallery.models import Image
from studiolo.domain.gallery.service import refuse_if_held
from studiolo.domain.generation.schemas import GenerationParams
from studiolo.domain.ownership import get_owned
from studiolo.errors import InvalidInput
from studiolo.storage.base import ObjectNotFound, ObjectStore

REFERENCE_INPUT = "reference"
Checked = TypeVar("Checked")
_DATA_URL = re.compile(r"^data:image/[\w.+-]+;base64,", re.IGNORECASE)


def control_input(index: int) -> str:
    return f"control{index}"


def upload_field(input_name: str) -> str:
    """The multipart file field an input may be uploaded as."""
    return "reference_image" if input_name == REFERENCE_INPUT else f"control_image_{input_name.removeprefix('control')}"


def image_bytes(db: Database, store: ObjectStore, owner_id: str, value: str, *, field: str) -> bytes:
    """The bytes ``value`` names: a data: URL's, or the caller's gallery image's (404 for anyone else's)."""
    if _DATA_URL.match(value):
        try:
            return base64.b64decode(value.split(",", 1)[1], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidInput(
                "The data: URL's base64 is not valid.", code="invalid_image", details={"field": field}
            ) from exc
    if value.startswith("data:"):
        raise InvalidInput(
            "A data: URL must be a base64 image (data:image/png;base64,...).",
            code="invalid_image",
            details={"field": field},
        )
    with db.session() as session:
        img = get_owned(session, Image, value, owner_id, what="image")
        refuse_if_held(img)
        key = img.original_key
    try:
        return store.get(key)
    except ObjectNotFound as exc:
        raise InvalidInput(
            f"The file of image {value} is missing from storage.", code="file_missing", details={"field": field}
        ) from exc


def adapter_inputs(
    db: Database,
    store: ObjectStore,
    owner_id: str,
    p: GenerationParams,
    files: Mapping[str, bytes],
    validate: Callable[[bytes, str], Checked],
) -> dict[str, Checked]:
    """The validated pictures of ``p``'s ControlNet units and reference, by input name. ``files``: uploaded files by
    multipart field name; ``validate(data, field)`` checks one and returns what the job keeps (GenerationService's
    validate_upload). A unit with neither an image nor a file is 422 missing_control_image; a file for a unit
    that is not there is 422 unexpected_file."""
    wanted: dict[str, str | None] = {control_input(i): unit.image for i, unit in enumerate(p.controls)}
    if p.reference_image is not None or "reference_image" in files:
        wanted[REFERENCE_INPUT] = p.reference_image
    known_fields = {upload_field(name) for name in wanted}
    stray = sorted(f for f in files if f not in known_fields)
    if stray:
        raise InvalidInput(
            f"Uploaded file(s) {', '.join(stray)} match no ControlNet unit or reference in the request.",
            code="unexpected_file",
            details={"field": stray[0]},
        )
    found: dict[str, Checked] = {}
    for name, value in wanted.items():
        field = upload_field(name)
        if field in files:
            data = files[field]
        elif value is not None:
            data = image_bytes(db, store, owner_id, value, field=field)
        else:
            index = name.removeprefix("control")
            raise InvalidInput(
                f"ControlNet unit {index} has no image: give controls[{index}].image (a gallery image id or a data: "
                f"URL) or upload it as {field}.",
                code="missing_control_image",
                details={"field": f"controls.{index}.image"},
            )
        found[name] = validate(data, field)
    return found
