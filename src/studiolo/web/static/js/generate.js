// The generator: form -> POST /api/v1/generations (JSON; multipart with a start image and a painted mask; many jobs
// at once through /generations/batch), results from gen-jobs.js, the mask editor from gen-mask.js and prompt
// history from gen-history.js. Settings come back from a result ("Use settings", ?remix=), from a dropped PNG
// (POST /png-info) and from the gallery (?init=, ?vary=); the selected model's capabilities decide which
// controls are on, and say why one is off.
import { api, ApiError, apiPath, clearFieldErrors, isId, showFieldErrors, toast } from "./app.js";
import { createAdapters } from "./gen-adapters.js";
import { createCost } from "./gen-cost.js";
import { createDescribe } from "./describe.js";
import { createHistory } from "./gen-history.js";
import { createJobs, quietGet } from "./gen-jobs.js";
import { createMaskEditor } from "./gen-mask.js";

const $ = (id) => document.getElementById(id);
const form = $("gen-form");
const prompt = $("prompt");
const count = $("prompt-count");
const seed = $("seed");
const user = form.dataset.user || "me";
const fmt = new Intl.NumberFormat();
const MAX_SEED = 4294967295;
const channel = "BroadcastChannel" in window ? new BroadcastChannel("studiolo-jobs") : null;

// The server's limit (STUDIOLO_MAX_PROMPT_CHARS), rendered into the page: the one number, counted the way the
// server counts (code points of the prompt as sent, trimmed), not UTF-16 units.
const LIMIT = Number(prompt.dataset.limit);
const promptLength = () => [...prompt.value.trim()].length;
const updateCount = () => {
  count.textContent = `${fmt.format(promptLength())} / ${fmt.format(LIMIT)}`;
  count.classList.toggle("over", promptLength() > LIMIT);
};
prompt.addEventListener("input", updateCount);
updateCount();

$("seed-dice").addEventListener("click", () => { seed.value = String(crypto.getRandomValues(new Uint32Array(1))[0]); check(seed); summarize(); });

const mask = createMaskEditor();
// LoRA, ControlNet, reference image and hires fix (gen-adapters.js): what they add to a job, and their pictures.
const adapters = createAdapters({ form, hasStartImage: () => Boolean(mask.kind()), changed: () => { summarize(); cost?.update(); } });
const jobs = createJobs({
  box: $("jobs"), empty: $("jobs-empty"), olderButton: $("jobs-older"), clearButton: $("clear-finished"),
  restoreButton: $("jobs-restore"), user, actions: (kind, id, button) => act(kind, id, button),
  costRate: Number(form.dataset.costRate || 0),
});
const promptHistory = createHistory({ prompt, toggle: $("history-toggle"), panel: $("history-list"), user });
// Billing on (the page carries the line): the cost of the job as set, and refusals by the plan next to the button.
const cost = $("cost-line") ? createCost({
  line: $("cost-line"), text: $("cost-text"), refusal: $("billing-refusal"),
  settings: () => (mask.kind() ? { ...jobParams(), strength: mask.strength() } : jobParams()),
  kind: () => mask.kind(), batches: () => Number(form.batch_count.value) || 1,
}) : null;

// --- checking fields (plain words, next to the field, once) ----------------------------------------------
const whole = (min, max, label) => (v) => (/^\d+$/.test(v) && Number(v) >= min && Number(v) <= max ? null
  : `${label} must be a whole number ${min === 0 ? "up to" : `from ${fmt.format(min)} to`} ${fmt.format(max)}`);
const RULES = {
  seed: whole(0, MAX_SEED, "Seed"),
  variation_seed: whole(0, MAX_SEED, "Variation seed"),
  steps: whole(1, 150, "Steps"),
  guidance: (v) => (/^\d+(\.\d+)?$/.test(v) && Number(v) <= 30 ? null : "Guidance must be a number from 0 to 30"),
  batch_count: whole(1, 100, "Batch count"),
};
function check(input) {
  const rule = RULES[input.name];
  if (!rule) return true;
  const value = input.value.trim();
  const problem = value === "" && input.name !== "batch_count" ? null : rule(value);
  const slot = form.querySelector(`[data-error-for="${input.name}"]`);
  if (slot) slot.textContent = problem ?? "";
  if (problem) input.setAttribute("aria-invalid", "true");
  else input.removeAttribute("aria-invalid");
  return !problem;
}
for (const name of Object.keys(RULES)) form.elements[name]?.addEventListener("change", (e) => check(e.target));

