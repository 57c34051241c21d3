// A film's page: the storyboard editor (each scene's narration, picture prompt and seed; save, move by buttons or by
// dragging, split at a sentence, merge with the next, delete, a new image), the quote and the Render button, live
// progress per stage (the job's event stream; FilmView.render after a reload), cancel, and once rendered the player
// with its subtitle track, the downloads, the public link and the YouTube upload. Everything goes through the JSON
// API (/api/v1/films/{id}..., CONTRACTS.md §3). A scene's unsaved edits are kept in sessionStorage until saved.
import { api, apiPath, ApiError, clearFieldErrors, confirmDialog, copyText, el, formJson, isId, refreshSession,
  sameOriginPath, shortcuts, showFieldErrors, toast } from "./app.js";
import { createCost } from "./gen-cost.js";
import { characterName, countWords, duration, fillVoices, playSample, STATUS_TEXT } from "./films.js";

const root = document.getElementById("film");
const filmId = root?.dataset.film ?? "";
const STAGES = ["images", "narration", "music", "mix", "motion", "subtitles", "encode", "thumbnail", "check"];
const TERMINAL = new Set(["succeeded", "failed", "canceled"]);
const BUSY_IMAGE = new Set(["queued", "running"]);
const EDITS = `studiolo-film-edits:${filmId}`;
const number = new Intl.NumberFormat();
const plural = (n, word) => `${number.format(n)} ${word}${n === 1 ? "" : "s"}`;
const $ = (id) => document.getElementById(id);

let film = null;
let voices = [];
let stream = null;
let streamJob = null;
let pollTimer = null;
let quoteTimer = null;
let refetchTimer = null;

// --- unsaved edits -------------------------------------------------------------------------------------------
function readEdits() {
  try { return JSON.parse(sessionStorage.getItem(EDITS) || "{}"); } catch { return {}; }
}
function writeEdits(edits) {
  try {
    if (Object.keys(edits).length) sessionStorage.setItem(EDITS, JSON.stringify(edits));
    else sessionStorage.removeItem(EDITS);
  } catch { /* storage full or blocked */ }
}
function keepEdit(sceneId, values) {
  const edits = readEdits();
  if (values) edits[sceneId] = values; else delete edits[sceneId];
  writeEdits(edits);
}

