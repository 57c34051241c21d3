// The studio's shared layer: API calls (cookie session + CSRF, one refresh at a time), readable errors,
// toasts, forms wired to the API, offline indicator, install prompt and service worker (the theme: theme.js).
const API = "/api/v1";

export function cookie(name) {
  const hit = document.cookie.split("; ").find((c) => c.startsWith(name + "="));
  return hit ? decodeURIComponent(hit.slice(name.length + 1)) : "";
}

export class ApiError extends Error {
  constructor(status, body) {
    const err = body?.error ?? {};
    super(messageFor(status, err));
    this.status = status;
    this.code = err.code ?? (status === 0 ? "network" : "http_" + status);
    this.details = err.details ?? {};
    this.fieldErrors = (this.details.errors ?? []).map((e) => ({ field: (e.loc ?? []).at(-1), msg: e.msg }));
  }
}

function messageFor(status, err) {
  if (status === 0) return "The server could not be reached. Check your connection and try again.";
  if (status === 429) return err.message || "Too many attempts: wait a moment and try again.";
  const first = err.details?.errors?.[0];
  if (err.code === "invalid_input" && first) return `${labelOf((first.loc ?? []).at(-1))}: ${first.msg}`;
  return err.message || `Something went wrong (HTTP ${status}).`;
}

function labelOf(field) {
  if (!field) return "Input";
  const el = document.querySelector(`[name="${CSS.escape(String(field))}"]`);
  const label = el?.labels?.[0]?.textContent?.trim();
  return label || String(field).replaceAll("_", " ");
}

// Refresh tokens rotate strictly (reusing a spent one ends the session), so refreshes must never overlap:
// one promise per tab, and a Web Lock across tabs where the browser has them.
let refreshing = null;
/** Renew the session from the refresh cookie: "renewed", "ended" (the server said no: nobody is signed in any
 * more) or "unreachable" (no answer, e.g. offline: the session may well be alive). */
export function renewSession() {
  if (!refreshing) {
    const run = async () => {
      const before = cookie("studiolo_csrf");
      // keepalive: a refresh the server already rotated must deliver its new cookies even when the user leaves
      // the page mid-request; an aborted one would leave only the spent token, and reusing it ends the session.
      const res = await fetch(API + "/auth/refresh", {
        method: "POST", credentials: "same-origin", keepalive: true, headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ use_cookies: true }),
      }).catch(() => null);
      if (res?.ok) return "renewed";
      // Another tab may have refreshed while we waited for the lock: its new cookies are ours too.
      if (res?.status === 401) return cookie("studiolo_csrf") !== before ? "renewed" : "ended";
      return "unreachable";
    };
    const locked = navigator.locks ? navigator.locks.request("studiolo-refresh", run) : run();
    refreshing = locked.finally(() => { setTimeout(() => { refreshing = null; }, 0); });
  }
  return refreshing;
}

/** True when the session was renewed. */
export async function refreshSession() {
  return (await renewSession()) === "renewed";
}

export function toSignIn() {
  const next = location.pathname + location.search;
  location.assign("/signin?next=" + encodeURIComponent(next));
}

// --- building URLs ------------------------------------------------------------------------------------
// Ids come from the URL (/gallery?image=…), the DOM and storage: anything a link can carry. Spliced into a
// path as they are, "../admin/users/<id>/activate#" would turn the lightbox's buttons into calls to admin
// routes with the viewer's CSRF header (tests/e2e/test_web_hardening.py). So every id is checked for the
// shape the server gives ids (a UUID), and every value put into a path goes through apiPath.
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** True for a string shaped like the server's ids (UUIDs). */
export function isId(value) {
  return typeof value === "string" && UUID.test(value);
}

/** A path with each ${value} as exactly one path segment: apiPath`images/${id}/regenerate`.
 * Values are percent-encoded (a "/", "?" or "#" stays inside its segment); "", "." and ".." are refused,
 * because browsers resolve dot segments (even encoded ones) before the request leaves. */
