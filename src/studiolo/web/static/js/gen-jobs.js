// The generator's results: one card per job, newest first, from GET /jobs (so a reload or another page never
// loses them), paged with "Show older"; live progress for running jobs from their event streams; cards can be
// dismissed (remembered per user in this browser: nothing is deleted on the server).
import { api, apiPath, isId, refreshSession, toast } from "./app.js";

const TERMINAL = new Set(["succeeded", "failed", "canceled"]);
const PAGE = 10;
// Browsers hold about 6 connections per site over HTTP/1.1 and an event stream keeps one: past a few streams, the
// page's own requests would wait. Jobs beyond these follow by polling GET /jobs/{id} every 2 seconds instead.
const MAX_STREAMS = 3;
let streams = 0;
const DISMISSED = "studiolo-generator-dismissed";
const credits = new Intl.NumberFormat(undefined, { maximumSignificantDigits: 2 });

// Reads the page makes by itself (on load, on a timer) renew an expired session only while the page stays: a renewal
// cut off by leaving could lose the rotated refresh cookie, and the next page's renewal would then be refused as a
// reused token (tests/e2e/test_web_hardening.py signs in again and again through such pages).
let leaving = false;
addEventListener("beforeunload", () => { leaving = true; });
addEventListener("pageshow", () => { leaving = false; });

/** GET an API path for the page's own upkeep (see above); otherwise as app.js's api(). */
export async function quietGet(path) {
  try {
    return await api(path, { retry: false });
  } catch (error) {
    if (error.status !== 401 || leaving || !(await refreshSession())) throw error;
    return api(path, { retry: false });
  }
}

/** The progress line for a job (CONTRACTS.md): "Image 1 of 4 · step 10 of 25" while the engine makes the images one
 * after another, "Step 10 of 25 · 4 images" while it samples them in one call, "Step 10 of 25" for one image. */
export function progressText({ step = 0, total = 0, image = 0, images = 1 } = {}) {
  if (!total) return "";
  if (image > 0 && images > 1) return `Image ${image} of ${images} · step ${step} of ${total}`;
  if (images > 1) return `Step ${step} of ${total} · ${images} images`;
  return `Step ${step} of ${total}`;
}

/** How far the whole job is, 0..100: images made one after another each take their share of the bar. */
export function progressPercent({ step = 0, total = 0, image = 0, images = 1 } = {}) {
  if (!total) return 0;
  const done = image > 0 && images > 1 ? ((image - 1) * total + step) / (images * total) : step / total;
  return Math.max(0, Math.min(100, Math.round(100 * done)));
}

export function queuedText(position, capped) {
  // Positions are counted up to a limit (STUDIOLO_QUEUE_POSITION_LIMIT): "capped" means further back than that.
  if (!position) return "Waiting in the queue";
  return capped ? `Waiting in the queue (after position ${position})` : `Waiting in the queue (position ${position})`;
}

/** Dismissed job ids of one user, kept in localStorage (a reload keeps them dismissed). */
function dismissedStore(user) {
  const read = () => {
    try { return JSON.parse(localStorage.getItem(DISMISSED) || "{}"); } catch { return {}; }
  };
  const ids = new Set(read()[user] ?? []);
  const save = () => {
    const all = read();
    all[user] = [...ids].slice(-1000); // a bound: ids of jobs long gone from the first pages are of no use
    try { localStorage.setItem(DISMISSED, JSON.stringify(all)); } catch { /* storage full or blocked */ }
  };
  return {
    has: (id) => ids.has(id),
    add(list) { for (const id of list) ids.add(id); save(); },
    remove(id) { if (ids.delete(id)) save(); },
    clear() { ids.clear(); save(); },
    get size() { return ids.size; },
  };
}