/** Sentences of a scene's text, for the split menu (the server splits by its own rule, script.sentences). */
export function sentencesOf(text) {
  const parts = text.match(/[^.!?…。！？]+(?:[.!?…。！？]+["'”’)\]]*|$)\s*/gu) ?? [text];
  return parts.map((s) => s.trim()).filter(Boolean);
}

// --- the film ------------------------------------------------------------------------------------------------
async function load() {
  try {
    show(await api(apiPath`films/${filmId}`));
  } catch (error) {
    root.setAttribute("aria-busy", "false");
    if (error instanceof ApiError && (error.status === 404 || error.status === 422)) {
      $("film-title-h").textContent = "Film not found";
      $("crumb-title").textContent = "Not found";
      $("film-missing").hidden = false;
      return;
    }
    $("film-title-h").textContent = "The film could not be loaded";
    notice(error.message, true);
  }
}

function notice(message, error = false) {
  const box = $("film-notice");
  box.textContent = message;
  box.classList.toggle("error", error);
  box.hidden = !message;
}

function show(view) {
  film = view;
  root.setAttribute("aria-busy", "false");
  document.title = `${view.title} · Studiolo`;
  $("film-title-h").textContent = view.title;
  $("crumb-title").textContent = view.title;
  $("film-body").hidden = false;
  $("film-delete").hidden = false;
  const facts = [view.aspect, `${view.width}×${view.height}`, `${plural(view.scenes.length, "scene")}`,
    `about ${duration(view.planned_seconds)}`];
  if (view.deleted_at) facts.push("in the Trash");
  $("film-facts").textContent = facts.join(" · ");
  const status = $("film-status");
  status.textContent = STATUS_TEXT[view.status] ?? view.status;
  status.className = `badge badge-film-${view.status}`;
  showScenes(view);
  showRender(view);
  showOutput(view);
  showCharacters(view);
  fillSettings(view);
  scheduleQuote();
  // Scene images on their way (a new image, or the render's images stage): look again in a moment.
  clearTimeout(pollTimer);
  if (view.scenes.some((s) => BUSY_IMAGE.has(s.image_state)) || (view.status === "rendering" && !stream)) {
    pollTimer = setTimeout(refetch, 2500);
  }
}

async function refetch() {
  try { show(await api(apiPath`films/${filmId}`, { retry: false })); }
  catch (error) {
    if (error.status === 401 && (await refreshSession())) { refetch(); return; }
    pollTimer = setTimeout(refetch, 5000);
  }
}

/** Refetch soon, at most once per second, while stage events arrive. */
function refetchSoon() {
  if (refetchTimer) return;
  refetchTimer = setTimeout(() => { refetchTimer = null; refetch(); }, 1000);
}

// --- scenes --------------------------------------------------------------------------------------------------
function sceneState(scene) {
  return {
    none: "no image yet", queued: "image queued", running: "drawing", ready: "image ready",
    stale: "image outdated", failed: "image failed",
  }[scene.image_state] ?? scene.image_state;
}

function showScenes(view) {
  const list = $("scenes");
  // Rebuilt from the server's answer; focus goes back to the same control of the same scene.
  const active = document.activeElement;
  const activeScene = active?.closest?.(".scene")?.dataset.id;
  const activeRole = active ? [...(active.classList ?? [])].find((c) => c.startsWith("scene-")) ?? active.getAttribute?.("name") : null;
  // Where the caret was: a refresh while the user types (the render's images arriving) must not move it.
  const caret = active && typeof active.selectionStart === "number" ? [active.selectionStart, active.selectionEnd] : null;
  const edits = readEdits();
  const ids = new Set(view.scenes.map((s) => s.id));
  for (const id of Object.keys(edits)) if (!ids.has(id)) delete edits[id];
  writeEdits(edits);
  list.replaceChildren(...view.scenes.map((scene, i) => sceneCard(scene, i, view.scenes.length, edits[scene.id])));
  $("storyboard-facts").textContent = `${plural(view.words, "word")} of ${number.format(view.max_words)} · planned ${duration(view.planned_seconds)}`;
  if (activeScene && activeRole) {
    const card = list.querySelector(`.scene[data-id="${CSS.escape(activeScene)}"]`);
    const target = card?.querySelector(`.${CSS.escape(activeRole)}`) ?? card?.querySelector(`[name="${CSS.escape(activeRole)}"]`);
    if (target && !target.disabled) {
      target.focus();
      if (caret && typeof target.setSelectionRange === "function") target.setSelectionRange(...caret);
    } else card?.querySelector(".scene-title")?.focus();
  }
}

function sceneCard(scene, index, count, edit) {
  const node = $("scene-template").content.firstElementChild.cloneNode(true);
  const n = index + 1;
  const uid = `scene-${scene.id}`;
  node.dataset.id = scene.id;
  node.setAttribute("aria-labelledby", `${uid}-title`);
  const title = node.querySelector(".scene-title");
  title.id = `${uid}-title`;
  title.textContent = `Scene ${n}`;
  title.tabIndex = -1;
  const state = node.querySelector(".scene-image-state");
  state.textContent = sceneState(scene);
  state.classList.add(`badge-image-${scene.image_state}`);
  const times = [`planned ${scene.planned_seconds.toFixed(1)} s`];
  if (scene.narration_seconds) times.push(`narrated ${scene.narration_seconds.toFixed(1)} s`);
  node.querySelector(".scene-time").textContent = times.join(" · ");
  const img = node.querySelector(".scene-image img");
  const caption = node.querySelector(".scene-image-none");
  if (scene.image_url) {
    img.src = scene.image_url;
    img.alt = `Scene ${n}: ${scene.prompt}`;
    caption.textContent = scene.image_state === "stale" ? "Outdated: redrawn at the next render" : "";
    caption.hidden = scene.image_state !== "stale";
  } else {
    img.remove();
    caption.textContent = BUSY_IMAGE.has(scene.image_state) ? "Drawing the picture…" : scene.image_state === "failed"
      ? "The picture failed. Try a new image." : "The picture is drawn when you render (or press New image).";
  }
  node.querySelector(".scene-image").classList.toggle("busy", BUSY_IMAGE.has(scene.image_state));

  const form = node.querySelector(".scene-form");
  for (const name of ["text", "prompt", "seed"]) {
    const input = form.elements.namedItem(name);
    input.id = `${uid}-${name}`;
    node.querySelector(`.scene-label-${name}`).htmlFor = input.id;
    input.setAttribute("aria-describedby", `${uid}-title`);
  }
  const saved = { text: scene.text, prompt: scene.prompt, seed: scene.seed === null ? "" : String(scene.seed) };
  const values = { ...saved, ...(edit ?? {}) };
  form.elements.namedItem("text").value = values.text;
  form.elements.namedItem("prompt").value = values.prompt;
  form.elements.namedItem("seed").value = values.seed;
  const save = form.querySelector(".scene-save");
  const current = () => ({ text: form.elements.namedItem("text").value, prompt: form.elements.namedItem("prompt").value,
    seed: form.elements.namedItem("seed").value.trim() });
  const dirty = () => { const c = current(); return c.text !== saved.text || c.prompt !== saved.prompt || c.seed !== saved.seed; };
  const mark = () => {
    const d = dirty();
    save.disabled = !d;
    node.classList.toggle("dirty", d);
    save.textContent = d ? "Save" : "Saved";
    keepEdit(scene.id, d ? current() : null);
  };
  mark();
  form.addEventListener("input", mark);
  form.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); if (!save.disabled) form.requestSubmit(save); }
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const c = current();
    const body = {};
    if (c.text !== saved.text) body.text = c.text;
    if (c.prompt !== saved.prompt) body.prompt = c.prompt;
    if (c.seed !== saved.seed) {
      if (c.seed !== "" && !/^\d+$/.test(c.seed)) { showFieldErrors(form, { message: "The seed is a whole number.", details: { field: "seed" } }); return; }
      body.seed = c.seed === "" ? null : Number(c.seed);
    }
    await sceneCall(form, apiPath`films/${filmId}/scenes/${scene.id}`, { method: "PATCH", body }, `Scene ${n} saved.`, scene.id);
  });

  const label = (what) => `${what} (scene ${n})`;
  const up = node.querySelector(".scene-up");
  const down = node.querySelector(".scene-down");
  up.setAttribute("aria-label", label("Move up"));
  down.setAttribute("aria-label", label("Move down"));
  up.disabled = index === 0;
  down.disabled = index === count - 1;
  up.addEventListener("click", () => move(scene.id, -1));
  down.addEventListener("click", () => move(scene.id, +1));

  const regen = node.querySelector(".scene-regen");
  regen.setAttribute("aria-label", label("New image"));
  regen.disabled = BUSY_IMAGE.has(scene.image_state);
  regen.addEventListener("click", async () => {
    const c = current();
    const body = { seed: c.seed !== saved.seed && /^\d+$/.test(c.seed) ? Number(c.seed) : null };
    if (c.prompt !== saved.prompt) body.prompt = c.prompt;
    await sceneCall(form, apiPath`films/${filmId}/scenes/${scene.id}/regenerate`, { method: "POST", body },
      `A new image for scene ${n} is on its way.`, body.prompt !== undefined || body.seed !== null ? scene.id : null);
  });

  const sentences = sentencesOf(scene.text);
  const splitRow = node.querySelector(".scene-split-row");
  const splitAt = node.querySelector(".scene-split-at");
  splitAt.id = `${uid}-split`;
  splitAt.setAttribute("aria-label", label("Split before sentence"));
  if (sentences.length < 2) splitRow.hidden = true;
  else {
    sentences.slice(1).forEach((s, k) => splitAt.append(el("option", { value: String(k + 1),
      text: `before “${s.length > 32 ? s.slice(0, 31) + "…" : s}”` })));
    const split = node.querySelector(".scene-split");
    split.setAttribute("aria-label", label("Split"));
    split.addEventListener("click", () => sceneCall(form, apiPath`films/${filmId}/scenes/${scene.id}/split`,
      { method: "POST", body: { sentence: Number(splitAt.value) } }, `Scene ${n} split in two.`));
  }
  const merge = node.querySelector(".scene-merge");
  merge.setAttribute("aria-label", label("Merge with the next scene"));
  merge.hidden = index === count - 1;
  merge.addEventListener("click", () => sceneCall(form, apiPath`films/${filmId}/scenes/${scene.id}/merge`,
    { method: "POST" }, `Scenes ${n} and ${n + 1} merged.`));
  const del = node.querySelector(".scene-delete");
  del.setAttribute("aria-label", label("Delete"));
  del.disabled = count === 1;
  del.title = count === 1 ? "A film keeps at least one scene." : "";
  del.addEventListener("click", async () => {
    if (!(await confirmDialog(`Delete scene ${n}? Its words leave the film.`, { ok: "Delete the scene" }))) return;
    await sceneCall(form, apiPath`films/${filmId}/scenes/${scene.id}`, { method: "DELETE" }, `Scene ${n} deleted.`, scene.id);
  });

  // Dragging: only by the handle (text stays selectable), dropped onto another card.
  const handle = node.querySelector(".drag-handle");
  handle.addEventListener("pointerdown", () => { node.draggable = true; });
  node.addEventListener("dragstart", (e) => { e.dataTransfer.setData("text/x-scene", scene.id); e.dataTransfer.effectAllowed = "move"; node.classList.add("dragging"); });
  node.addEventListener("dragend", () => { node.draggable = false; node.classList.remove("dragging"); });
  node.addEventListener("dragover", (e) => { if (e.dataTransfer.types.includes("text/x-scene")) { e.preventDefault(); node.classList.add("drop-target"); } });
  node.addEventListener("dragleave", () => node.classList.remove("drop-target"));
  node.addEventListener("drop", (e) => {
    e.preventDefault();
    node.classList.remove("drop-target");
    const moved = e.dataTransfer.getData("text/x-scene");
    if (moved && moved !== scene.id) moveTo(moved, scene.id);
  });
  return node;
}

