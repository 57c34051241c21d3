// Studiolo's service worker: the app shell cached at install, pages network-first with the last copy kept
// for offline use, gallery images cache-first (their URLs never change content), everything else live.
// The pages and images belong to the signed-in user: they are dropped when nobody is signed in any more (a
// sign-out, or the sign-in page finding the session over; see forgetDevice in app.js), not on every trip
// through /signin, which an expired access cookie also makes and which resumes the same session.
const VERSION = "__VERSION__";
const SHELL = __SHELL__;
const SHELL_CACHE = "studiolo-shell-" + VERSION;
const PAGES = "studiolo-pages";
const IMAGES = "studiolo-images";
const MAX_IMAGES = 600;
const MAX_PAGES = 40;
const OFFLINE_PAGES = ["/gallery", "/generate", "/dashboard", "/collections", "/account"];

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(SHELL_CACHE).then((c) => c.addAll([...SHELL, "/offline"])).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil((async () => {
    for (const name of await caches.keys()) {
      if (name.startsWith("studiolo-shell-") && name !== SHELL_CACHE) await caches.delete(name);
    }
    await self.clients.claim();
  })());
});

// What the worker keeps of a user (PAGES, IMAGES) goes when nobody is signed in any more: the page deletes both
// caches and tells the worker (forgetDevice in app.js; tests/e2e/test_web_hardening.py signs two people in and
// out of one browser). A copy still being written then (a thumbnail fetched a moment before) must not bring the
// cache back: each write carries the sign-out count from when its request was sent, and one that finishes
// after a sign-out is not kept.
let signOuts = 0;

self.addEventListener("message", (event) => {
  if (event.data?.type !== "signed-out") return;
  signOuts += 1;
  event.waitUntil(Promise.all([caches.delete(PAGES), caches.delete(IMAGES)])
    .then(() => event.ports[0]?.postMessage("forgotten")));
});

async function trim(cacheName, max) {
  const cache = await caches.open(cacheName);
  const keys = await cache.keys();
  for (const request of keys.slice(0, Math.max(0, keys.length - max))) await cache.delete(request);
}

// Cache writes happen after the response is handed to the page (event.waitUntil), never before it.
// ``since`` is the sign-out count when the request was sent.
async function keep(cacheName, max, request, response, since) {
  if (signOuts !== since) return;
  const cache = await caches.open(cacheName);
  await cache.put(request, response);
  if (signOuts !== since) { await cache.delete(request); return; }
  await trim(cacheName, max);
}

async function page(event) {
  const { request } = event;
  const url = new URL(request.url);
  const since = signOuts;
  try {
    const response = await fetch(request);
    if (response.ok && !response.redirected && OFFLINE_PAGES.includes(url.pathname)) {
      event.waitUntil(keep(PAGES, MAX_PAGES, request, response.clone(), since));
    }
    return response;
  } catch {
    const cached = (await caches.match(request, { ignoreVary: true })) ||
      (await caches.match(url.pathname, { ignoreVary: true, ignoreSearch: true })) ||
      (await caches.match("/offline", { ignoreVary: true }));
    return cached || Response.error();
  }
}

async function image(event) {
  const { request } = event;
  const hit = await caches.match(request, { ignoreVary: true, cacheName: IMAGES });
  if (hit) return hit;
  const since = signOuts;
  // Without a copy of its own, the worker asks the server (cache: "no-cache"): a picture the HTTP cache still
  // holds from before a sign-out is never shown without the server seeing a session (offline: not at all).
  const response = await fetch(request, { cache: "no-cache" });
  if (response.ok) event.waitUntil(keep(IMAGES, MAX_IMAGES, request, response.clone(), since));
  return response;
}

async function shell(request) {
  const hit = await caches.match(request, { ignoreVary: true });
  if (hit) return hit;
  const response = await fetch(request);
  if (response.ok) (await caches.open(SHELL_CACHE)).put(request, response.clone());
  return response;
}

self.addEventListener("fetch", (event) => {
  const { request } = event;
  if (request.method !== "GET") return;
  const url = new URL(request.url);
  if (url.origin !== self.location.origin) return;
  if (request.mode === "navigate") event.respondWith(page(event));
  else if (url.pathname.startsWith("/static/")) event.respondWith(shell(request));
  else if (/^\/api\/v1\/images\/[^/]+\/file$/.test(url.pathname) && url.searchParams.has("size")) event.respondWith(image(event));
});
