"""A small fake Stripe for tests: the HTTP API endpoints the official SDK calls, a checkout page, signed webhooks.

Real HTTP (uvicorn on 127.0.0.1, a free port, a background thread); point the real ``stripe`` SDK at it with
``StripeClient(key, base_addresses={"api": server.api_base})`` (Studiolo: ``STUDIOLO_STRIPE_API_BASE``).
localstripe has no Checkout, Portal or Prices, and stripe-mock cannot be installed offline, hence this.

Usage::

    from tests.stripe_server import StripeServer

    hook = f"{studiolo_url}/api/v1/billing/stripe/webhook"
    with StripeServer(webhook_url=hook, webhook_secret="whsec_test") as stripe:
        settings = make_settings(billing="stripe", stripe_secret_key="sk_test_x",
                                 stripe_webhook_secret="whsec_test", stripe_api_base=stripe.api_base)
        ...  # Studiolo creates a Checkout Session; its url is  {stripe.url}/checkout/{id}
        # A browser opens that page and clicks "Pay": the server creates the customer and the subscription (or the
        # one-off payment), POSTs signed `checkout.session.completed` (+ `invoice.paid` for a subscription) to
        # webhook_url, then redirects to the session's success_url.  Tests without a browser call
        # stripe.complete_checkout(session_id) instead (same code path).

        # Later life of a subscription, each sending the signed events Stripe would:
        stripe.renew(sub_id); stripe.fail_renewal(sub_id); stripe.update_subscription(sub_id, status="unpaid")
        stripe.cancel_subscription(sub_id); stripe.refund(charge_id, amount=500)

        # Arbitrary events, signed correctly or not (replay, stale timestamp, bad signature, out of order):
        event = stripe.event("customer.subscription.updated", {...}, created=1_700_000_000)
        stripe.send(event)                                  # -> Delivery(status, body)
        stripe.send(event, timestamp=int(time.time()) - 3600)
        stripe.send(event, secret="whsec_wrong")
        stripe.send(event, signature_header="t=1,v1=00")

Without a live Studiolo server (FastAPI TestClient): ``stripe.deliver = deliver_with(test_client)`` (any function
``(url, body, headers) -> (status_code, text)`` will do).

State is public and inspectable: ``customers``, ``sessions``, ``subscriptions``, ``invoices``, ``charges``,
``prices`` (add a known price with ``add_price``), ``requests`` (each API call: method, path, form, idempotency
key), ``deliveries`` (each webhook sent and Studiolo's answer).  ``api_error = (status, error)`` makes the next
API calls fail the way Stripe does (e.g. ``(402, {"type": "card_error", "message": "..."})``).
"""

from __future__ import annotations

import html
import json
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import httpx
import stripe as stripe_sdk
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from studiolo.domain.billing.ledger import add_months
from tests.threaded_server import ThreadedServer

API_VERSION = "2026-10-28.endive"


def _plus_month(ts: int) -> int:
    """One calendar month later, the day clamped (Jan 31 -> Feb 28), as Stripe bills a monthly price."""
    return int(add_months(datetime.fromtimestamp(ts, UTC), 1).timestamp())


Deliver = Callable[[str, bytes, dict[str, str]], tuple[int, str]]


@dataclass
class Delivery:
    event: dict[str, Any]
    status: int
    body: str


def _new_id(prefix: str) -> str:
    return f"{prefix}_test_{secrets.token_hex(8)}"


def decode_form(body: str) -> dict[str, Any]:
    """Stripe's form encoding (``a[b][0][c]=v``) back into nested dicts and lists."""
    root: dict[str, Any] = {}
    for key, value in parse_qsl(body, keep_blank_values=True):
        parts = re.findall(r"[^\[\]]+", key)
        node = root
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value

    def listify(value: Any) -> Any:
        if isinstance(value, dict):
            items = {k: listify(v) for k, v in value.items()}
            if items and all(k.isdigit() for k in items):
                return [items[k] for k in sorted(items, key=int)]
            return items
        return value

    return listify(root)