/** One scene operation: the film comes back and is shown; errors next to the scene's fields. ``forget``: the scene
 * whose kept edits the answer settles. */
async function sceneCall(form, path, init, ok, forget = null) {
  clearFieldErrors(form);
  const buttons = [...form.querySelectorAll("button")];
  buttons.forEach((b) => { b.dataset.was = b.disabled ? "1" : ""; b.disabled = true; });
  try {
    const view = await api(path, init);
    if (forget) keepEdit(forget, null);
    $("storyboard-live").textContent = ok;
    show(view);
  } catch (error) {
    buttons.forEach((b) => { b.disabled = b.dataset.was === "1"; });
    if (!(error instanceof ApiError)) throw error;
    showFieldErrors(form, error);
  }
}

async function reorder(ids, message) {
  try {
    const view = await api(apiPath`films/${filmId}/scenes/reorder`, { method: "POST", body: { scene_ids: ids } });
    $("storyboard-live").textContent = message;
    show(view);
  } catch (error) {
    toast(error.message, { kind: "error" });
  }
}

function move(sceneId, by) {
  const ids = film.scenes.map((s) => s.id);
  const i = ids.indexOf(sceneId);
  const j = i + by;
  if (i < 0 || j < 0 || j >= ids.length) return;
  [ids[i], ids[j]] = [ids[j], ids[i]];
  reorder(ids, `Scene ${i + 1} is now scene ${j + 1}.`);
}

