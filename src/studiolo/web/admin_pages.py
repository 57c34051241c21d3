"""The admin pages: analytics, users, all jobs, image reviews, audit log. Data comes from the same services as
/api/v1/admin."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from studiolo.deps import ServicesDep
from studiolo.domain.safety.review import ReviewService
from studiolo.web.pages import AdminViewer, Cursor, call, render

router = APIRouter(include_in_schema=False)


@router.get("/admin/users")
async def admin_users_page(
    request: Request,
    viewer: AdminViewer,
    services: ServicesDep,
    q: Annotated[str, Query(max_length=200)] = "",
    status: Literal["pending", "active", "suspended", ""] = "",
    cursor: Cursor = None,
) -> Response:
    page = await call(services.admin.list_users, q=q, status=status or None, limit=50, cursor=cursor)
    return render(request, "admin_users.html", viewer, page=page, q=q, status=status)


@router.get("/admin/reviews")
async def admin_reviews_page(
    request: Request,
    viewer: AdminViewer,
    services: ServicesDep,
    state: Literal["pending", "approved", "rejected"] = "pending",
    cursor: Cursor = None,
) -> Response:
    reviews = ReviewService(services.db, services.gallery, services.admin)
    page = await call(reviews.list, state=state, cursor=cursor, limit=24)
    threshold = services.settings.nsfw_threshold
    return render(request, "admin_reviews.html", viewer, page=page, state=state, threshold=threshold)


@router.get("/admin/audit")
async def admin_audit_page(
    request: Request,
    viewer: AdminViewer,
    services: ServicesDep,
    action: Annotated[str, Query(max_length=64)] = "",
    cursor: Cursor = None,
) -> Response:
    page = await call(services.admin.audit_log, action=action or None, cursor=cursor, limit=100)
    return render(request, "admin_audit.html", viewer, page=page, action=action)


@router.get("/admin")
async def admin_analytics_page(
    request: Request, viewer: AdminViewer, services: ServicesDep, days: Annotated[int, Query(ge=1, le=365)] = 30
) -> Response:
    data = await call(services.analytics.admin, days)
    labels = [str(d.date) for d in data.days]
    failure = [
        (str(d.date), 100.0 * d.failed / (d.succeeded + d.failed) if d.succeeded + d.failed else 0.0) for d in data.days
    ]
    return render(
        request,
        "admin.html",
        viewer,
        data=data,
        days=days,
        labels=labels,
        failure=failure,
        per_day=[(str(d.date), d.jobs) for d in data.days],
        durations=[("p50", [d.p50_seconds for d in data.days]), ("p95", [d.p95_seconds for d in data.days])],
    )


@router.get("/admin/jobs")
async def admin_jobs_page(
    request: Request,
    viewer: AdminViewer,
    services: ServicesDep,
    status: Literal["queued", "running", "succeeded", "failed", "canceled", ""] = "",
    user: Annotated[str, Query(max_length=64)] = "",
    model: Annotated[str, Query(max_length=200)] = "",
    cursor: Cursor = None,
) -> Response:
    page = await call(
        services.job_admin.list,
        status=status or None,
        user_id=user or None,
        model=model or None,
        limit=50,
        cursor=cursor,
    )
    return render(request, "admin_jobs.html", viewer, page=page, status=status, user=user, model=model)
