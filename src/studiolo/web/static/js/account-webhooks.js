// Account → Webhooks: the per-job signing secret, endpoints (add, enable/disable, delete, secret, test event) and
// each endpoint's delivery log with resend. Everything is drawn from the API (docs/webhooks.md), so what the page
// shows is what an integration reading /api/v1/webhooks sees.
import { api, ApiError, apiPath, clearFieldErrors, confirmDialog, copyText, el, localTime, showFieldErrors, toast } from "./app.js";

const $ = (id) => document.getElementById(id);
const list = $("hooks");
const form = $("hook-form");
const POLL_MS = 1500; // a log with pending messages refreshes itself until they settle
const polls = new Map(); // endpoint id -> timer of its log's next refresh

const REASONS = {
  disabled_by_user: "Disabled by you.",
  gone: "Disabled: your server answered 410 Gone.",
  failing: "Disabled: deliveries kept failing. Enable it again, then resend what it missed.",
};

/** "Only jobs of the API key …" as the form's select words it, so a key's name is written in one place. */
function jobsText(apiKeyId) {
  if (!apiKeyId) return "Every job of my account";
  const option = [...$("hook-key").options].find((o) => o.value === apiKeyId);
  return option ? option.textContent : "Only jobs of a revoked API key";
}

// --- secrets: one behaviour for the account's secret and each endpoint's --------------------------------------
/** The markup the template has for the account secret, for an endpoint's secret. */
function secretBox(endpoint) {
  return el("div", { class: "hook-secret", "data-secret-path": apiPath`webhooks/endpoints/${endpoint.id}/secret`, "data-what": "signing secret" },
    el("p", { class: "secret", "data-secret-value": "", hidden: true }),
    el("div", { class: "row" },
      el("button", { class: "btn btn-sm", type: "button", "data-secret-reveal": "", "aria-expanded": "false", text: "Show secret" }),
      el("button", { class: "btn btn-sm", type: "button", "data-secret-copy": "", hidden: true, text: "Copy secret" }),
      el("button", { class: "btn btn-sm btn-danger", type: "button", "data-secret-rotate": "", text: "Rotate secret" })),
    el("p", { class: "muted small", role: "status", "data-secret-note": "" }));
}

function showSecret(box, view, note = "") {
  const value = box.querySelector("[data-secret-value]");
  value.textContent = view.secret;
  value.hidden = false;
  box.querySelector("[data-secret-copy]").hidden = false;
  const reveal = box.querySelector("[data-secret-reveal]");
  reveal.textContent = "Hide secret";
  reveal.setAttribute("aria-expanded", "true");
  const grace = view.previous_expires_at ? `The previous secret also signs until ${localTime(view.previous_expires_at)}.` : "";
  box.querySelector("[data-secret-note]").textContent = [note, grace].filter(Boolean).join(" ");
}

function hideSecret(box) {
  const value = box.querySelector("[data-secret-value]");
  value.textContent = "";
  value.hidden = true;
  box.querySelector("[data-secret-copy]").hidden = true;
  const reveal = box.querySelector("[data-secret-reveal]");
  reveal.textContent = "Show secret";
  reveal.setAttribute("aria-expanded", "false");
  box.querySelector("[data-secret-note]").textContent = "";
}

async function onSecretClick(event) {
  const button = event.target.closest("button");
  const box = button?.closest(".hook-secret");
  if (!box) return;
  const path = box.dataset.secretPath;
  try {
    if ("secretReveal" in button.dataset) {
      if (button.getAttribute("aria-expanded") === "true") hideSecret(box);
      else showSecret(box, await api(path));
    } else if ("secretCopy" in button.dataset) {
      await copyText(box.querySelector("[data-secret-value]").textContent, "Secret copied");
    } else if ("secretRotate" in button.dataset) {
      const message = `Rotate this ${box.dataset.what}? The old secret keeps signing beside the new one for a grace period, so your receiver can switch over.`;
      if (!(await confirmDialog(message, { ok: "Rotate secret" }))) return;
      button.disabled = true;
      try {
        showSecret(box, await api(path + "/rotate", { method: "POST" }), "New secret.");
      } finally {
        button.disabled = false;
      }
      box.querySelector("[data-secret-copy]").focus();
    }
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    toast(error.message, { kind: "error" });
  }
}

// --- endpoints ------------------------------------------------------------------------------------------------
function infoOf(endpoint) {
  const state = endpoint.enabled
    ? el("span", { class: "badge badge-active", text: "enabled" })
    : el("span", { class: "badge badge-failed", text: "disabled" });
  const meta = el("dl", { class: "meta" },
    el("dt", { text: "Events" }), el("dd", { text: endpoint.events ? endpoint.events.join(", ") : "every event" }),
    el("dt", { text: "Jobs" }), el("dd", { text: jobsText(endpoint.api_key_id) }));
  if (!endpoint.enabled) meta.append(el("dt", { text: "Status" }), el("dd", { text: REASONS[endpoint.disabled_reason] ?? "Disabled." }));
  if (endpoint.failing_since) meta.append(el("dt", { text: "Failing since" }), el("dd", { text: localTime(endpoint.failing_since) }));
  return el("div", { class: "hook-info" },
    el("p", { class: "hook-head" }, el("code", { class: "hook-url", id: `hook-${endpoint.id}-url`, text: endpoint.url }), " ", state),
    endpoint.description ? el("p", { class: "muted small hook-desc", text: endpoint.description }) : null,
    meta);
}

