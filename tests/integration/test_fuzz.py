"""Property-based fuzzing of every API operation from the OpenAPI schema (schemathesis), signed in: no input is a
500, every error is the standard envelope, and every 2xx answer matches its documented schema.

Signed in, because an anonymous request stops at 401 before any route's code runs. Two callers, each on its own
fresh database: a normal user over every operation outside /admin, and an administrator over the /admin ones (the
admin role changes nothing elsewhere: ``deps.admin_principal`` is its only check, and a normal user's 403 from
the admin routes is test_isolation.py's business).

What keeps the fuzz meaningful:

- each case goes out with a live session: after a case that ended it (logout, revoking its session) the next
  one gets a fresh token, so the operations that follow are not all 401s. Deleting the account and changing
  the password need the password, which the fuzz never knows, so the account survives them (their working is
  test_admin.py's and test_auth_attacks.py's business), and the administrator's suspensions, role changes and
  deletions target the other user, never the caller;
- in half the fuzzing phase's cases, path parameters name real resources (a finished job, its image, a
  collection holding it, a style, an API key, the other user), so bodies and query strings reach the code
  behind the lookup; the other half and the coverage phase (empty, very long, odd characters) keep generated
  ids. DELETEs always keep them, so the shared resources survive: deleting them is the functional tests' job.

Found so far: a multipart ``params`` field holding valid JSON that is not an object; NUL characters reaching
PostgreSQL from paths, query strings, JSON bodies, form fields and headers; a regenerate ``seed`` over 32 bits
(the last two: test_unstorable_text.py).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from studiolo.app import create_app
from studiolo.domain.accounts.audit import Origin
from studiolo.domain.accounts.schemas import ApiKeyCreate
from studiolo.domain.film.schemas import FilmCreate
from studiolo.domain.gallery.schemas import CollectionCreate
from studiolo.domain.generation.schemas import StyleCreate
from studiolo.errors import Unauthorized
from studiolo.services import Services, build_services
from tests.helpers import auth_headers, create_user, drain, submit

ADMIN = "/api/v1/admin/"


@dataclass
class World:
    """The fuzzing caller, its live session, and real resources for path parameters to name."""

    services: Services
    caller: str
    headers: dict[str, str]
    ids: dict[str, str]

    def signed_in(self) -> dict[str, str]:
        """The caller's Bearer header, renewed if the previous case ended its session."""
        try:
            self.services.authenticator.authenticate(self.headers["Authorization"].removeprefix("Bearer "))
        except Unauthorized:
            self.headers = auth_headers(self.services, self.caller)
        return self.headers


def make_world(services: Services, role: str) -> World:
    user = create_user(services, "fuzz-user@example.test", password="the fuzz never guesses this")
    admin = create_user(services, "fuzz-admin@example.test", password="nor this one either", role="admin")
    job_id = submit(services, user, tags=["sea"])
    drain(services)
    image_id = services.generation.get(user, job_id).outputs[0].image_id
    collection_id = services.gallery.create_collection(user, CollectionCreate(name="harbour")).id
    services.gallery.add_to_collection(user, collection_id, [image_id])
    services.generation.create_style(user, StyleCreate(slug="house", name="House", prompt_template="{prompt}, teal"))
    key_id = services.keys.create(user, ApiKeyCreate(name="script"), Origin("127.0.0.1", "tests")).id
    film = services.film.create(user, FilmCreate(title="Harbour", script="Boats in the harbour. Gulls above."))
    ids = {
        "film_id": film.id,
        "scene_id": film.scenes[0].id,
        "job_id": job_id,
        "image_id": image_id,
        "collection_id": collection_id,
        "slug": "house",
        "key_id": key_id,
        "user_id": user,  # the administrator's target
    }
    caller = admin if role == "admin" else user
    return World(services, caller, auth_headers(services, caller), ids)


@pytest.fixture
def api_schema(services: Services) -> Any:
    return schemathesis.openapi.from_asgi("/openapi.json", create_app(services=services, start_workers=False))