export function apiPath(strings, ...values) {
  let out = strings[0];
  values.forEach((value, i) => {
    const text = String(value);
    if (text === "" || text === "." || text === "..") throw new TypeError(`not a path segment: "${text}"`);
    out += encodeURIComponent(text) + strings[i + 1];
  });
  return out;
}

/** Call the API. ``body`` may be an object (sent as JSON) or FormData. Throws ApiError with a readable message. */
export async function api(path, { method = "GET", body, headers = {}, retry = true, keepalive = false } = {}) {
  const init = { method, credentials: "same-origin", headers: { Accept: "application/json", ...headers }, keepalive };
  if (method !== "GET" && method !== "HEAD") init.headers["X-CSRF-Token"] = cookie("studiolo_csrf");
  if (body instanceof FormData) init.body = body;
  else if (body !== undefined) { init.body = JSON.stringify(body); init.headers["Content-Type"] = "application/json"; }
  let res;
  try { res = await fetch(path.startsWith("/") ? path : API + "/" + path, init); }
  catch { throw new ApiError(0, null); }
  if (res.status === 401 && retry && !path.includes("/auth/")) {
    if (await refreshSession()) return api(path, { method, body, headers, retry: false, keepalive });
    toSignIn();
    throw new ApiError(401, await res.json().catch(() => null));
  }
  if (res.status === 204) return null;
  const data = await res.json().catch(() => null);
  if (!res.ok) throw new ApiError(res.status, data);
  return data;
}

// --- toasts -----------------------------------------------------------------------------------------
export function toast(message, { kind = "info", action, timeout = 5000 } = {}) {
  const box = document.getElementById("toasts");
  // A modal dialog makes the rest of the page inert: a toast (and its Undo) shown while one is open goes
  // inside it, and back to the page when it closes.
  const modal = [...document.querySelectorAll("dialog[open]")].at(-1);
  if (modal && box.parentNode !== modal) {
    modal.append(box);
    modal.addEventListener("close", () => document.body.append(box), { once: true });
  }
  const el = document.createElement("div");
  el.className = "toast" + (kind === "error" ? " error" : "");
  el.setAttribute("role", kind === "error" ? "alert" : "status");
  const text = document.createElement("span");
  text.textContent = message;
  el.append(text);
  let timer;
  const close = () => { clearTimeout(timer); el.remove(); };
  if (action) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = action.label;
    b.addEventListener("click", () => { close(); action.run(); });
    el.append(b);
  }
  box.append(el);
  timer = setTimeout(() => { close(); action?.expire?.(); }, timeout);
  return close;
}

// --- forms ------------------------------------------------------------------------------------------
/** Show an API error in ``form``: each field's message next to that field (the envelope's ``loc``, or the field a
 * domain error names in ``details.field``, e.g. prompt_too_long), the first such field focused. The message is
 * said once: above the submit button (or as a toast) only when some of it has no field to stand next to. */
export function showFieldErrors(form, error) {
  clearFieldErrors(form);
  const errors = [...(error.fieldErrors ?? [])];
  if (error.details?.field) errors.push({ field: error.details.field, msg: error.message });
  let first = null;
  let unplaced = errors.length === 0;
  for (const { field, msg } of errors) {
    const name = field ? CSS.escape(String(field)) : null;
    const slot = name && form.querySelector(`[data-error-for="${name}"]`);
    if (!slot) { unplaced = true; continue; }
    const input = form.querySelector(`[name="${name}"]`);
    input?.setAttribute("aria-invalid", "true");
    if (!slot.textContent) slot.textContent = String(msg).replace(/^Value error, /, "");
    first ??= input;
  }
  first?.focus();
  if (!unplaced) return;
  const slot = form.querySelector("[data-form-error]");
  if (slot) slot.textContent = error.message;
  else toast(error.message, { kind: "error" });
}

export function clearFieldErrors(form) {
  form.querySelectorAll("[aria-invalid]").forEach((el) => el.removeAttribute("aria-invalid"));
  form.querySelectorAll("[data-error-for], [data-form-error], [data-form-ok]").forEach((el) => { el.textContent = ""; });
}

