"""A plan's limit of concurrent running jobs is kept where jobs are claimed (issue 15): a queued job waits while its
owner has ``max_running`` jobs running, other users' jobs are claimed beside it, and a batch claim takes no more of
a user's jobs than their room. Both claim paths (one job per claim, and claim_batch: the PostgreSQL LATERAL query,
one at a time on SQLite) on both databases, and claimers racing for the last free place."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import select

from studiolo.domain.accounts.audit import Origin
from studiolo.domain.accounts.models import LOCAL_USER_ID
from studiolo.domain.billing.plans import PlanSpec
from studiolo.domain.generation.models import Job
from studiolo.services import Services, build_services
from tests.helpers import create_user, in_threads, submit


@pytest.fixture
def billed(settings_factory: Callable[..., Any]) -> Iterator[Services]:
    svc = build_services(settings_factory(billing="quotas"), upgrade_db=False)
    yield svc
    svc.close(timeout=10)


def _limited_user(services: Services, email: str, max_running: int | None) -> str:
    """A user on a plan made for the test: ``max_running`` jobs at once (None: any number), credits and quotas to
    spare."""
    slug = f"run{max_running or 'any'}"
    if slug not in {p.slug for p in services.billing.list_plans(include_retired=True).plans}:
        spec = PlanSpec(slug=slug, name=f"Run {max_running}", monthly_credits=10_000, max_running_jobs=max_running)
        services.billing.create_plan(spec, actor_id=LOCAL_USER_ID, origin=Origin())
    user_id = create_user(services, email)
    services.billing.assign_plan(user_id, slug, actor_id=LOCAL_USER_ID, origin=Origin())
    return user_id


def claim_one_by_one(services: Services) -> list[Job]:
    jobs = []
    while (job := services.queue.claim("w")) is not None:
        jobs.append(job)
    return jobs


def claim_in_batches(services: Services) -> list[Job]:
    jobs: list[Job] = []
    while batch := services.queue.claim_batch("w", 8):
        jobs.extend(batch)
    return jobs


CLAIMS = pytest.mark.parametrize("claim", [claim_one_by_one, claim_in_batches], ids=["claim", "claim_batch"])


def _finish(services: Services, job: Job) -> None:
    """Run a claimed job to its end, as its worker would (settling its charge)."""
    services.runner.run(job, "w", threading.Event())


def _running_of(services: Services, owner_id: str) -> int:
    with services.db.session() as session:
        return len(session.scalars(select(Job.id).where(Job.owner_id == owner_id, Job.status == "running")).all())


@CLAIMS
def test_one_running_job_at_a_time_while_others_are_claimed_beside_it(
    billed: Services, claim: Callable[[Services], list[Job]]
) -> None:
    limited = _limited_user(billed, "one@example.com", 1)
    other = _limited_user(billed, "other@example.com", None)
    mine = [submit(billed, owner=limited, prompt=f"mine {i}") for i in range(3)]
    theirs = [submit(billed, owner=other, prompt=f"theirs {i}") for i in range(2)]
    with billed.db.session() as session:
        assert {session.get_one(Job, j).max_running for j in mine} == {1}
        assert {session.get_one(Job, j).max_running for j in theirs} == {0}

    first = claim(billed)
    # One of the limited user's jobs (their first), and every job of the other user.
    assert sorted(j.id for j in first) == sorted([mine[0], *theirs])
    assert claim(billed) == []  # nothing more while the first runs
    for job in first:
        _finish(billed, job)
    second = claim(billed)
    assert [j.id for j in second] == [mine[1]]
    assert claim(billed) == []
    _finish(billed, second[0])
    assert [j.id for j in claim(billed)] == [mine[2]]


@CLAIMS
def test_a_batch_takes_no_more_than_the_room_left(billed: Services, claim: Callable[[Services], list[Job]]) -> None:
    limited = _limited_user(billed, "two@example.com", 2)
    mine = [submit(billed, owner=limited, prompt=f"mine {i}") for i in range(5)]
    taken = claim(billed)
    assert [j.id for j in taken] == mine[:2]
    _finish(billed, taken[0])
    assert [j.id for j in claim(billed)] == [mine[2]]  # one place came free
    assert _running_of(billed, limited) == 2


@CLAIMS
def test_a_plan_without_a_limit_runs_every_job(billed: Services, claim: Callable[[Services], list[Job]]) -> None:
    unlimited = _limited_user(billed, "any@example.com", None)
    jobs = [submit(billed, owner=unlimited, prompt=f"any {i}") for i in range(4)]
    assert sorted(j.id for j in claim(billed)) == sorted(jobs)


@pytest.mark.parametrize("batch", [1, 4], ids=["claim", "claim_batch"])
def test_racing_claimers_never_exceed_the_limit(billed: Services, batch: int) -> None:
    """Eight claimers at once, each seeing free places when it reads the candidates: exactly ``max_running`` get a
    job (the room is counted again where the claim is decided: the UPDATE on SQLite, after the owner's advisory lock
    on PostgreSQL, which matters most to workers serving different models, whose candidates differ)."""
    limited = _limited_user(billed, "race@example.com", 2)
    for i in range(8):
        submit(billed, owner=limited, prompt=f"race {i}")
    claimed: list[str] = []
    lock = threading.Lock()

    def take() -> None:
        jobs = billed.queue.claim_batch(f"w{threading.get_ident()}", batch)
        with lock:
            claimed.extend(j.id for j in jobs)

    assert in_threads(8, take) == [None] * 8
    assert len(claimed) == 2 and _running_of(billed, limited) == 2
