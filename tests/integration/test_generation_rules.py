"""A generation request's rules, reported the same way by the HTTP API and the CLI, all broken ones at once and with
the configured limits (issue 13): the CLI printed pydantic's raw dump ("1 validation error for GenerationParams …
https://errors.pydantic.dev/…"), and both reported one rule per try with limits that disagreed (n=100 "<= 64", then
n=64 "at most 8 per job"; 13x13 "multiples of 8", then 16x16 "at least 64")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from typer.testing import CliRunner

from studiolo.cli import app as cli_app
from studiolo.domain.accounts.schemas import ApiKeyCreate
from studiolo.domain.generation.schemas import GenerationParams
from studiolo.errors import InvalidInput, plain_message
from studiolo.services import Services
from tests.helpers import app_with, auth_headers, job_count, png_bytes

GEN = "/api/v1/generations"
BASE = {"prompt": "a lighthouse at dusk", "size": "64x64", "steps": 1}

# (request fields, the same as CLI arguments, the code, every broken rule as the error reports it)
CASES: list[tuple[dict[str, Any], list[str], str, list[str]]] = [
    ({"size": "512"}, ["--size", "512"], "invalid_size", ["size: Give it as WIDTHxHEIGHT, e.g. 768x768 (got '512')"]),
    ({"prompt": ""}, [], "invalid_input", ["prompt: Must not be empty or only spaces"]),
    ({"n": 100}, ["--n", "100"], "too_many_images", ["n: At most 8 images per job (got 100)"]),
    ({"n": 64}, ["--n", "64"], "too_many_images", ["n: At most 8 images per job (got 64)"]),
    (
        {"size": "13x13"},
        ["--size", "13x13"],
        "invalid_size",
        ["size: Width and height must be multiples of 8 and at least 64 (got 13x13)"],
    ),
    (
        {"size": "16x16"},
        ["--size", "16x16"],
        "invalid_size",
        ["size: Width and height must be at least 64 (got 16x16)"],
    ),
    (
        {"n": 100, "size": "13x13", "steps": 0},
        ["--n", "100", "--size", "13x13", "--steps", "0"],
        "invalid_input",
        [
            "steps: At least 1",
            "n: At most 8 images per job (got 100)",
            "size: Width and height must be multiples of 8 and at least 64 (got 13x13)",
        ],
    ),
    (
        {"size": "4096x4096", "n": 0},
        ["--size", "4096x4096", "--n", "0"],
        "invalid_input",
        ["n: At least 1 image (got 0)", "size: 4096x4096 is 16777216 pixels, more than the 2097152 allowed"],
    ),
]
IDS = ["size_512", "empty_prompt", "n_100", "n_64", "13x13", "16x16", "three_rules", "pixels_and_n"]


def body(fields: dict[str, Any]) -> dict[str, Any]:
    return {**BASE, **fields}


def cli_args(fields: dict[str, Any], args: list[str]) -> list[str]:
    return [
        "generate",
        str(fields.get("prompt", BASE["prompt"])),
        *args,
        *([] if "size" in fields else ["--size", "64x64"]),
    ]


@pytest.mark.parametrize(("fields", "args", "code", "rules"), CASES, ids=IDS)
def test_the_api_reports_every_broken_rule_with_the_real_limits(
    client: TestClient, services: Services, fields: dict[str, Any], args: list[str], code: str, rules: list[str]
) -> None:
    answers = [client.post(GEN, json=body(fields))]
    if body(fields)["prompt"]:  # (an empty form field counts as not sent)
        # The same rules for multipart submissions, whose fields are text.
        form = {k: str(v) for k, v in body(fields).items()}
        answers.append(client.post(GEN, data=form, files={"init_image": ("in.png", png_bytes(), "image/png")}))
    for r in answers:
        assert r.status_code == 422, r.text
        error = r.json()["error"]
        assert (error["code"], error["message"]) == (code, "; ".join(rules))
        assert [f"{e['loc'][-1]}: {e['msg']}" for e in error["details"]["errors"]] == rules
    assert job_count(services) == 0


@pytest.mark.parametrize(("fields", "args", "code", "rules"), CASES, ids=IDS)
def test_the_cli_prints_the_same_rules_and_exits_2(
    tmp_path: Path, fields: dict[str, Any], args: list[str], code: str, rules: list[str]
) -> None:
    result = CliRunner().invoke(cli_app, cli_args(fields, args), env={"STUDIOLO_DATA_DIR": str(tmp_path / "data")})
    assert result.exit_code == 2, result.output
    out = " ".join(result.stderr.split())  # Rich wraps long lines
    assert f"error {code}:" in out
    assert all(rule in out for rule in rules), out
    for dump in ("validation error for", "errors.pydantic.dev", "Traceback"):
        assert dump not in result.output
    if len(rules) > 1:  # one broken rule per line
        assert [line.strip() for line in result.stderr.splitlines()[1:]] == rules


def test_the_limits_are_the_settings(settings_factory: Any, tmp_path: Path) -> None:
    too_many = {"n": 5, "prompt": "x" * 101}
    with app_with(settings_factory, max_images_per_job=4, max_prompt_chars=100) as (svc, api):
        r = api.post(GEN, json=body(too_many), headers=auth_headers(svc))
        assert r.status_code == 422 and r.json()["error"]["message"] == (
            "prompt: At most 100 characters (got 101); n: At most 4 images per job (got 5)"
        )
        # Within them the same request passes.
        assert api.post(GEN, json=body({"n": 4}), headers=auth_headers(svc)).status_code == 202
    result = CliRunner().invoke(
        cli_app,
        ["generate", "x" * 101, "--n", "5"],
        env={"STUDIOLO_DATA_DIR": str(tmp_path / "cli"), "STUDIOLO_MAX_IMAGES_PER_JOB": "4"},
    )
    assert result.exit_code == 2 and "n: At most 4 images per job (got 5)" in " ".join(result.stderr.split())


def test_a_batch_reports_each_items_rules(client: TestClient, services: Services) -> None:
    r = client.post(f"{GEN}/batch", json={"generations": [body({}), body({"n": 100, "size": "13x13"}), body({})]})
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_input" and error["details"]["index"] == 1
    assert error["message"] == (
        "generations.1.n: At most 8 images per job (got 100); "
        "generations.1.size: Width and height must be multiples of 8 and at least 64 (got 13x13)"
    )
    assert [e["loc"] for e in error["details"]["errors"]] == [
        ["body", "generations", "1", "n"],
        ["body", "generations", "1", "size"],
    ]
    assert job_count(services) == 0


def test_width_and_height_each_report_their_rules(client: TestClient) -> None:
    r = client.post(GEN, json={"prompt": "x", "width": 13, "height": 9000})
    error = r.json()["error"]
    assert (r.status_code, error["code"]) == (422, "invalid_size")
    assert (
        error["message"]
        == "width: Must be a multiple of 8 and at least 64 (got 13); height: Must be at most 8192 (got 9000)"
    )
    r = client.post(GEN, json={"prompt": "x", "width": "abc", "height": 100})
    assert r.json()["error"]["message"] == ("width: Must be a whole number; height: Must be a multiple of 8 (got 100)")


def test_regenerate_uses_the_same_limit(client: TestClient, services: Services) -> None:
    from tests.helpers import drain

    job = client.post(GEN, json=body({})).json()
    drain(services)
    image_id = client.get(job["urls"]["get"]).json()["outputs"][0]["image_id"]
    # RegenerateRequest capped n at 64 on its own: n=65 said "<= 64", then n=9 "at most 8".
    for n in (65, 9):
        r = client.post(f"/api/v1/images/{image_id}/regenerate", json={"n": n})
        assert r.status_code == 422 and r.json()["error"]["code"] == "too_many_images", r.text
        assert r.json()["error"]["message"] == f"n: At most 8 images per job (got {n})"


def test_requests_validated_without_the_limits_get_the_same_words_from_the_service(services: Services) -> None:
    """Callers that build GenerationParams themselves (no validation context) meet the same rules at submit."""
    with pytest.raises(InvalidInput) as caught:
        services.generation.submit("00000000-0000-7000-8000-000000000001", GenerationParams(prompt="x", n=100))
    assert (caught.value.code, caught.value.message) == ("too_many_images", "n: At most 8 images per job (got 100)")
    assert caught.value.details["limit"] == 8


def test_a_bad_configuration_names_the_variable_not_a_pydantic_dump(tmp_path: Path) -> None:
    env = {"STUDIOLO_DATA_DIR": str(tmp_path / "data"), "STUDIOLO_MAX_IMAGES_PER_JOB": "100"}
    result = CliRunner().invoke(cli_app, ["generate", "x"], env=env)
    assert result.exit_code == 2
    out = " ".join(result.stderr.split())
    assert "Invalid configuration: STUDIOLO_MAX_IMAGES_PER_JOB: Input should be less than or equal to 64" in out
    assert "errors.pydantic.dev" not in result.output and "validation error for" not in result.output


def test_plain_words_for_the_commonest_mistakes(client: TestClient) -> None:
    """pydantic's "Input should be less than or equal to 4294967295" reaches people as plain words; the error's
    code and each rule's type stay what clients branch on."""
    r = client.post(GEN, json={"prompt": "x", "seed": 2**32, "steps": 2.5})
    error = r.json()["error"]
    assert r.status_code == 422 and error["code"] == "invalid_input"
    assert error["message"] == "steps: Must be a whole number; seed: At most 4,294,967,295"
    assert [e["type"] for e in error["details"]["errors"]] == ["int_from_float", "less_than_equal"]
    with pytest.raises(ValidationError) as caught:
        ApiKeyCreate(name="   ")
    assert [plain_message(e) for e in caught.value.errors()] == ["Give the key a name"]