/** Values of a form as JSON: numbers for type=number, booleans for checkboxes, empty optional fields left out. */
export function formJson(form) {
  const out = {};
  for (const el of form.elements) {
    if (!el.name || el.disabled || el.type === "submit" || el.type === "file" || "skip" in el.dataset) continue;
    if (el.type === "checkbox") out[el.name] = el.checked;
    else if (el.type === "radio") { if (el.checked) out[el.name] = el.value; }
    else if (el.value === "" && !el.required) continue;
    else out[el.name] = el.type === "number" ? Number(el.value) : el.value;
  }
  return out;
}

/** Forms marked data-api="/api/v1/..." post JSON to the API and show errors next to their fields. */
export function wireApiForms(handlers = {}) {
  for (const form of document.querySelectorAll("form[data-api]")) {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      clearFieldErrors(form);
      const button = form.querySelector("[type=submit]");
      if (button) button.disabled = true;
      try {
        const extra = form.dataset.extra ? JSON.parse(form.dataset.extra) : {};
        const body = { ...formJson(form), ...extra };
        const data = await api(form.dataset.api, { method: form.dataset.method || "POST", body });
        const done = handlers[form.dataset.done];
        if (done) await done(data, form, body);
        else if (form.dataset.next) location.assign(form.dataset.next);
        const ok = form.querySelector("[data-form-ok]");
        if (ok && form.dataset.ok) ok.textContent = form.dataset.ok;
      } catch (error) {
        if (error instanceof ApiError) showFieldErrors(form, error);
        else throw error;
      } finally {
        if (button) button.disabled = false;
      }
    });
  }
}

/** Where to go after signing in: the one rule the server applies too (studiolo/domain/accounts/redirects.py),
 * a path on this origin and nothing a browser could read as another host. Tab, CR and LF are dropped by URL
 * parsers and a backslash reads as a slash, so "/\t/evil.example" is "//evil.example": such values are refused
 * outright, then what is left is resolved against this origin and must stay on it. Returns null otherwise. */
export function sameOriginPath(raw) {
  if (typeof raw !== "string" || !raw.startsWith("/") || raw.startsWith("//")) return null;
  if (/[\u0000-\u0020\u007f\\]/.test(raw)) return null;
  let url;
  try { url = new URL(raw, location.origin); } catch { return null; }
  if (url.origin !== location.origin) return null;
  return url.pathname + url.search + url.hash;
}

const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
/** "6 Dec 2026, 01:00" in the viewer's own time zone, from an ISO time (the text as given if it is not one). */
export function localTime(iso) {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso) : dateTime.format(d);
}

export function safeNext(fallback = "/generate") {
  return sameOriginPath(new URLSearchParams(location.search).get("next") ?? "") ?? fallback;
}

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

export async function copyText(text, what = "Copied") {
  try { await navigator.clipboard.writeText(text); toast(what + " to the clipboard."); }
  catch { toast("Copy failed: your browser did not allow it.", { kind: "error" }); }
}

export function confirmDialog(message, { ok = "Delete", danger = true } = {}) {
  return new Promise((resolve) => {
    const dialog = el("dialog", { "aria-labelledby": "confirm-text" });
    const yes = el("button", { class: "btn " + (danger ? "btn-danger" : "btn-primary"), type: "button", text: ok });
    const no = el("button", { class: "btn", type: "button", text: "Cancel" });
    dialog.append(el("div", { class: "dialog-body" }, el("p", { id: "confirm-text", text: message })),
      el("div", { class: "dialog-actions" }, no, yes));
    const finish = (value) => { dialog.close(); dialog.remove(); resolve(value); };
    yes.addEventListener("click", () => finish(true));
    no.addEventListener("click", () => finish(false));
    dialog.addEventListener("cancel", () => finish(false));
    document.body.append(dialog);
    dialog.showModal();
    no.focus();
  });
}

// --- what this browser keeps of a user ------------------------------------------------------------------
// The service worker's copies of pages and images (sw.js) and the generator's remembered settings belong to
// whoever is signed in; the theme is the device's. Nothing is kept in IndexedDB. Names are shared with sw.js.
const USER_CACHES = ["studiolo-pages", "studiolo-images"];
const USER_STORAGE = ["studiolo-generator", "studiolo-generator-dismissed", "studiolo-generator-history"];