function moveTo(sceneId, beforeId) {
  const ids = film.scenes.map((s) => s.id);
  const from = ids.indexOf(sceneId);
  const to = ids.indexOf(beforeId);
  if (from < 0 || to < 0) return;
  ids.splice(from, 1);
  ids.splice(to, 0, sceneId);
  reorder(ids, `Scene ${from + 1} is now scene ${to + 1}.`);
}

// --- quote and render ----------------------------------------------------------------------------------------
const refusal = createCost({
  line: document.createElement("p"), text: document.createElement("span"), refusal: $("render-refusal"),
  settings: () => ({}), kind: () => "film", batches: () => 1,
});

function scheduleQuote() {
  clearTimeout(quoteTimer);
  quoteTimer = setTimeout(showQuote, 250);
}

async function showQuote() {
  const line = $("film-quote");
  if (film?.status === "rendering") { line.textContent = "Rendering now."; return; }
  try {
    const quote = await api(apiPath`films/${filmId}/quote`, { retry: false });
    line.textContent = quoteText(quote, root.dataset.billing === "on");
  } catch (error) {
    line.textContent = error.message;
  }
}

/** "This render costs 14 credits: 4 scene images (8 credits) and 62 s of video (6 credits)." */
export function quoteText(quote, billing) {
  const parts = [];
  if (quote.images.count) parts.push(`${plural(quote.images.count, "scene image")}${billing ? ` (${plural(quote.images.credits, "credit")})` : ""}`);
  if (quote.video.seconds) parts.push(`${number.format(Math.round(quote.video.seconds))} s of video${billing ? ` (${plural(quote.video.credits, "credit")})` : ""}`);
  const what = parts.join(" and ");
  if (!billing) return what ? `This render makes ${what}.` : "Nothing has changed since the last render.";
  if (!quote.credits) return what ? `This render makes ${what}, at no charge.` : "Nothing has changed since the last render.";
  return `This render costs ${plural(quote.credits, "credit")}: ${what}.`;
}