// --- model capabilities ----------------------------------------------------------------------------------
let capabilities = {}; // model id -> capabilities (absent while the server does not report them)
const caps = () => capabilities[form.model.value];
function fillSelect(select, values) {
  const keep = select.value;
  select.replaceChildren(new Option("Model default", ""), ...values.map((v) => new Option(v, v)));
  if (values.includes(keep)) select.value = keep;
}
function note(id, text) { const n = $(id); n.textContent = text ?? ""; n.hidden = !text; }
function applyCapabilities() {
  const c = caps();
  const model = form.model.value;
  // Without capabilities (an older server) the form is what it always was: no sampler, scheduler or variation.
  $("sampler-field").hidden = !c?.samplers?.length;
  $("scheduler-field").hidden = !c?.schedulers?.length;
  if (c?.samplers) fillSelect(form.sampler, c.samplers);
  if (c?.schedulers) fillSelect(form.scheduler, c.schedulers);
  const variation = $("variation");
  variation.hidden = !c;
  variation.disabled = Boolean(c && !c.variation_seed);
  note("variation-note", c && !c.variation_seed ? `${model} cannot blend in a variation seed.` : null);
  const imageInput = $("image-input");
  const noImage = c && !c.img2img;
  imageInput.classList.toggle("unavailable", Boolean(noImage));
  $("init-file").disabled = Boolean(noImage);
  $("mask-on").disabled = Boolean(c && !c.inpaint);
  note("image-note", noImage ? `${model} cannot start from an image: pick another model for image-to-image and inpaint.`
    : c && !c.inpaint ? `${model} can do image-to-image but not inpaint: the mask is off.` : null);
  if (c && !c.inpaint) $("mask-on").checked = false;
  let tooLarge = false;
  for (const option of form.size_choice.querySelectorAll("option[value^='size:']")) {
    const [w, h] = option.value.slice(5).split("x").map(Number);
    const over = Boolean(c?.max_pixels && w * h > c.max_pixels);
    option.disabled = over;
    if (over && option.selected) tooLarge = true;
  }
  if (tooLarge) form.size_choice.value = "";
  const limit = c?.max_pixels ? Math.floor(Math.sqrt(c.max_pixels)) : null;
  note("size-note", tooLarge ? `That size is more than ${model} can make (up to about ${limit}×${limit}): back to the model's default.`
    : limit && form.size_choice.querySelector("option:disabled") ? `Sizes over about ${limit}×${limit} are off: ${model} cannot make them.` : null);
  summarize();
}
form.model.addEventListener("change", applyCapabilities);
async function loadModels() {
  try {
    const list = await quietGet("models");
    capabilities = Object.fromEntries(list.items.filter((m) => m.capabilities).map((m) => [m.id, m.capabilities]));
  } catch { /* offline: every control stays on; the server still refuses what a model cannot do */ }
  applyCapabilities();
}

// --- the Advanced summary (what a collapsed section would otherwise hide) --------------------------------
function summarize() {
  const parts = [];
  if (form.negative_prompt.value.trim()) parts.push("Negative prompt");
  const tags = tagList();
  if (tags.length) parts.push(tags.length === 1 ? "1 tag" : `${tags.length} tags`);
  if (seed.value.trim()) parts.push(`seed ${seed.value.trim()}`);
  if (form.steps.value.trim()) parts.push(`${form.steps.value.trim()} steps`);
  if (form.guidance.value.trim()) parts.push(`CFG ${form.guidance.value.trim()}`);
  if (!$("sampler-field").hidden && form.sampler.value) parts.push(form.sampler.value);
  if (!$("scheduler-field").hidden && form.scheduler.value) parts.push(form.scheduler.value);
  if (variationOn()) parts.push(`variation ${form.variation_strength.value}`);
  const batches = Number(form.batch_count.value) || 1;
  if (batches > 1) parts.push(`${batches} × ${Number(form.n.value) || 1} images`);
  $("adv-summary").textContent = parts.length ? parts.join(" · ") : "";
  adapters.sync();
  const total = batches * (Number(form.n.value) || 1);
  $("gen-summary").textContent = batches > 1 ? `${batches} jobs, ${total} images.` : "";
}
form.addEventListener("input", summarize);
form.addEventListener("change", summarize);
form.addEventListener("input", (e) => { if (e.target !== prompt && e.target.name !== "tags") cost?.update(); });
form.addEventListener("change", (e) => { if (e.target !== prompt) cost?.update(); });
$("variation_strength").addEventListener("input", () => { $("variation-out").textContent = form.variation_strength.value; });