def error_envelope(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every JSON error is ``{"error": {"code", "message", "details"}, "request_id"}`` with a stable code."""
    if response.status_code < 400 or "json" not in response.headers.get("content-type", [""])[0]:
        return None
    error = response.json().get("error")
    assert isinstance(error, dict) and isinstance(error.get("code"), str) and error["code"], response.text
    assert isinstance(error.get("message"), str) and error["message"], response.text
    return True


def documented_success(ctx: Any, response: Any, case: Any) -> bool | None:
    """2xx bodies match the schema; error bodies are the envelope above, which FastAPI's schema does not describe."""
    return response_schema_conformance(ctx, response, case) if 200 <= response.status_code < 300 else None


CHECKS: list[Callable[..., bool | None]] = [not_a_server_error, error_envelope, documented_success]

schema = schemathesis.pytest.from_fixture("api_schema")
# derandomize: the same examples every run, so CI is reproducible; run `schemathesis run` for fresh ones.
fuzz_settings = settings(max_examples=20, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))


def names_real_resources(case: Any) -> bool:
    """Half the fuzzing phase's cases, chosen by their generated path (so a replayed case chooses the same)."""
    if not case.path_parameters or case.method == "DELETE" or case.meta is None or case.meta.phase.name != "fuzzing":
        return False
    return zlib.crc32(repr(sorted(case.path_parameters.items())).encode()) % 2 == 0


def send(case: Any, world: World) -> None:
    if names_real_resources(case):
        for name in case.path_parameters:
            if name in world.ids:
                case.path_parameters[name] = world.ids[name]
    if case.path == "/ready":  # 503 is its answer while no worker runs (none is started here)
        status = case.call(headers=world.signed_in()).status_code
        assert status < 500 or status == 503
        return
    case.call_and_validate(headers=world.signed_in(), checks=CHECKS)


@pytest.fixture
def user_world(services: Services) -> World:
    return make_world(services, "user")


@pytest.fixture
def admin_world(services: Services) -> World:
    return make_world(services, "admin")


# The compatible faces (issue 18: /v1 OpenAI, /sdapi A1111) answer in their clients' error shapes and block until a
# job ends (no worker runs here): their own tests drive them with the real clients (test_compat_*.py), and
# test_compat_fuzz.py fuzzes them with a live worker and checks their error shapes.
FACES = "|/v1/|/sdapi/"


@schema.exclude(path_regex="^(" + ADMIN + FACES + ")").parametrize()
@fuzz_settings
def test_no_input_is_a_server_error_for_a_user(case: Any, user_world: World) -> None:
    send(case, user_world)


@schema.include(path_regex="^" + ADMIN).parametrize()
@fuzz_settings
def test_no_input_is_a_server_error_for_an_admin(case: Any, admin_world: World) -> None:
    send(case, admin_world)


# Billing (issue 15) once more with STUDIOLO_BILLING=quotas: above, billing is off and its routes only say so. Here
# the caller has a plan, credits and a ledger, the plan catalogue is live, and {slug} names a real plan.
BILLING_USER = r"^/api/v1/billing"
BILLING_ADMIN = r"^/api/v1/admin/(billing|users/\{user_id\}/(plan|credits|billing|ledger))"


@pytest.fixture
def billed_services(settings_factory: Callable[..., Any]) -> Iterator[Services]:
    svc = build_services(settings_factory(billing="quotas"), upgrade_db=False)
    yield svc
    svc.close(timeout=10)


@pytest.fixture
def billed_api_schema(billed_services: Services) -> Any:
    return schemathesis.openapi.from_asgi("/openapi.json", create_app(services=billed_services, start_workers=False))


@pytest.fixture
def billed_world(billed_services: Services) -> Callable[[str], World]:
    """The world of a "user" or an "admin" on the billed install, made at its first use, {slug} a real plan."""
    worlds: dict[str, World] = {}

    def world(role: str) -> World:
        if role not in worlds:
            worlds[role] = make_world(billed_services, role)
            worlds[role].ids["slug"] = "basic"
        return worlds[role]

    return world


billed_schema = schemathesis.pytest.from_fixture("billed_api_schema")


@billed_schema.include(path_regex=BILLING_USER).parametrize()
@fuzz_settings
def test_no_billing_input_is_a_server_error_for_a_user_on_a_plan(
    case: Any, billed_world: Callable[[str], World]
) -> None:
    send(case, billed_world("user"))


@billed_schema.include(path_regex=BILLING_ADMIN).parametrize()
@fuzz_settings
def test_no_billing_input_is_a_server_error_for_an_admin_with_billing_on(
    case: Any, billed_world: Callable[[str], World]
) -> None:
    send(case, billed_world("admin"))