async function startRender() {
  const button = $("render-button");
  $("render-error").textContent = "";
  refusal.clearRefusal();
  button.disabled = true;
  const key = crypto.randomUUID?.() ?? String(Date.now()) + Math.random();
  try {
    const accepted = await api(apiPath`films/${filmId}/render`, { method: "POST", headers: { "Idempotency-Key": key } });
    $("storyboard-live").textContent = "The render has started.";
    await refetch();
    follow(accepted.job_id, accepted.events_url);
  } catch (error) {
    button.disabled = false;
    if (!(error instanceof ApiError)) throw error;
    if (!refusal.showRefusal(error)) $("render-error").textContent = error.message;
    if (error.code === "film_rendering") refetch();
  }
}

async function cancelRender() {
  if (!(await confirmDialog("Cancel this render? What it has made so far is kept for the next one.", { ok: "Cancel the render" }))) return;
  const button = $("cancel-button");
  button.disabled = true;
  try { show(await api(apiPath`films/${filmId}/cancel`, { method: "POST" })); }
  catch (error) { $("render-error").textContent = error.message; }
  finally { button.disabled = false; }
}

const STATE_TEXT = { waiting: "waiting", running: "working", done: "done", skipped: "skipped", cached: "reused", failed: "failed", canceled: "canceled" };

function setStage(name, { state, done = 0, total = 0 }) {
  const li = document.querySelector(`.stage[data-stage="${CSS.escape(name)}"]`);
  if (!li) return;
  li.dataset.state = state;
  const count = total ? ` ${number.format(done)} of ${number.format(total)}` : "";
  li.querySelector(".stage-state").textContent = (STATE_TEXT[state] ?? state) + (state === "running" ? count : "");
  const pct = state === "running" ? (total ? Math.round((100 * done) / total) : 0) : ["done", "skipped", "cached"].includes(state) ? 100 : 0;
  const bar = li.querySelector(".progress");
  bar.setAttribute("aria-valuenow", String(pct));
  bar.setAttribute("aria-valuetext", li.querySelector(".stage-state").textContent);
  bar.firstElementChild.style.width = `${pct}%`;
}

function summarize(active) {
  const states = STAGES.map((s) => document.querySelector(`.stage[data-stage="${s}"]`)?.dataset.state);
  const finished = states.filter((s) => ["done", "skipped", "cached"].includes(s)).length;
  const label = active ? document.querySelector(`.stage[data-stage="${CSS.escape(active)}"] .stage-name`)?.textContent : null;
  $("progress-summary").textContent = `Stage ${Math.min(finished + 1, STAGES.length)} of ${STAGES.length}${label ? `: ${label}` : ""}`;
}

function showRender(view) {
  const rendering = view.status === "rendering";
  const render = view.render;
  $("render-button").hidden = rendering;
  $("render-button").disabled = false;
  $("render-button").textContent = view.outputs ? "Render again" : "Render the film";
  $("cancel-button").hidden = !rendering;
  $("progress").hidden = !render;
  if (render) {
    for (const name of STAGES) setStage(name, render.stages?.[name] ?? { state: "waiting" });
    if (view.status === "failed" || view.status === "canceled") {
      const running = STAGES.find((s) => render.stages?.[s]?.state === "running");
      if (running) setStage(running, { state: view.status });
    }
    const active = STAGES.find((s) => render.stages?.[s]?.state === "running") ?? render.stage;
    // Once rendered, the list of finished stages is only in the way: a line says how long it took.
    $("stages").hidden = view.status === "rendered";
    if (rendering) summarize(active);
    else if (view.status === "rendered") {
      const seconds = STAGES.reduce((sum, s) => sum + (Number(render.stages?.[s]?.seconds) || 0), 0);
      $("progress-summary").textContent = seconds ? `Rendered in ${seconds < 60 ? `${Math.round(seconds)} s` : duration(seconds)}.` : "Rendered.";
    } else $("progress-summary").textContent = { failed: "The render failed.", canceled: "The render was canceled." }[view.status] ?? "";
  }
  const error = $("render-error");
  error.textContent = view.error && view.status !== "rendering" ? `${view.error.message}` : "";
  if (rendering && render?.job_id) follow(render.job_id);
  else stopFollowing();
}