const tagList = () => form.tags.value.split(",").map((t) => t.trim()).filter(Boolean);
const variationOn = () => !$("variation").hidden && !$("variation").disabled && form.variation_seed.value.trim() !== ""
  && Number(form.variation_strength.value) > 0;

// --- the request ---------------------------------------------------------------------------------------
function params() {
  const p = { prompt: prompt.value.trim(), n: Number(form.n.value || 1), model: form.model.value };
  const style = form.querySelector("input[name=style]:checked")?.value;
  if (style && style !== "none") p.style = style;
  const size = form.size_choice.value;
  if (size.startsWith("size:")) p.size = size.slice(5);
  else if (size.startsWith("ratio:")) p.aspect_ratio = size.slice(6);
  if (form.quality.value) p.quality = form.quality.value;
  if (seed.value.trim() !== "") p.seed = Number(seed.value);
  if (form.negative_prompt.value.trim()) p.negative_prompt = form.negative_prompt.value.trim();
  const tags = tagList();
  if (tags.length) p.tags = tags;
  if (form.steps.value.trim()) p.steps = Number(form.steps.value);
  if (form.guidance.value.trim()) p.guidance = Number(form.guidance.value);
  if (!$("sampler-field").hidden && form.sampler.value) p.sampler = form.sampler.value;
  if (!$("scheduler-field").hidden && form.scheduler.value) p.scheduler = form.scheduler.value;
  if (variationOn()) {
    p.variation_seed = Number(form.variation_seed.value);
    p.variation_strength = Number(form.variation_strength.value);
  }
  return p;
}
// The whole job: the form's fields and the adapter panels' (the "From a photo" tab takes only the former).
const jobParams = () => adapters.apply(params());

async function send(p, kind) {
  // ControlNet and reference pictures go as files: multipart even for txt2img (the API's control_image_<i>).
  const files = adapters.files();
  if (!kind && !files.length) return api("generations", { method: "POST", body: p });
  const body = new FormData();
  body.append("params", JSON.stringify(kind ? { ...p, strength: mask.strength() } : p));
  if (kind) {
    body.append("init_image", mask.file);
    body.append("kind", kind);
    if (kind === "inpaint") body.append("mask_image", await mask.maskBlob(), "mask.png");
  }
  for (const [field, file] of files) body.append(field, file, file.name || `${field}.png`);
  return api("generations", { method: "POST", body });
}

/** Queue ``batches`` jobs of ``p`` (with a typed seed, each starts where the last one ended, as A1111 does). */
async function submit(p, batches = 1) {
  const kind = mask.kind();
  const items = Array.from({ length: batches }, (_, i) => (p.seed === undefined ? { ...p } : { ...p, seed: (p.seed + i * p.n) % (MAX_SEED + 1) }));
  const accepted = [];
  const show = (a, item) => {
    accepted.push(a);
    jobs.follow({ id: a.id, status: a.status, queue_position: a.queue_position, queue_position_capped: a.queue_position_capped,
      params: { ...item }, urls: a.urls, outputs: [], progress: { step: 0, total: 0 } });
  };
  try {
    if (kind || batches === 1 || adapters.files().length) {
      // One request per job (uploads cannot go through /generations/batch): each is shown as soon as it is queued.
      for (const item of items) show(await send(item, kind), item);
    } else {
      const batch = await api("generations/batch", { method: "POST", body: { generations: items } });
      batch.jobs.forEach((a, i) => show(a, items[i]));
    }
  } finally {
    if (accepted.length) {
      channel?.postMessage({ type: "submitted", ids: accepted.map((a) => a.id) });
      promptHistory.add(p.prompt);
    }
  }
  return accepted;
}