/** When nobody is signed in any more (sign-out, account deletion, a session that ended): drop what this browser
 * keeps of the user, so the next person on it cannot open their gallery offline. Resolves once it is gone. */
export async function forgetDevice() {
  try { for (const key of USER_STORAGE) localStorage.removeItem(key); } catch { /* storage blocked */ }
  try { sessionStorage.clear(); } catch { /* storage blocked */ }
  // The worker also drops copies it is still writing (a thumbnail fetched a moment ago); the page deletes the
  // caches itself as well, so it does not depend on a worker being there or answering.
  const registration = await navigator.serviceWorker?.getRegistration?.().catch(() => null);
  const worker = registration?.active;
  const told = worker ? new Promise((resolve) => {
    const channel = new MessageChannel();
    channel.port1.onmessage = resolve;
    worker.postMessage({ type: "signed-out" }, [channel.port2]);
    setTimeout(resolve, 3000); // a worker being replaced may never answer
  }) : null;
  if (globalThis.caches) await Promise.all(USER_CACHES.map((name) => caches.delete(name).catch(() => false)));
  await told;
}

/** Sign out of this browser (or every device), forget what it kept, and go to the sign-in page. */
export async function signOut({ everywhere = false } = {}) {
  // An expired access cookie is renewed first (api() does that on a 401), so the session ends on the server too.
  try { await api("auth/logout", { method: "POST", body: everywhere ? { everywhere: true } : {} }); }
  catch { /* offline or already ended: this browser forgets the user either way */ }
  await forgetDevice();
  location.assign("/signin");
}

// --- page chrome: menu, offline, install, service worker ----------------------------------------
function chrome() {
  const menu = document.getElementById("menu-toggle");
  const nav = document.getElementById("nav");
  menu?.addEventListener("click", () => {
    const open = nav.classList.toggle("open");
    menu.setAttribute("aria-expanded", String(open));
  });
  // The theme control is theme.js's. The offline page carries both headers: show the one that fits this browser.
  const signedIn = Boolean(cookie("studiolo_csrf"));
  for (const node of document.querySelectorAll("[data-shell]")) node.hidden = (node.dataset.shell === "signed-in") !== signedIn;
  const banner = document.getElementById("offline-banner");
  const online = () => { banner.hidden = navigator.onLine; };
  addEventListener("online", online);
  addEventListener("offline", online);
  online();
  const install = document.getElementById("install-app");
  let deferred = null;
  addEventListener("beforeinstallprompt", (event) => {
    event.preventDefault();
    deferred = event;
    install.hidden = false;
  });
  install?.addEventListener("click", async () => {
    if (!deferred) return;
    deferred.prompt();
    await deferred.userChoice.catch(() => null);
    deferred = null;
    install.hidden = true;
  });
  addEventListener("appinstalled", () => { install.hidden = true; });
  document.getElementById("sign-out")?.addEventListener("click", () => signOut());
  // A page served to nobody, in a browser that holds no session at all: whatever the worker and storage kept
  // belonged to someone whose session is over (it expired, or ended on another device), not to the next person.
  if ("signedOut" in document.body.dataset && !cookie("studiolo_csrf")) forgetDevice();
  if ("serviceWorker" in navigator && document.body.dataset.sw !== "off") {
    navigator.serviceWorker.register("/sw.js", { scope: "/" }).catch(() => { /* the studio works without it */ });
  }
}

chrome();

/** Buttons marked data-api call the API (data-method, optional data-confirm), then reload or drop their row. */
export function wireApiButtons() {
  document.addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-api]");
    if (!button) return;
    if (button.dataset.confirm && !(await confirmDialog(button.dataset.confirm, { ok: button.textContent.trim() }))) return;
    button.disabled = true;
    try {
      const body = button.dataset.body ? JSON.parse(button.dataset.body) : undefined;
      await api(button.dataset.api, { method: button.dataset.method || "POST", body });
      if (button.dataset.ok) toast(button.dataset.ok);
      if (button.dataset.done === "remove-row") button.closest("tr, li, .card")?.remove();
      else location.reload();
    } catch (error) {
      toast(error.message, { kind: "error" });
    } finally {
      button.disabled = false;
    }
  });
}
wireApiButtons();