def deliver_with(client: Any, path: str = "/api/v1/billing/stripe/webhook") -> Deliver:
    """A ``deliver`` that posts with a FastAPI TestClient (no live Studiolo server needed)."""

    def deliver(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
        response = client.post(path, content=body, headers=headers)
        return response.status_code, response.text

    return deliver


def default_deliver(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
    response = httpx.post(url, content=body, headers=headers, timeout=30)
    return response.status_code, response.text


class StripeServer:
    """Start with ``start()`` / ``with``; ``url`` (== ``api_base``) is its base URL."""

    def __init__(self, webhook_url: str | None = None, webhook_secret: str = "whsec_test") -> None:
        self.webhook_url = webhook_url
        self.webhook_secret = webhook_secret
        self.deliver: Deliver = default_deliver
        self.lock = threading.RLock()
        self.customers: dict[str, dict[str, Any]] = {}
        self.sessions: dict[str, dict[str, Any]] = {}
        self.portal_sessions: dict[str, dict[str, Any]] = {}
        self.subscriptions: dict[str, dict[str, Any]] = {}
        self.invoices: dict[str, dict[str, Any]] = {}
        self.charges: dict[str, dict[str, Any]] = {}
        self.prices: dict[str, dict[str, Any]] = {}
        self.payment_intents: dict[str, dict[str, Any]] = {}
        self.requests: list[dict[str, Any]] = []
        self.deliveries: list[Delivery] = []
        self.api_error: tuple[int, dict[str, Any]] | None = None
        self.url = ""
        self._http = ThreadedServer(self._app(), "fake Stripe server")

    @property
    def api_base(self) -> str:
        return self.url

    # --- lifecycle --------------------------------------------------------------------------------------
    def start(self) -> StripeServer:
        self.url = self._http.start()
        return self

    def stop(self) -> None:
        self._http.stop()

    def __enter__(self) -> StripeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- objects ----------------------------------------------------------------------------------------
    def add_price(self, price_id: str, unit_amount: int, currency: str = "usd", interval: str | None = "month") -> None:
        """A price that exists on the account (a plan's ``stripe_price_id``)."""
        recurring = {"interval": interval, "interval_count": 1} if interval else None
        self.prices[price_id] = {
            "id": price_id,
            "object": "price",
            "unit_amount": unit_amount,
            "currency": currency,
            "recurring": recurring,
            "type": "recurring" if interval else "one_time",
            "metadata": {},
        }

    def create_customer(self, email: str | None = None) -> dict[str, Any]:
        customer = {"id": _new_id("cus"), "object": "customer", "email": email, "metadata": {}, "created": _now()}
        with self.lock:
            self.customers[customer["id"]] = customer
        return customer

    def price_of(self, item: dict[str, Any]) -> dict[str, Any]:
        if "price" in item:
            return self.prices[item["price"]]
        data = item["price_data"]
        recurring = data.get("recurring")
        price = {
            "id": _new_id("price"),
            "object": "price",
            "unit_amount": int(data["unit_amount"]),
            "currency": data["currency"],
            "recurring": {"interval": recurring["interval"], "interval_count": 1} if recurring else None,
            "type": "recurring" if recurring else "one_time",
            "product_data": data.get("product_data", {}),
            "metadata": {},
        }
        self.prices[price["id"]] = price
        return price

    def _invoice(self, sub: dict[str, Any], reason: str, status: str = "paid") -> dict[str, Any]:
        item = sub["items"]["data"][0]
        amount = item["price"]["unit_amount"] * item["quantity"]
        invoice_id = _new_id("in")
        invoice = {
            "id": invoice_id,
            "object": "invoice",
            "customer": sub["customer"],
            "status": status,
            "billing_reason": reason,
            "amount_due": amount,
            "amount_paid": amount if status == "paid" else 0,
            "amount_remaining": 0 if status == "paid" else amount,
            "currency": item["price"]["currency"],
            "hosted_invoice_url": f"{self.url}/invoices/{invoice_id}",
            "invoice_pdf": f"{self.url}/invoices/{invoice_id}/pdf",
            "period_start": item["current_period_start"],
            "period_end": item["current_period_end"],
            # API 2025-03-31 and later: the subscription lives under parent.subscription_details.
            "parent": {
                "type": "subscription_details",
                "subscription_details": {"subscription": sub["id"], "metadata": dict(sub["metadata"])},
            },
            "lines": {
                "object": "list",
                "data": [
                    {
                        "object": "line_item",
                        "amount": amount,
                        "period": {"start": item["current_period_start"], "end": item["current_period_end"]},
                        "pricing": {"price_details": {"price": item["price"]["id"]}},
                    }
                ],
            },
            "created": _now(),
        }
        with self.lock:
            self.invoices[invoice_id] = invoice
            sub["latest_invoice"] = invoice_id
        return invoice

    def _charge(self, amount: int, currency: str, customer: str | None) -> dict[str, Any]:
        charge_id = _new_id("ch")
        charge = {
            "id": charge_id,
            "object": "charge",
            "amount": amount,
            "amount_refunded": 0,
            "refunded": False,
            "currency": currency,
            "customer": customer,
            "payment_intent": _new_id("pi"),
            "receipt_url": f"{self.url}/receipts/{charge_id}",
            "status": "succeeded",
            "created": _now(),
        }
        intent = {
            "id": charge["payment_intent"],
            "object": "payment_intent",
            "amount": amount,
            "currency": currency,
            "customer": customer,
            "status": "succeeded",
            "latest_charge": charge_id,
        }
        with self.lock:
            self.charges[charge_id] = charge
            self.payment_intents[intent["id"]] = intent
        return charge

    def charge_for(self, payment_intent: str) -> dict[str, Any]:
        return next(c for c in self.charges.values() if c["payment_intent"] == payment_intent)

    # --- events -----------------------------------------------------------------------------------------
    def event(
        self,
        type_: str,
        obj: dict[str, Any],
        *,
        created: int | None = None,
        previous_attributes: dict[str, Any] | None = None,
        event_id: str | None = None,
    ) -> dict[str, Any]:
        data: dict[str, Any] = {"object": json.loads(json.dumps(obj))}  # a snapshot, as Stripe sends
        if previous_attributes is not None:
            data["previous_attributes"] = previous_attributes
        return {
            "id": event_id or _new_id("evt"),
            "object": "event",
            "api_version": API_VERSION,
            "created": created if created is not None else _now(),
            "data": data,
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": type_,
        }

    def sign(self, payload: bytes, *, timestamp: int | None = None, secret: str | None = None) -> str:
        """A real ``Stripe-Signature`` header (the SDK's own signer)."""
        return str(
            stripe_sdk.WebhookSignature.generate_signature_header(
                payload.decode(), secret or self.webhook_secret, timestamp=timestamp
            )
        )

    def send(
        self,
        event: dict[str, Any] | bytes,
        *,
        timestamp: int | None = None,
        secret: str | None = None,
        signature_header: str | None = None,
        url: str | None = None,
    ) -> Delivery:
        """POST one event to the webhook URL, signed (or mis-signed, as told); returns Studiolo's answer."""
        payload = event if isinstance(event, bytes) else json.dumps(event).encode()
        headers = {"Content-Type": "application/json; charset=utf-8", "User-Agent": "Stripe/1.0 (fake)"}
        if signature_header is None:
            signature_header = self.sign(payload, timestamp=timestamp, secret=secret)
        if signature_header:
            headers["Stripe-Signature"] = signature_header
        target = url or self.webhook_url
        if target is None:
            raise RuntimeError("no webhook_url configured on the fake Stripe server")
        status, body = self.deliver(target, payload, headers)
        delivery = Delivery(json.loads(payload), status, body)
        with self.lock:
            self.deliveries.append(delivery)
        return delivery

    def emit(self, type_: str, obj: dict[str, Any], **kwargs: Any) -> Delivery:
        return self.send(self.event(type_, obj, **kwargs))

    # --- what Stripe does on its own ----------------------------------------------------------------------
    def complete_checkout(self, session_id: str) -> str:
        """The customer pays: objects are created, webhooks sent; returns the success redirect URL."""
        with self.lock:
            session = self.sessions[session_id]
            if session["status"] != "open":
                raise RuntimeError(f"checkout session {session_id} is {session['status']}")
            if session["customer"] is None:
                session["customer"] = self.create_customer(session.get("customer_email"))["id"]
            item = session["line_items_requested"][0]
            price = self.price_of(item)
            quantity = int(item.get("quantity", 1))
            session.update(status="complete", payment_status="paid", amount_total=price["unit_amount"] * quantity)
            session["currency"] = price["currency"]
            invoice = None
            if session["mode"] == "subscription":
                sub = self.create_subscription(session["customer"], price, quantity, session["subscription_metadata"])
                session["subscription"] = sub["id"]
                invoice = self._invoice(sub, "subscription_create")
            else:
                charge = self._charge(session["amount_total"], price["currency"], session["customer"])
                session["payment_intent"] = charge["payment_intent"]
        self.emit("checkout.session.completed", _public(session))
        if invoice is not None:
            self.emit("invoice.paid", invoice)
        return str(session["success_url"]).replace("{CHECKOUT_SESSION_ID}", session_id)

    def create_subscription(
        self, customer: str, price: dict[str, Any], quantity: int = 1, metadata: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        now = _now()
        sub_id = _new_id("sub")
        sub = {
            "id": sub_id,
            "object": "subscription",
            "customer": customer,
            "status": "active",
            "cancel_at_period_end": False,
            "canceled_at": None,
            "created": now,
            "start_date": now,
            "metadata": dict(metadata or {}),
            "latest_invoice": None,
            # API 2025-03-31 and later: the period lives on each subscription item.
            "items": {
                "object": "list",
                "data": [
                    {
                        "id": _new_id("si"),
                        "object": "subscription_item",
                        "price": price,
                        "quantity": quantity,
                        "current_period_start": now,
                        "current_period_end": _plus_month(now),
                    }
                ],
            },
        }
        with self.lock:
            self.subscriptions[sub_id] = sub
        return sub

    def _next_period(self, sub_id: str, status: str, invoice_status: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """The subscription moves on a month and is invoiced for it."""
        with self.lock:
            sub = self.subscriptions[sub_id]
            item = sub["items"]["data"][0]
            item["current_period_start"] = item["current_period_end"]
            item["current_period_end"] = _plus_month(item["current_period_start"])
            sub["status"] = status
            return sub, self._invoice(sub, "subscription_cycle", status=invoice_status)

    def renew(self, sub_id: str) -> dict[str, Any]:
        """A new period starts and is paid: ``invoice.paid`` then ``customer.subscription.updated``."""
        sub, invoice = self._next_period(sub_id, "active", "paid")
        self.emit("invoice.paid", invoice)
        self.emit("customer.subscription.updated", sub)
        return invoice

    def fail_renewal(self, sub_id: str) -> dict[str, Any]:
        """The renewal charge fails: ``invoice.payment_failed`` and the subscription goes ``past_due``."""
        sub, invoice = self._next_period(sub_id, "past_due", "open")
        self.emit("invoice.payment_failed", invoice)
        self.emit("customer.subscription.updated", sub, previous_attributes={"status": "active"})
        return invoice

    def update_subscription(self, sub_id: str, *, send: bool = True, **changes: Any) -> dict[str, Any]:
        """Change a subscription (``status=``, ``cancel_at_period_end=``, ``price=`` an added price id)."""
        with self.lock:
            sub = self.subscriptions[sub_id]
            if "price" in changes:
                sub["items"]["data"][0]["price"] = self.prices[changes.pop("price")]
            sub.update(changes)
            snapshot = json.loads(json.dumps(sub))
        if send:
            self.emit("customer.subscription.updated", snapshot)
        return snapshot

    def cancel_subscription(self, sub_id: str) -> dict[str, Any]:
        with self.lock:
            sub = self.subscriptions[sub_id]
            sub.update(status="canceled", canceled_at=_now())
        self.emit("customer.subscription.deleted", sub)
        return sub

    def refund(self, charge_id: str, amount: int | None = None) -> dict[str, Any]:
        """Refund (part of) a charge: ``charge.refunded`` with the new ``amount_refunded``."""
        with self.lock:
            charge = self.charges[charge_id]
            charge["amount_refunded"] = min(charge["amount"], charge["amount_refunded"] + (amount or charge["amount"]))
            charge["refunded"] = charge["amount_refunded"] == charge["amount"]
        self.emit("charge.refunded", charge)
        return charge

    # --- HTTP -------------------------------------------------------------------------------------------
    def _app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/checkout/sessions", self._create_session, methods=["POST"]),
                Route("/v1/checkout/sessions/{id}", self._get("sessions")),
                Route("/v1/billing_portal/sessions", self._create_portal, methods=["POST"]),
                Route("/v1/subscriptions/{id}", self._get("subscriptions")),
                Route("/v1/customers/{id}", self._get("customers")),
                Route("/v1/invoices/{id}", self._get("invoices")),
                Route("/v1/payment_intents/{id}", self._get("payment_intents")),
                Route("/v1/charges/{id}", self._get("charges")),
                Route("/checkout/{id}", self._checkout_page),
                Route("/checkout/{id}/pay", self._pay, methods=["POST"]),
                Route("/portal/{id}", self._portal_page),
            ]
        )

    async def _api_call(self, request: Request) -> tuple[dict[str, Any], Response | None]:
        form = decode_form((await request.body()).decode())
        with self.lock:
            self.requests.append(
                {
                    "method": request.method,
                    "path": request.url.path,
                    "form": form,
                    "idempotency_key": request.headers.get("idempotency-key"),
                    "stripe_version": request.headers.get("stripe-version"),
                }
            )
        if not request.headers.get("authorization", "").startswith("Bearer sk_"):
            return form, _error(401, {"type": "invalid_request_error", "message": "Invalid API Key provided"})
        if self.api_error is not None:
            return form, _error(*self.api_error)
        return form, None

    async def _create_session(self, request: Request) -> Response:
        form, failed = await self._api_call(request)
        if failed:
            return failed
        items = form.get("line_items") or []
        if form.get("mode") not in ("subscription", "payment") or not items or not form.get("success_url"):
            return _error(400, {"type": "invalid_request_error", "message": "mode, line_items, success_url needed"})
        if "price" in items[0] and items[0]["price"] not in self.prices:
            return _error(400, {"type": "invalid_request_error", "code": "resource_missing", "param": "price"})
        session_id = _new_id("cs")
        session = {
            "id": session_id,
            "object": "checkout.session",
            "mode": form["mode"],
            "status": "open",
            "payment_status": "unpaid",
            "url": f"{self.url}/checkout/{session_id}",
            "success_url": form["success_url"],
            "cancel_url": form.get("cancel_url"),
            "client_reference_id": form.get("client_reference_id"),
            "customer": form.get("customer"),
            "customer_email": form.get("customer_email"),
            "metadata": form.get("metadata", {}),
            "subscription": None,
            "payment_intent": None,
            "amount_total": None,
            "currency": None,
            "created": _now(),
            "line_items_requested": items,
            "subscription_metadata": (form.get("subscription_data") or {}).get("metadata", {}),
        }
        with self.lock:
            self.sessions[session_id] = session
        return JSONResponse(_public(session))

    async def _create_portal(self, request: Request) -> Response:
        form, failed = await self._api_call(request)
        if failed:
            return failed
        if form.get("customer") not in self.customers:
            return _error(400, {"type": "invalid_request_error", "code": "resource_missing", "param": "customer"})
        portal_id = _new_id("bps")
        portal = {
            "id": portal_id,
            "object": "billing_portal.session",
            "customer": form["customer"],
            "return_url": form.get("return_url"),
            "url": f"{self.url}/portal/{portal_id}",
            "created": _now(),
        }
        with self.lock:
            self.portal_sessions[portal_id] = portal
        return JSONResponse(portal)

    def _get(self, collection: str) -> Callable[[Request], Any]:
        async def get(request: Request) -> Response:
            _, failed = await self._api_call(request)
            if failed:
                return failed
            obj = getattr(self, collection).get(request.path_params["id"])
            if obj is None:
                return _error(404, {"type": "invalid_request_error", "code": "resource_missing"})
            obj = _public(obj)
            for name in decode_form(request.url.query).get("expand", []):  # expand[0]=latest_charge
                if isinstance(obj.get(name), str) and obj[name] in self.charges:
                    obj[name] = self.charges[obj[name]]
            return JSONResponse(obj)

        return get

    async def _checkout_page(self, request: Request) -> Response:
        session = self.sessions.get(request.path_params["id"])
        if session is None:
            return HTMLResponse("<h1>No such checkout session</h1>", status_code=404)
        item = session["line_items_requested"][0]
        label = item.get("price") or item.get("price_data", {}).get("product_data", {}).get("name", "")
        cancel = html.escape(session["cancel_url"] or "/")
        return HTMLResponse(
            "<!doctype html><html><head><title>Fake Stripe Checkout</title></head><body>"
            f"<h1>Fake Stripe Checkout</h1><p id='item'>{html.escape(str(label))}</p>"
            f"<p id='mode'>{html.escape(session['mode'])}</p>"
            f"<form method='post' action='/checkout/{html.escape(session['id'])}/pay'>"
            "<button type='submit' id='pay'>Pay</button></form>"
            f"<a id='cancel' href='{cancel}'>Cancel</a></body></html>"
        )

    async def _pay(self, request: Request) -> Response:
        session = self.sessions.get(request.path_params["id"])
        if session is None:
            return HTMLResponse("<h1>No such checkout session</h1>", status_code=404)
        if session["status"] != "open":  # paid already (a second click): back to the shop, nothing sent again
            target = str(session["success_url"]).replace("{CHECKOUT_SESSION_ID}", session["id"])
            return RedirectResponse(target, status_code=303)
        target = await run_in_threadpool(self.complete_checkout, session["id"])
        return RedirectResponse(target, status_code=303)

    async def _portal_page(self, request: Request) -> Response:
        portal = self.portal_sessions.get(request.path_params["id"])
        if portal is None:
            return HTMLResponse("<h1>No such portal session</h1>", status_code=404)
        back = html.escape(portal["return_url"] or "/")
        return HTMLResponse(
            "<!doctype html><html><head><title>Fake Stripe Customer Portal</title></head><body>"
            f"<h1>Fake Stripe Customer Portal</h1><a id='return' href='{back}'>Return</a></body></html>"
        )


def _now() -> int:
    return int(time.time())


def _public(obj: dict[str, Any]) -> dict[str, Any]:
    """An object as the API shows it (our bookkeeping fields stripped)."""
    return {k: v for k, v in obj.items() if k not in ("line_items_requested", "subscription_metadata")}


def _error(status: int, error: dict[str, Any]) -> Response:
    return JSONResponse({"error": error}, status_code=status)