function follow(jobId, url) {
  if (!isId(jobId) || streamJob === jobId) return;
  stopFollowing();
  streamJob = jobId;
  const source = new EventSource(url && sameOriginPath(url) ? url : apiPath`/api/v1/jobs/${jobId}/events`);
  stream = source;
  let retried = false;
  source.addEventListener("stage", (e) => {
    const d = JSON.parse(e.data);
    setStage(d.stage, d);
    summarize(d.state === "running" ? d.stage : null);
    if (d.stage === "images") refetchSoon();
  });
  source.addEventListener("output", refetchSoon);
  for (const type of TERMINAL) {
    source.addEventListener(type, () => {
      stopFollowing();
      if (type === "succeeded") toast("Your film is ready.");
      refetch();
    });
  }
  source.onerror = async () => {
    if (source.readyState !== EventSource.CLOSED || stream !== source) return;
    stopFollowing();
    if (!retried && (await refreshSession())) { retried = true; follow(jobId); return; }
    refetch(); // the page polls while the film renders and no stream follows it
  };
}

function stopFollowing() {
  stream?.close();
  stream = null;
  streamJob = null;
}

// --- the rendered film ---------------------------------------------------------------------------------------
function showOutput(view) {
  const box = $("output");
  const out = view.outputs;
  box.hidden = !out;
  if (!out) return;
  const player = $("player");
  const current = player.querySelector("video");
  if (current?.dataset.src !== out.video_url) {
    const video = el("video", { controls: true, preload: "metadata", playsinline: true, src: out.video_url,
      poster: out.thumbnail_url ?? null, "data-src": out.video_url, "aria-label": `${view.title} (film)`, width: out.width, height: out.height });
    if (out.vtt_url) video.append(el("track", { kind: "subtitles", src: out.vtt_url, srclang: "en", label: "Subtitles", default: true }));
    player.replaceChildren(video);
  }
  const facts = [duration(out.duration), `${out.width}×${out.height}`];
  if (out.bytes) facts.push(`${(out.bytes / 1e6).toFixed(1)} MB`);
  if (view.rendered_at) facts.push(`rendered ${new Date(view.rendered_at).toLocaleString()}`);
  $("output-facts").textContent = facts.join(" · ");
  const downloads = [["MP4 video", out.video_url, "film.mp4"], ["SRT subtitles", out.srt_url, "film.srt"],
    ["WebVTT subtitles", out.vtt_url, "film.vtt"], ["Thumbnail", out.thumbnail_url, "thumbnail.jpg"]];
  $("downloads").replaceChildren(...downloads.filter(([, url]) => url).map(([label, url, name]) =>
    el("li", {}, el("a", { class: "btn btn-sm", href: `${url}${url.includes("?") ? "&" : "?"}download=true`, download: true,
      "data-file": name, text: label }))));
  if (!box.dataset.checked) { box.dataset.checked = "1"; checkUploads(); }
  const toggle = $("share-toggle");
  toggle.checked = Boolean(view.public);
  $("share-row").hidden = !view.public || !view.share_url;
  // The link people open is the watch page (/watch/<token>), not the API's JSON at share_url.
  const token = view.share_url ? view.share_url.split("/").filter(Boolean).at(-1) : "";
  $("share-url").value = token ? new URL(`/watch/${encodeURIComponent(token)}`, location.origin).href : "";
}

async function setPublic() {
  const toggle = $("share-toggle");
  toggle.disabled = true;
  try {
    const view = await api(apiPath`films/${filmId}`, { method: "PATCH", body: { public: toggle.checked } });
    show(view);
    $("storyboard-live").textContent = view.public ? "The film is public: anyone with the link can watch it." : "The film is private again.";
  } catch (error) {
    toggle.checked = !toggle.checked;
    toast(error.message, { kind: "error" });
  } finally {
    toggle.disabled = false;
  }
}

const YOUTUBE_STATUS = { pending: "Waiting to upload…", uploading: "Uploading", processing: "YouTube is processing the video…",
  done: "On YouTube.", failed: "The upload failed." };
let youtubeTimer = null;