/** The job list of the generator page. ``actions(kind, imageId, card)`` runs a result image's buttons. */
export function createJobs({ box, empty, olderButton, clearButton, restoreButton, user, actions, costRate }) {
  const template = document.getElementById("job-template");
  const resultTemplate = document.getElementById("result-template");
  const dismissed = dismissedStore(user);
  const cards = new Map(); // job id -> card element
  let cursor = null;
  let loaded = false;

  const refreshChrome = () => {
    const visible = [...cards.values()].filter((c) => !c.hidden);
    empty.hidden = !loaded || visible.length > 0 || Boolean(cursor);
    clearButton.hidden = !visible.some((c) => TERMINAL.has(c.dataset.status));
    olderButton.hidden = !cursor;
    restoreButton.hidden = dismissed.size === 0;
  };

  function dismiss(ids) {
    dismissed.add(ids);
    for (const id of ids) {
      const card = cards.get(id);
      if (card) { card.hidden = true; card.stop?.(); }
    }
    refreshChrome();
  }

  function addResult(card, job, output) {
    const results = card.querySelector(".job-results");
    if (results.querySelector(`[data-image-id="${CSS.escape(output.image_id)}"]`)) return;
    const figure = resultTemplate.content.firstElementChild.cloneNode(true);
    figure.dataset.imageId = output.image_id;
    const link = figure.querySelector("a");
    link.href = "/gallery?" + new URLSearchParams({ image: output.image_id });
    link.dataset.imageId = output.image_id;
    const img = link.querySelector("img");
    img.src = output.thumbnail_url ?? apiPath`/api/v1/images/${output.image_id}/file` + "?size=300";
    img.alt = job.params?.prompt ?? "Generated image";
    const { width, height } = job.params ?? {};
    if (width && height) { img.width = width; img.height = height; link.style.aspectRatio = `${width} / ${height}`; }
    // Drag into the image-to-image drop zone (here, or in another tab), as the gallery's tiles do (CONTRACTS.md).
    link.addEventListener("dragstart", (e) => {
      const file = new URL(apiPath`/api/v1/images/${output.image_id}/file`, location.origin).href;
      e.dataTransfer.setData("text/uri-list", file);
      e.dataTransfer.setData("application/x-studiolo-image", output.image_id);
      e.dataTransfer.effectAllowed = "copy";
    });
    // Issue 17: an output the content check held back shows blurred, says so, and offers nothing that starts from its
    // original (which stays private until an administrator approves it: 403 under_review).
    const held = output.review_state === "pending" || output.review_state === "rejected";
    if (held) {
      figure.dataset.held = output.review_state;
      const note = document.createElement("p");
      note.className = "result-held small";
      note.textContent = output.review_state === "pending"
        ? "Held for review: the content check flagged this image. An administrator will look at it."
        : "Rejected by a moderator.";
      figure.querySelector("figcaption").before(note);
    }
    for (const [cls, kind] of [["act-remix", "remix"], ["act-img2img", "img2img"], ["act-inpaint", "inpaint"],
      ["act-vary-subtle", "vary-subtle"], ["act-vary-strong", "vary-strong"]]) {
      const button = figure.querySelector("." + cls);
      if (held && kind !== "remix") { button.hidden = true; continue; }
      button.setAttribute("aria-label", `${button.textContent}: image ${results.children.length + 1} of “${(job.params?.prompt ?? "").slice(0, 60)}”`);
      button.addEventListener("click", () => actions(kind, output.image_id, button));
    }
    results.append(figure);
  }

  function build(job) {
    const card = template.content.firstElementChild.cloneNode(true);
    card.id = "job-" + job.id;
    card.dataset.jobId = job.id;
    const q = (s) => card.querySelector(s);
    const title = q(".job-title");
    title.textContent = job.params?.prompt ?? "Generation";
    title.addEventListener("click", () => {
      const open = card.classList.toggle("expanded");
      title.setAttribute("aria-expanded", String(open));
    });
    q(".job-dismiss").addEventListener("click", () => {
      const next = card.nextElementSibling ?? card.previousElementSibling;
      dismiss([job.id]);
      toast("Card dismissed: the images stay in your gallery.", {
        action: { label: "Undo", run: () => { dismissed.remove(job.id); card.hidden = false; refreshChrome(); card.focus(); } },
      });
      (next?.querySelector(".job-title") ?? document.getElementById("prompt")).focus();
    });
    return card;
  }

  /** Show a job (a JobView or an accepted job) and follow it live until it ends. */
  function follow(job, { where = "top" } = {}) {
    if (cards.has(job.id)) return cards.get(job.id);
    const card = build(job);
    cards.set(job.id, card);
    if (where === "top") box.prepend(card);
    else box.append(card);
    if (dismissed.has(job.id)) card.hidden = true;
    refreshChrome();

    const q = (s) => card.querySelector(s);
    const bar = q(".progress");
    const text = q(".job-text");
    const status = q(".job-status");
    const previewImg = q(".job-preview");
    const meta = q(".job-meta");
    const images = job.params?.n ?? 1;

    const setStatus = (s) => {
      status.textContent = s;
      status.className = "badge job-status badge-" + s;
      card.dataset.status = s;
      card.classList.toggle("finished", TERMINAL.has(s));
    };
    // The bar only moves forward within an attempt: the stream interleaves live steps with re-reads of the job row,
    // which is written less often and can lag a step or two behind (tests/e2e/test_web_studio.py watches this).
    let reached = 0;
    const setProgress = (p) => {
      const d = { images, ...p };
      const pct = progressPercent(d);
      if (d.total && pct < reached) return;
      reached = pct;
      bar.firstElementChild.style.width = pct + "%";
      bar.setAttribute("aria-valuenow", String(pct));
      bar.setAttribute("aria-valuetext", d.total ? progressText(d) : "Waiting");
      if (d.total) text.textContent = progressText(d);
      card.dataset.step = String(d.image > 0 ? (d.image - 1) * d.total + (d.step ?? 0) : d.step ?? 0); // steps of the whole job
    };
    const finish = (view, type, error) => {
      setStatus(type);
      previewImg.hidden = true;
      q(".job-cancel").hidden = true;
      const parts = [];
      if (type === "succeeded") {
        setProgress({ step: 1, total: 1 });
        for (const o of view?.outputs ?? []) addResult(card, view ?? job, o);
        if (view?.duration_seconds != null) parts.push(`Done in ${view.duration_seconds.toFixed(1)} s`);
        const n = view?.outputs?.length ?? 0;
        parts.push(n === 1 ? "1 image" : `${n} images`);
        const blocked = view?.blocked_outputs ?? 0;
        if (blocked) {  // issue 17: the owner's NSFW policy is "block": those images were never stored (nor charged)
          parts.push(`${blocked} withheld`);
          q(".job-error").textContent = blocked === 1
            ? "1 image was not kept: the content check found it not safe for work."
            : `${blocked} images were not kept: the content check found them not safe for work.`;
        }
        // costRate 0: billing is on, and its credits (the Billing page) are not this usage measure.
        if (view?.cost && costRate) parts.push(`${credits.format(view.cost)} credits`);
      } else if (type === "failed") {
        q(".job-error").textContent = error?.message ?? "The job failed.";
        parts.push("Failed");
      } else {
        parts.push("Canceled");
      }
      if (view?.params?.width) parts.push(`${view.params.width}×${view.params.height}`);
      if (view?.seeds?.length) parts.push(`seed ${view.seeds[0]}`);
      meta.textContent = parts.join(" · ");
      if (view?.cost && costRate) meta.title = `Credits: megapixels × steps × images × ${costRate}, the usage your dashboard counts.`;
      meta.hidden = false;
      refreshChrome();
    };

    setStatus(job.status);
    setProgress(job.progress ?? {});
    if (job.status === "queued") text.textContent = queuedText(job.queue_position, job.queue_position_capped);
    else if (!text.textContent) text.textContent = "Starting…";

    q(".job-cancel").addEventListener("click", async () => {
      try { await api(apiPath`jobs/${job.id}/cancel`, { method: "POST" }); text.textContent = "Canceling…"; }
      catch (error) { toast(error.message, { kind: "error" }); }
    });

    if (TERMINAL.has(job.status)) { finish(job, job.status, job.error); return card; }

    let source = null;
    let retried = false;
    let stopped = false;
    let timer = null;
    card.stop = () => {
      stopped = true;
      if (source) { source.close(); source = null; streams -= 1; }
      clearTimeout(timer);
    };
    card.restart = () => { if (stopped && !TERMINAL.has(card.dataset.status)) { stopped = false; open(); } };
    const end = (view, type, error) => { card.stop(); card.stop = null; finish(view, type, error); };
    const open = () => {
      if (streams >= MAX_STREAMS) { poll(); return; }
      streams += 1;
      source = new EventSource(job.urls?.events ?? apiPath`/api/v1/jobs/${job.id}/events`);
      source.addEventListener("queued", (e) => { setStatus("queued"); const ev = JSON.parse(e.data); text.textContent = queuedText(ev.position, ev.capped); });
      source.addEventListener("started", () => { setStatus("running"); if (!reached) text.textContent = "Loading the model…"; });
      source.addEventListener("retrying", () => { reached = 0; text.textContent = "Retrying after an error…"; });
      source.addEventListener("progress", (e) => { setStatus("running"); setProgress(JSON.parse(e.data)); });
      source.addEventListener("preview", (e) => {
        const d = JSON.parse(e.data);
        // `data_url` (CONTRACTS.md: `image` is the index of the image being made, no longer the picture).
        const url = d.data_url ?? (typeof d.image === "string" ? d.image : null);
        if (url) { previewImg.src = url; previewImg.hidden = false; }
      });
      source.addEventListener("output", (e) => addResult(card, job, JSON.parse(e.data)));
      // The server is restarting: the stream ends and the browser reconnects by itself (the stream's `retry`).
      source.addEventListener("shutdown", () => { text.textContent = "Server restarting, reconnecting…"; });
      for (const type of TERMINAL) {
        source.addEventListener(type, (e) => { const d = JSON.parse(e.data); end(d.job, type, d.error); });
      }
      source.onerror = async () => {
        if (source.readyState !== EventSource.CLOSED || stopped) return; // the browser reconnects by itself
        // Closed for good: most likely the access cookie expired. Renew once, then fall back to polling.
        source = null;
        streams -= 1;
        if (!retried && (await refreshSession())) { retried = true; open(); return; }
        poll();
      };
    };
    const poll = async () => {
      if (stopped) return;
      try {
        const view = await quietGet(apiPath`jobs/${job.id}`);
        if (TERMINAL.has(view.status)) { end(view, view.status, view.error); return; }
        setStatus(view.status);
        setProgress(view.progress);
      } catch { /* offline for a moment */ }
      timer = setTimeout(poll, 2000);
    };
    if (!card.hidden) open();
    else stopped = true;
    return card;
  }

  async function loadPage() {
    // Pages whose jobs were all dismissed are skipped, so "Show older" always shows something when it can.
    for (let tries = 0; tries < 5; tries++) {
      const params = new URLSearchParams({ limit: String(PAGE) });
      if (cursor) params.set("cursor", cursor);
      const page = await quietGet("jobs?" + params);
      cursor = page.next_cursor;
      let shown = 0;
      for (const job of page.items) { follow(job, { where: "bottom" }); if (!dismissed.has(job.id)) shown++; }
      if (shown || !cursor) break;
    }
    loaded = true;
    refreshChrome();
  }

  /** /generate#job-ID: that job's card, fetched when it is not on the first page, brought back if dismissed. */
  async function reveal(jobId) {
    if (!isId(jobId)) return;
    let card = cards.get(jobId);
    if (!card) {
      try { card = follow(await quietGet(apiPath`jobs/${jobId}`), { where: "top" }); }
      catch (error) { toast(error.status === 404 ? "That job was not found." : error.message, { kind: "error" }); return; }
    }
    if (card.hidden) { dismissed.remove(jobId); card.hidden = false; card.restart?.(); }
    refreshChrome();
    card.classList.add("highlight");
    card.scrollIntoView({ block: "center" });
    card.focus({ preventScroll: true });
    setTimeout(() => card.classList.remove("highlight"), 4000);
  }

  olderButton.addEventListener("click", async () => {
    olderButton.disabled = true;
    try { await loadPage(); } catch (error) { toast(error.message, { kind: "error" }); }
    finally { olderButton.disabled = false; }
  });
  clearButton.addEventListener("click", () => {
    const done = [...cards.entries()].filter(([, c]) => !c.hidden && TERMINAL.has(c.dataset.status)).map(([id]) => id);
    dismiss(done);
    toast(`${done.length === 1 ? "1 card" : `${done.length} cards`} cleared: the images stay in your gallery.`);
  });
  restoreButton.addEventListener("click", () => {
    dismissed.clear();
    for (const card of cards.values()) { card.hidden = false; card.restart?.(); }
    refreshChrome();
  });

  return { follow, loadPage, reveal, has: (id) => cards.has(id), prompts: () => [...cards.values()].map((c) => c.querySelector(".job-title").textContent) };
}