function showError(error) {
  const field = error.details?.field ? form.elements[error.details.field] : null;
  if (field instanceof Element && $("advanced").contains(field)) $("advanced").open = true; // seen, and focusable
  adapters.reveal(error.details?.field); // an adapter's field: its panel opens
  showFieldErrors(form, error);
  if (error.code === "content_rejected") {
    // A moderation refusal (docs/safety.md) is said in full by the button, where the eye is after pressing it;
    // the field it concerns stays marked and focused.
    form.querySelector(`[data-error-for="${error.details.field}"]`)?.replaceChildren();
    form.querySelector("[data-form-error]").textContent = error.message;
    return;
  }
  // The message sits next to its field; the bar by the button only points there (said once, not twice).
  if (form.querySelector("[data-error-for]:not([data-form-error]):not(:empty)")) {
    form.querySelector("[data-form-error]").textContent = "Check the field marked above.";
  }
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  clearFieldErrors(form);
  const problem = !prompt.value.trim() ? "Write a prompt first."
    : promptLength() > LIMIT ? `The prompt is longer than ${fmt.format(LIMIT)} characters.` : null;
  if (problem) {
    showError(new ApiError(422, { error: { code: "invalid_input", message: problem, details: { field: "prompt" } } }));
    return;
  }
  const bad = Object.keys(RULES).map((name) => form.elements[name]).filter((input) => input && !check(input));
  if (bad.length) {
    if (bad.some((input) => $("advanced").contains(input))) $("advanced").open = true;
    bad[0].focus();
    form.querySelector("[data-form-error]").textContent = "Check the field marked above.";
    return;
  }
  const unready = adapters.problem();
  if (unready) { form.querySelector("[data-form-error]").textContent = unready; return; }
  const button = $("generate");
  button.disabled = true;
  cost?.clearRefusal();
  try {
    await submit(jobParams(), Number(form.batch_count.value) || 1);
    say("");
    // A typed seed stays as typed (the next press repeats it): "random" only when the box is empty.
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    // A refusal by the plan is said by the button with its way out (gen-cost.js), not next to a field.
    if (!cost?.showRefusal(error)) showError(error);
  } finally {
    button.disabled = false;
    cost?.update(); // the balance moved (credits held), or the refusal may no longer hold
  }
});

// Ctrl/Cmd+Enter generates from anywhere in the form.
form.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); form.requestSubmit(); }
});
// The "?" list (app.js's registry, CONTRACTS.md); keys as shown, alternatives joined by " or ".
window.studiolo?.shortcuts?.register?.("Generator", "Ctrl+Enter or ⌘+Enter", "Generate");
window.studiolo?.shortcuts?.register?.("Generator", "↑ or ↓", "Earlier prompts (in an empty prompt box)");
window.studiolo?.shortcuts?.register?.("Generator", "[ or ]", "Smaller or larger mask brush");
window.studiolo?.shortcuts?.register?.("Generator", "Ctrl+Z or Ctrl+Shift+Z", "Undo or redo a mask stroke");

// --- filling the form from settings (a result, an image's metadata, a dropped PNG) ------------------------
const FIELD_NAMES = { prompt: "prompt", negative_prompt: "negative prompt", style: "style", model: "model", seed: "seed",
  steps: "steps", guidance: "guidance", sampler: "sampler", scheduler: "scheduler", width: "size",
  variation_seed: "variation seed", variation_strength: "variation strength", strength: "strength" };