// --- keyboard shortcuts ------------------------------------------------------------------------------------
// One registry for the whole studio: each page registers what its keys do (section, keys, description) and
// "?" lists them all. Pages still handle their own keys; the registry is what the user is told. It is also on
// window.studiolo.shortcuts, so a page's script that does not import app.js can register too.
const registered = [];

/** True when a key typed now belongs to a text field (or a select), not to a shortcut. */
export function typingIn(target) {
  const node = target instanceof Element ? target : null;
  if (!node) return false;
  if (node.isContentEditable) return true;
  if (node.matches("textarea, select")) return true;
  return node.matches("input") && !["checkbox", "radio", "button", "submit", "reset", "range"].includes(node.type);
}

export const shortcuts = {
  /** Add a shortcut to the "?" list; ``keys`` is what to press, as shown ("Ctrl+Enter", "←", "d or Delete"). */
  register(section, keys, description) {
    const known = registered.find((s) => s.section === section && s.keys === keys);
    if (known) known.description = description;
    else registered.push({ section, keys, description });
  },
  list() { return registered.map((s) => ({ ...s })); },
  open: () => openShortcuts(),
};
globalThis.studiolo = Object.assign(globalThis.studiolo ?? {}, { shortcuts });

shortcuts.register("Everywhere", "?", "Show these keyboard shortcuts");
shortcuts.register("Everywhere", "Esc", "Close a dialog or menu");

function keyCaps(keys) {
  // "Ctrl+Enter or ↑" -> <kbd>Ctrl</kbd>+<kbd>Enter</kbd> or <kbd>↑</kbd>
  // Each alternative stays on one line; a long list wraps between alternatives, never inside a combination.
  const out = [];
  keys.split(" or ").forEach((alt, i) => {
    if (i) out.push(document.createTextNode(" or "));
    const combo = el("span", { class: "keys" });
    alt.split("+").forEach((key, j) => {
      if (j) combo.append("+");
      combo.append(el("kbd", { text: key }));
    });
    out.push(combo);
  });
  return out;
}

let shortcutsDialog = null;
function openShortcuts() {
  if (shortcutsDialog?.open) return;
  const returnTo = document.activeElement;
  shortcutsDialog?.remove();
  const sections = new Map();
  for (const s of registered) {
    if (!sections.has(s.section)) sections.set(s.section, []);
    sections.get(s.section).push(s);
  }
  const close = el("button", { class: "btn btn-sm", type: "button", text: "Close" });
  const body = el("div", { class: "dialog-body shortcut-list" });
  for (const [section, items] of sections) {
    const list = el("dl", { class: "shortcuts" });
    for (const s of items) list.append(el("dt", {}, ...keyCaps(s.keys)), el("dd", { text: s.description }));
    body.append(el("section", {}, el("h3", { text: section }), list));
  }
  const dialog = el("dialog", { class: "shortcuts-dialog", id: "shortcuts-dialog", "aria-labelledby": "shortcuts-title" },
    el("div", { class: "dialog-head" }, el("h2", { id: "shortcuts-title", text: "Keyboard shortcuts" }), close), body);
  shortcutsDialog = dialog;
  close.addEventListener("click", () => dialog.close());
  dialog.addEventListener("click", (e) => { if (e.target === dialog) dialog.close(); });
  // A modal dialog keeps focus inside it (the page behind is inert); on closing, focus goes back where it was.
  dialog.addEventListener("close", () => {
    dialog.remove();
    if (returnTo instanceof HTMLElement && returnTo.isConnected) returnTo.focus();
  });
  document.body.append(dialog);
  dialog.showModal();
  close.focus();
}

document.addEventListener("keydown", (event) => {
  if (event.key !== "?" || event.ctrlKey || event.metaKey || event.altKey || typingIn(event.target)) return;
  event.preventDefault();
  openShortcuts();
});