/** Say how an upload stands (PublicationView of the YouTube routes), and look again while it goes on. */
function showPublication(pub) {
  const result = $("youtube-result");
  result.classList.toggle("error", pub.status === "failed");
  let text = YOUTUBE_STATUS[pub.status] ?? pub.status;
  if (pub.status === "uploading" && pub.total_bytes) text += ` ${Math.floor((100 * pub.bytes_sent) / pub.total_bytes)}%…`;
  result.replaceChildren(el("span", { text: text + " " }));
  if (pub.url && /^https:\/\//.test(pub.url)) result.append(el("a", { href: pub.url, rel: "noopener", target: "_blank", text: "Watch it on YouTube" }));
  if (pub.status === "failed") {
    if (pub.error?.message) result.append(el("span", { text: pub.error.message + " " }));
    if (pub.error?.code === "youtube_not_connected") result.append(connectLink());
    else result.append(el("button", { class: "btn btn-sm", type: "button", text: "Try again", onclick: () => resumeUpload(pub.id) }));
  }
  clearTimeout(youtubeTimer);
  if (["pending", "uploading", "processing"].includes(pub.status)) youtubeTimer = setTimeout(checkUploads, 2000);
  $("youtube-button").disabled = ["pending", "uploading", "processing"].includes(pub.status);
}

function connectLink(url) {
  const base = sameOriginPath(typeof url === "string" ? url : "") ?? "/auth/google/youtube";
  const href = `${base}${base.includes("?") ? "&" : "?"}next=${encodeURIComponent(location.pathname)}`;
  return el("a", { class: "btn btn-sm btn-primary", href, text: "Connect YouTube" });
}

async function checkUploads() {
  // A server without a Google OAuth client cannot publish: said instead of a button that could only fail.
  const connection = await api("films/youtube/connection", { retry: false }).catch((error) => (error.status === 404 ? { available: false } : null));
  if (connection && !connection.available) {
    $("youtube-row").hidden = true;
    $("youtube-result").textContent = "Uploading to YouTube needs this server’s Google sign-in set up (STUDIOLO_GOOGLE_CLIENT_ID). Ask its administrator.";
    return;
  }
  try {
    const [latest] = await api(apiPath`films/${filmId}/youtube`, { retry: false });
    if (latest) showPublication(latest);
  } catch { /* no upload yet, or this server publishes nowhere */ }
}

async function resumeUpload(publicationId) {
  try { showPublication(await api(apiPath`films/${filmId}/youtube/${publicationId}/resume`, { method: "POST" })); }
  catch (error) { youtubeError(error); }
}

function youtubeError(error) {
  if (!(error instanceof ApiError)) throw error;
  const result = $("youtube-result");
  result.classList.add("error");
  result.replaceChildren(el("span", { text: error.message + " " }));
  if (error.code === "youtube_not_connected") result.append(connectLink(error.details?.connect_url));
}

async function uploadToYouTube() {
  const button = $("youtube-button");
  const result = $("youtube-result");
  button.disabled = true;
  result.classList.remove("error");
  result.replaceChildren("Starting the upload…");
  try {
    const body = { title: film?.title?.slice(0, 100).replace(/[<>]/g, ""), privacy: $("youtube-privacy").value };
    showPublication(await api(apiPath`films/${filmId}/youtube`, { method: "POST", body }));
  } catch (error) {
    button.disabled = false;
    youtubeError(error);
  }
}

// --- characters -------------------------------------------------------------------------------------------
function showCharacters(view) {
  const list = $("characters");
  list.replaceChildren(...view.characters.map((c) => el("li", { class: "character" },
    el("img", { src: c.image_url, alt: "", width: 48, height: 48, loading: "lazy" }),
    el("span", { class: "character-name", text: c.name }),
    el("button", { class: "btn btn-sm btn-ghost", type: "button", text: "Remove", "aria-label": `Remove ${c.name}`,
      onclick: async () => {
        try { show(await api(apiPath`films/${filmId}/characters/${c.id}`, { method: "DELETE" })); $("storyboard-live").textContent = `${c.name} removed.`; }
        catch (error) { $("character-error").textContent = error.message; }
      } }))));
  if (!view.characters.length) list.append(el("li", { class: "muted small", text: "No characters yet." }));
}

async function addCharacter(input) {
  const file = input.files?.[0];
  if (!file) return;
  $("character-error").textContent = "";
  const data = new FormData();
  data.append("name", characterName(file.name));
  data.append("image", file);
  input.disabled = true;
  try {
    show(await api(apiPath`films/${filmId}/characters`, { method: "POST", body: data }));
    $("storyboard-live").textContent = `${characterName(file.name)} added.`;
    input.value = "";
  } catch (error) {
    $("character-error").textContent = error.message;
  } finally {
    input.disabled = false;
  }
}

// --- settings ------------------------------------------------------------------------------------------------
function fillSettings(view) {
  const form = $("settings-form");
  if (form.dataset.dirty === "true") return; // what the user is typing wins over a refresh
  form.elements.namedItem("title").value = view.title;
  form.elements.namedItem("style").value = view.style ?? "none";
  form.elements.namedItem("aspect").value = view.aspect;
  form.elements.namedItem("resolution").value = view.resolution;
  const music = form.elements.namedItem("music");
  if (![...music.options].some((o) => o.value === view.music)) music.append(el("option", { value: view.music, text: view.music }));
  music.value = view.music;
  const voice = form.elements.namedItem("voice");
  if (voices.length) fillVoices(voice, voices, view.voice);
  voice.dataset.want = view.voice ?? "";
  form.elements.namedItem("speed").value = String(view.speed);
  $("set-speed-out").textContent = `${Number(view.speed).toFixed(1)}×`;
  form.elements.namedItem("burn_subtitles").checked = view.burn_subtitles;
  form.elements.namedItem("script").value = view.script;
  form.elements.namedItem("resplit").checked = false;
  scriptCount();
}

function scriptCount() {
  const count = $("set-script-count");
  const max = Number(film?.max_words ?? count.dataset.max);
  const n = countWords($("set-script").value);
  count.textContent = `${number.format(n)} / ${number.format(max)} words`;
  count.classList.toggle("over", n > max);
}

function wireSettings() {
  const form = $("settings-form");
  form.addEventListener("input", () => { form.dataset.dirty = "true"; });
  $("set-script").addEventListener("input", scriptCount);
  $("set-speed").addEventListener("input", (e) => { $("set-speed-out").textContent = `${Number(e.target.value).toFixed(1)}×`; });
  $("set-voice-sample").addEventListener("click", (e) => playSample(e.currentTarget, $("set-voice").value, $("set-voice-note")));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearFieldErrors(form);
    const body = formJson(form);
    body.speed = Number(body.speed);
    if (body.style === "none") body.style = null;
    if (!body.resplit) { delete body.resplit; if (body.script === film.script) delete body.script; }
    else if (!(await confirmDialog("Split the storyboard again? Your scene edits are replaced by scenes from the script.", { ok: "Split again", danger: true }))) return;
    const button = form.querySelector("[type=submit]");
    button.disabled = true;
    try {
      const view = await api(apiPath`films/${filmId}`, { method: "PATCH", body });
      form.dataset.dirty = "false";
      if (body.resplit) writeEdits({});
      show(view);
      toast("Settings saved.");
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      showFieldErrors(form, error);
    } finally {
      button.disabled = false;
    }
  });
  Promise.all([api("films/voices"), api("films/options")]).then(([v, options]) => {
    voices = v.voices ?? [];
    const voice = $("set-voice");
    fillVoices(voice, voices, voice.dataset.want || film?.voice || v.default);
    const music = $("set-music");
    for (const mood of options.moods ?? []) {
      if (![...music.options].some((o) => o.value === mood)) music.append(el("option", { value: mood, text: mood[0].toUpperCase() + mood.slice(1) }));
    }
    if (film && form.dataset.dirty !== "true") music.value = film.music;
  }).catch(() => { /* the settings keep what the film has */ });
}