/** Put ``s`` (GenerationParams field names) into the form; returns [what was used, what could not be]. */
function fill(s) {
  const used = [];
  const skipped = [];
  const take = (key, ok) => { if (s[key] === undefined || s[key] === null || s[key] === "") return; (ok ? used : skipped).push(FIELD_NAMES[key] ?? key); };
  if (typeof s.model === "string" && s.model) {
    const has = [...form.model.options].some((o) => o.value === s.model);
    if (has) { form.model.value = s.model; applyCapabilities(); }
    take("model", has);
    if (!has) skipped[skipped.length - 1] = `model ${s.model} (not installed)`;
  }
  if (typeof s.prompt === "string") { prompt.value = s.prompt; updateCount(); take("prompt", true); }
  form.negative_prompt.value = s.negative_prompt ?? "";
  take("negative_prompt", true);
  const style = form.querySelector(`input[name=style][value="${CSS.escape(s.style || "none")}"]`);
  if (style) style.checked = true;
  if (s.style) take("style", Boolean(style));
  seed.value = Number.isInteger(s.seed) ? String(s.seed) : "";
  take("seed", true);
  form.steps.value = s.steps ?? "";
  take("steps", true);
  form.guidance.value = s.guidance ?? "";
  take("guidance", true);
  for (const name of ["sampler", "scheduler"]) {
    const select = form.elements[name];
    const offered = !$(`${name}-field`).hidden && [...select.options].some((o) => o.value === s[name]);
    select.value = offered ? s[name] : "";
    take(name, offered);
  }
  if (s.width && s.height) {
    const value = `size:${s.width}x${s.height}`;
    let option = [...form.size_choice.options].find((o) => o.value === value);
    if (!option) {
      option = new Option(`${s.width}×${s.height} (from the image)`, value);
      form.size_choice.querySelector("optgroup").append(option);
    }
    form.size_choice.value = option.disabled ? "" : value;
    take("width", !option.disabled);
  }
  const variation = !$("variation").hidden && !$("variation").disabled;
  form.variation_seed.value = variation && Number.isInteger(s.variation_seed) ? String(s.variation_seed) : "";
  form.variation_strength.value = String(variation ? s.variation_strength ?? 0 : 0);
  $("variation-out").textContent = form.variation_strength.value;
  take("variation_seed", variation);
  if (typeof s.strength === "number" && s.strength >= 0 && s.strength <= 1) { mask.setStrength(s.strength); take("strength", true); }
  const [adapterUsed, adapterSkipped] = adapters.fill(s);
  used.push(...adapterUsed);
  skipped.push(...adapterSkipped);
  for (const input of form.querySelectorAll("[aria-invalid]")) check(input);
  summarize();
  return [used, skipped];
}

function say(text) {
  const box = $("settings-loaded");
  box.textContent = text;
}

// A hires-fixed image is larger than the size it was sampled at: its metadata keeps that first-pass size.
const firstPass = (img) => (img.metadata && img.metadata.hires && img.metadata.width ? img.metadata : img);
const imageSettings = (img) => ({ ...img.metadata, prompt: img.prompt, negative_prompt: img.negative_prompt, style: img.style,
  model: img.model, seed: img.seed, steps: img.steps, guidance: img.guidance, sampler: img.sampler,
  width: firstPass(img).width, height: firstPass(img).height });

async function remix(imageId) {
  const img = await api(apiPath`images/${imageId}`);
  const [, skipped] = fill(imageSettings(img));
  say(`Settings loaded from “${img.prompt.slice(0, 80)}”${skipped.length ? `. Not used: ${skipped.join(", ")}.` : "."}`);
  prompt.focus();
}

async function fetchImage(imageId) {
  const res = await fetch(apiPath`/api/v1/images/${imageId}/file`, { credentials: "same-origin" });
  if (!res.ok) throw new ApiError(res.status, await res.json().catch(() => null));
  const blob = await res.blob();
  return new File([blob], `${imageId}.png`, { type: blob.type || "image/png" });
}

async function startFrom(imageId, mode) {
  if (caps() && !caps().img2img) { toast($("image-note").textContent, { kind: "error" }); return false; }
  const ok = mask.useFile(await fetchImage(imageId), { mode: mode === "inpaint" && (!caps() || caps().inpaint) ? "inpaint" : "img2img" });
  if (ok) {
    $("image-input").scrollIntoView({ block: "nearest" });
    say(mode === "inpaint" ? "Image loaded: paint over the parts to change, then Generate." : "Image loaded: write what it should become, then Generate.");
  }
  return ok;
}