function hookItem(endpoint) {
  const logId = `hook-${endpoint.id}-log`;
  const named = { "aria-describedby": `hook-${endpoint.id}-url` }; // which endpoint a button acts on, for screen readers
  return el("li", { class: "hook", "data-hook": endpoint.id, "data-enabled": String(endpoint.enabled) },
    infoOf(endpoint),
    el("div", { class: "row" },
      el("button", { class: "btn btn-sm", type: "button", "data-act": "test", ...named, text: "Send test event" }),
      el("button", { class: "btn btn-sm", type: "button", "data-act": "log", "aria-expanded": "false", "aria-controls": logId, ...named, text: "Delivery log" }),
      el("button", { class: "btn btn-sm", type: "button", "data-act": "toggle", ...named, text: endpoint.enabled ? "Disable" : "Enable" }),
      el("button", { class: "btn btn-sm btn-danger", type: "button", "data-act": "delete", ...named, text: "Delete" })),
    secretBox(endpoint),
    el("div", { class: "hook-log", id: logId, hidden: true }));
}

function showEmpty() {
  $("no-hooks").hidden = list.children.length > 0;
}

function replaceInfo(item, endpoint) {
  item.querySelector(".hook-info").replaceWith(infoOf(endpoint));
  item.dataset.enabled = String(endpoint.enabled);
  item.querySelector("[data-act=toggle]").textContent = endpoint.enabled ? "Disable" : "Enable";
}

async function loadEndpoints() {
  try {
    const { data } = await api("webhooks/endpoints");
    list.replaceChildren(...data.map(hookItem));
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    list.replaceChildren();
    $("no-hooks").textContent = `Endpoints could not be loaded: ${error.message}`;
  } finally {
    list.removeAttribute("aria-busy");
    showEmpty();
  }
}

/** The form's own checks, in the words the server uses too; true when it may be sent. */
function checkHookForm() {
  if (form.elements.url.value.trim()) return true;
  showFieldErrors(form, { fieldErrors: [{ field: "url", msg: "Enter the URL your server receives events at" }], message: "", details: {} });
  return false;
}

form?.addEventListener("submit", async (event) => {
  event.preventDefault();
  clearFieldErrors(form);
  if (!checkHookForm()) return;
  const events = [...form.querySelectorAll("input[name=event]:checked")].map((c) => c.value);
  const body = { url: form.elements.url.value.trim(), description: form.elements.description.value.trim(), events: events.length ? events : null };
  if (form.elements.api_key_id.value) body.api_key_id = form.elements.api_key_id.value;
  const button = form.querySelector("[type=submit]");
  button.disabled = true;
  try {
    const created = await api("webhooks/endpoints", { method: "POST", body });
    const item = hookItem(created);
    list.append(item);
    showEmpty();
    form.reset();
    // The secret is what the receiver needs next: show it at once, ready to copy.
    const box = item.querySelector(".hook-secret");
    showSecret(box, await api(apiPath`webhooks/endpoints/${created.id}/secret`), "Endpoint added: verify its events with this secret.");
    box.querySelector("[data-secret-copy]").focus();
  } catch (error) {
    if (error instanceof ApiError) showFieldErrors(form, error); else throw error;
  } finally {
    button.disabled = false;
  }
});

// --- the delivery log -------------------------------------------------------------------------------------------
function lastResponse(m) {
  const said = m.last_status_code ? `HTTP ${m.last_status_code}` : m.last_error ?? "";
  const next = m.status === "pending" && m.next_attempt_at ? `next try ${localTime(m.next_attempt_at)}` : "";
  return [said, next].filter(Boolean).join(" · ") || "—";
}

// Retries are seconds to hours apart: the seconds matter, the year does not.
const attemptTime = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric", hour: "numeric", minute: "2-digit", second: "2-digit" });

/** Every attempt ever made ("attempts" counts only those since the last resend). */
function attemptsCell(m) {
  const count = m.attempt_log.length;
  if (!count) return el("td", { text: "none yet" });
  const items = m.attempt_log.map((a) => el("li", {
    text: `${attemptTime.format(new Date(a.attempted_at))}: ${a.status_code ? "HTTP " + a.status_code : a.error ?? "no answer"}, ${a.duration_ms} ms`,
  }));
  return el("td", {}, el("details", { "data-message": m.id },
    el("summary", { text: `${count} attempt${count === 1 ? "" : "s"}` }), el("ol", { class: "attempts small" }, ...items)));
}