// --- wiring --------------------------------------------------------------------------------------------------
if (root && isId(filmId)) {
  shortcuts.register("Film storyboard", "Ctrl+Enter", "Save the scene you are editing");
  $("render-button").addEventListener("click", startRender);
  $("cancel-button").addEventListener("click", cancelRender);
  $("share-toggle").addEventListener("change", setPublic);
  $("share-copy").addEventListener("click", () => copyText($("share-url").value, "Link copied"));
  $("youtube-button").addEventListener("click", uploadToYouTube);
  // Back from Google's consent page: said once, and the query dropped so a reload does not say it again.
  if (new URLSearchParams(location.search).get("youtube") === "connected") {
    toast("YouTube is connected: you can upload the film now.");
    history.replaceState(null, "", location.pathname + location.hash);
  }
  $("film-delete").addEventListener("click", async () => {
    if (!(await confirmDialog(`Move “${film?.title ?? "this film"}” to the Trash?`, { ok: "Move to the Trash" }))) return;
    try { await api(apiPath`films/${filmId}`, { method: "DELETE" }); location.assign("/films"); }
    catch (error) { toast(error.message, { kind: "error" }); }
  });
  $("add-scene").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.currentTarget;
    clearFieldErrors(form);
    const last = film?.scenes.at(-1)?.id ?? null;
    try {
      const view = await api(apiPath`films/${filmId}/scenes`, { method: "POST", body: { after: last, text: form.elements.namedItem("text").value } });
      form.reset();
      $("storyboard-live").textContent = "Scene added at the end.";
      show(view);
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      showFieldErrors(form, error);
    }
  });
  wireSettings();
  $("character-file").addEventListener("change", (e) => addCharacter(e.currentTarget));
  const pending = sessionStorage.getItem("studiolo-film-notice");
  if (pending) { sessionStorage.removeItem("studiolo-film-notice"); toast(pending, { kind: "error", timeout: 10000 }); }
  load();
}