/** Vary: image-to-image of the image with its own settings, a new seed, at ``strength``, queued at once. */
async function vary(imageId, strength) {
  const img = await api(apiPath`images/${imageId}`);
  fill(imageSettings(img));
  seed.value = "";
  if (!(await startFrom(imageId, "img2img"))) return;
  mask.setStrength(strength);
  summarize();
  await submit({ ...jobParams(), n: 1 }, 1);
  say(`Varying “${img.prompt.slice(0, 60)}” at strength ${strength} with a new seed.`);
}

async function act(kind, imageId, button) {
  button.disabled = true;
  try {
    if (kind === "remix") await remix(imageId);
    else if (kind === "img2img" || kind === "inpaint") await startFrom(imageId, kind);
    else await vary(imageId, kind === "vary-subtle" ? 0.35 : 0.7);
  } catch (error) {
    if (!cost?.showRefusal(error)) toast(error.message, { kind: "error" });
  } finally {
    button.disabled = false;
  }
}

// --- dropping and picking files ------------------------------------------------------------------------
const STUDIOLO_FILE = /\/api\/v1\/images\/([0-9a-f-]{36})\/file/i;
const SOURCES = { studiolo: "a Studiolo image", a1111: "an AUTOMATIC1111 image", comfyui: "a ComfyUI workflow" };

async function readSettings(file) {
  const body = new FormData();
  body.append("file", file);
  try { return await api("png-info", { method: "POST", body }); }
  catch { return null; } // not readable as settings: it is still an image to start from
}

async function takeFile(file) {
  if (!file) return;
  if (file.type === "image/png") {
    const info = await readSettings(file);
    if (info?.source && Object.keys(info.parameters).length) {
      const [used, skipped] = fill(info.parameters);
      const unmapped = [...skipped, ...info.unmapped];
      const box = $("settings-loaded");
      box.replaceChildren(`Read from ${SOURCES[info.source]}: ${used.join(", ")}.${unmapped.length ? ` Not used: ${unmapped.join("; ")}.` : ""} `);
      const instead = document.createElement("button");
      instead.type = "button";
      instead.className = "btn btn-sm";
      instead.textContent = "Start from this image instead";
      instead.addEventListener("click", () => { mask.useFile(file); box.textContent = "Image loaded as the start image."; });
      box.append(instead);
      prompt.focus();
      return;
    }
  }
  if (caps() && !caps().img2img) { toast($("image-note").textContent, { kind: "error" }); return; }
  mask.useFile(file);
}

async function takeDrop(dt) {
  const id = dt.getData("application/x-studiolo-image") || STUDIOLO_FILE.exec(dt.getData("text/uri-list"))?.[1];
  if (dt.files.length) await takeFile(dt.files[0]);
  else if (isId(id)) await startFrom(id, "img2img");
}
const carriesImage = (dt) => [...dt.types].some((t) => t === "Files" || t === "application/x-studiolo-image" || t === "text/uri-list");
// The whole form takes drops (the drop zone sits in a section that may be closed); text still drops into text boxes.
form.addEventListener("dragover", (e) => {
  if (!carriesImage(e.dataTransfer) || e.target.closest("textarea, input[type=text]")) return;
  e.preventDefault();
  $("dropzone").classList.add("over");
});
form.addEventListener("dragleave", (e) => { if (!form.contains(e.relatedTarget)) $("dropzone").classList.remove("over"); });
form.addEventListener("drop", (e) => {
  $("dropzone").classList.remove("over");
  if (!carriesImage(e.dataTransfer) || e.target.closest("textarea, input[type=text]")) return;
  e.preventDefault();
  takeDrop(e.dataTransfer).catch((error) => toast(error.message, { kind: "error" }));
});
$("init-file").addEventListener("change", (e) => takeFile(e.target.files[0]).catch((error) => toast(error.message, { kind: "error" })));