function messageRow(m) {
  return el("tr", { "data-message-id": m.id },
    el("td", {}, el("code", { text: m.event_type }), el("span", { class: "muted small hook-when", text: localTime(m.created_at) })),
    el("td", {}, el("span", { class: `badge badge-${m.status}`, text: m.status })),
    attemptsCell(m),
    el("td", { class: "hook-response", text: lastResponse(m) }),
    el("td", {}, el("button", { class: "btn btn-sm", type: "button", "data-resend": m.id, text: "Resend" })));
}

function logTable(messages) {
  return el("div", { class: "table-wrap" }, el("table", {},
    el("caption", { class: "visually-hidden", text: "Deliveries, newest first" }),
    el("thead", {}, el("tr", {}, ...["Event", "Status", "Attempts", "Last response"].map((t) => el("th", { scope: "col", text: t })),
      el("th", { scope: "col" }, el("span", { class: "visually-hidden", text: "Actions" })))),
    el("tbody", {}, ...messages.map(messageRow))));
}

async function loadLog(item) {
  const id = item.dataset.hook;
  clearTimeout(polls.get(id));
  polls.delete(id);
  const log = item.querySelector(".hook-log");
  if (log.hidden) return;
  let messages;
  try {
    ({ data: messages } = await api(apiPath`webhooks/endpoints/${id}/messages` + "?limit=20"));
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    log.replaceChildren(el("p", { class: "form-error", role: "alert", text: error.message }));
    return;
  }
  const seen = JSON.stringify(messages);
  if (log.dataset.seen !== seen) {
    // A refresh must not close what the reader opened or take their focus away.
    const open = new Set([...log.querySelectorAll("details[open]")].map((d) => d.dataset.message));
    const focused = document.activeElement?.closest?.(".hook-log") === log ? document.activeElement : null;
    const focusKey = focused?.dataset.resend ?? (focused?.matches("[data-refresh]") ? "refresh" : null);
    log.dataset.seen = seen;
    log.replaceChildren(
      el("div", { class: "row spread" }, el("h4", { text: "Delivery log" }),
        el("button", { class: "btn btn-sm btn-ghost", type: "button", "data-refresh": "", text: "Refresh" })),
      messages.length ? logTable(messages) : el("p", { class: "muted small", text: "Nothing sent yet. Send a test event to try the endpoint." }));
    log.querySelectorAll("details[data-message]").forEach((d) => { d.open = open.has(d.dataset.message); });
    if (focusKey === "refresh") log.querySelector("[data-refresh]").focus();
    else if (focusKey) log.querySelector(`[data-resend="${CSS.escape(focusKey)}"]`)?.focus();
  }
  if (messages.some((m) => m.status === "pending")) polls.set(id, setTimeout(() => loadLog(item), POLL_MS));
}

async function openLog(item) {
  const log = item.querySelector(".hook-log");
  const button = item.querySelector("[data-act=log]");
  log.hidden = false;
  button.setAttribute("aria-expanded", "true");
  await loadLog(item);
}

// --- one listener for every endpoint's buttons ----------------------------------------------------------------
list?.addEventListener("click", async (event) => {
  const button = event.target.closest("button");
  const item = button?.closest("li[data-hook]");
  if (!item) return;
  const id = item.dataset.hook;
  const url = item.querySelector(".hook-url").textContent;
  try {
    if (button.dataset.act === "test") {
      button.disabled = true;
      await api(apiPath`webhooks/endpoints/${id}/test`, { method: "POST" }).finally(() => { button.disabled = false; });
      toast("Test event queued.");
      await openLog(item);
    } else if (button.dataset.act === "log") {
      if (button.getAttribute("aria-expanded") === "true") {
        item.querySelector(".hook-log").hidden = true;
        button.setAttribute("aria-expanded", "false");
        clearTimeout(polls.get(id));
      } else await openLog(item);
    } else if (button.dataset.act === "toggle") {
      const enabled = item.dataset.enabled !== "true";
      button.disabled = true;
      const view = await api(apiPath`webhooks/endpoints/${id}`, { method: "PATCH", body: { enabled } }).finally(() => { button.disabled = false; });
      replaceInfo(item, view);
      toast(enabled ? "Endpoint enabled." : "Endpoint disabled: nothing is sent to it until you enable it.");
    } else if (button.dataset.act === "delete") {
      if (!(await confirmDialog(`Delete the endpoint ${url}? Its delivery log goes with it.`, { ok: "Delete endpoint" }))) return;
      await api(apiPath`webhooks/endpoints/${id}`, { method: "DELETE" });
      clearTimeout(polls.get(id));
      item.remove();
      showEmpty();
      toast("Endpoint deleted.");
      $("hook-url").focus();
    } else if ("resend" in button.dataset) {
      button.disabled = true;
      await api(apiPath`webhooks/messages/${button.dataset.resend}/resend`, { method: "POST" }).finally(() => { button.disabled = false; });
      toast("Message queued again, with the same webhook-id.");
      await loadLog(item);
    } else if ("refresh" in button.dataset) {
      await loadLog(item);
    }
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    toast(error.message, { kind: "error" });
  }
});

$("hooks-h")?.closest("section").addEventListener("click", onSecretClick);
if (list) loadEndpoints();