// --- the "From a photo" tab (describe.js): its renders use this form's model, size and count, shown with the others.
createDescribe({
  settings: params,
  queued: (a, item) => {
    jobs.follow({ id: a.id, status: a.status, queue_position: a.queue_position, queue_position_capped: a.queue_position_capped,
      params: { ...item }, urls: a.urls, outputs: [], progress: { step: 0, total: 0 } });
    channel?.postMessage({ type: "submitted", ids: [a.id] });
  },
});

// --- remembered settings -------------------------------------------------------------------------------
// The choices a user makes once and keeps survive a reload (the Advanced header lists the ones it holds);
// the prompt and seed do not.
const KEPT = ["size_choice", "quality", "n", "model", "negative_prompt", "steps", "guidance", "sampler", "scheduler"];
const STORE = "studiolo-generator";
function restore() {
  let saved;
  try { saved = JSON.parse(localStorage.getItem(STORE) || "{}"); } catch { return; }
  for (const name of KEPT) {
    const field = form.elements[name];
    if (field && typeof saved[name] === "string" && (field.tagName !== "SELECT" || [...field.options].some((o) => o.value === saved[name]))) {
      field.value = saved[name];
    }
  }
  const style = saved.style && form.querySelector(`input[name=style][value="${CSS.escape(saved.style)}"]`);
  if (style) style.checked = true;
  savedChoice = saved;
}
let savedChoice = {};
function remember() {
  const saved = Object.fromEntries(KEPT.map((name) => [name, form.elements[name]?.value ?? ""]));
  saved.style = form.querySelector("input[name=style]:checked")?.value ?? "";
  try { localStorage.setItem(STORE, JSON.stringify(saved)); } catch { /* storage full or blocked */ }
}
restore();
form.addEventListener("change", remember);

// --- other tabs, the queue link ----------------------------------------------------------------------------
async function updateQueueLink() {
  try {
    const [running, queued] = await Promise.all(["running", "queued"].map((s) => quietGet(`jobs?status=${s}&limit=100`)));
    const n = running.items.length + queued.items.length;
    $("queue-link").textContent = n ? `Queue (${n})` : "Queue";
  } catch { /* offline */ }
}
channel?.addEventListener("message", async (e) => {
  if (e.data?.type === "submitted") {
    for (const id of e.data.ids ?? []) {
      if (!isId(id) || jobs.has(id)) continue;
      try { jobs.follow(await quietGet(apiPath`jobs/${id}`)); } catch { /* gone */ }
    }
  }
  updateQueueLink();
});
setInterval(updateQueueLink, 10000); // other devices' jobs; this browser's tabs say so at once

// --- start -----------------------------------------------------------------------------------------------
async function start() {
  await loadModels();
  // Selects filled from capabilities exist only now: their remembered values too.
  for (const name of ["sampler", "scheduler"]) {
    const v = savedChoice[name];
    if (typeof v === "string" && [...form.elements[name].options].some((o) => o.value === v)) form.elements[name].value = v;
  }
  summarize();
  cost?.now();
  try { await jobs.loadPage(); } catch (error) { toast(error.message, { kind: "error" }); }
  promptHistory.setJobs(jobs.prompts());
  updateQueueLink();
  const hash = location.hash.match(/^#job-(.+)$/);
  if (hash) await jobs.reveal(decodeURIComponent(hash[1]));
  const url = new URLSearchParams(location.search);
  const entry = ["remix", "init", "vary"].find((k) => isId(url.get(k)));
  if (entry) {
    // Handled once: a reload must not queue the Vary again.
    dropEntryQuery();
    const id = url.get(entry);
    try {
      if (entry === "remix") await remix(id);
      else if (entry === "init") await startFrom(id, url.get("mode") === "inpaint" ? "inpaint" : "img2img");
      else await vary(id, Math.min(1, Math.max(0.05, Number(url.get("strength")) || 0.35)));
    } catch (error) { toast(error.message, { kind: "error" }); }
  }
  form.dataset.ready = "true";
}
function dropEntryQuery() { window.history.replaceState(null, "", location.pathname + location.hash); }
window.addEventListener("hashchange", () => {
  const hash = location.hash.match(/^#job-(.+)$/);
  if (hash) jobs.reveal(decodeURIComponent(hash[1]));
});
start();
