// The Films page: the user's films (thumbnail, state, title, length) or the Trash's, and the new-film form (live word
// count, voices grouped by language with a sample to listen to, podcast speakers found in the script, character
// pictures). What is typed is kept in sessionStorage until the film is created, so a reload loses nothing.
import { api, apiPath, ApiError, clearFieldErrors, confirmDialog, el, formJson, showFieldErrors, toast } from "./app.js";

const PAGE = 24;
const DRAFT = "studiolo-film-draft";
const number = new Intl.NumberFormat();
const languageNames = (() => {
  try { return new Intl.DisplayNames(undefined, { type: "language" }); } catch { return null; }
})();

export const STATUS_TEXT = {
  draft: "draft", rendering: "rendering", rendered: "rendered", failed: "failed", canceled: "canceled",
};

/** Words as the server counts them (domain/film/script.py count_words): runs of letters or digits between spaces,
 * and each Chinese or Japanese character. */
const CJK = /[\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f\u{20000}-\u{2fa1f}]/u;
export function countWords(text) {
  let total = 0;
  for (const token of text.split(/\s+/)) {
    let rest = "";
    for (const ch of token) {
      if (CJK.test(ch)) { total += 1; rest += " "; } else rest += ch;
    }
    total += rest.split(" ").filter((part) => /[\p{L}\p{N}]/u.test(part)).length;
  }
  return total;
}

/** "NAME: text" speakers of a podcast script, in order of first appearance (the server's rule, script.parse_lines:
 * a name of 1-40 letters, digits, spaces and . _ - with a letter in it, and something said after the colon). */
export function findSpeakers(text) {
  const seen = [];
  for (const line of text.split(/\r?\n/)) {
    const m = line.trim().match(/^([\p{L}\p{N}][\p{L}\p{N}_ .-]{0,39}?)\s*[:：]\s*(.*)$/u);
    if (!m || !/\p{L}/u.test(m[1]) || !m[2].trim()) continue;
    const name = m[1].split(/\s+/).join(" ");
    if (!seen.includes(name)) seen.push(name);
  }
  return seen;
}

/** "1:05" from seconds. */
export function duration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(Number(seconds))) return "";
  const s = Math.round(Number(seconds));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

/** What a voice is called in a list: the server's name ("English (US), male — espeak"), with its gender and age
 * where the name does not say them already. */
export function voiceLabel(voice) {
  // "adult" is what most voices are: said only for a child's or a senior's voice, and only where the name does not.
  const age = voice.age && voice.age !== "adult" && !voice.name.toLowerCase().includes(voice.age) ? `, ${voice.age}` : "";
  const gender = voice.gender && !voice.name.toLowerCase().includes(voice.gender) ? `, ${voice.gender}` : "";
  return voice.name + gender + age;
}

export function languageName(code) {
  const base = String(code || "").split(/[-_]/)[0];
  try { return languageNames?.of(base) ?? base; } catch { return base || "Other"; }
}

/** Fill a <select> with voices in <optgroup>s by language (the server lists them sorted by language, name). */
export function fillVoices(select, voices, selected) {
  const groups = new Map();
  for (const v of voices) {
    const name = languageName(v.language);
    if (!groups.has(name)) groups.set(name, []);
    groups.get(name).push(v);
  }
  const parts = [...groups.keys()].sort((a, b) => a.localeCompare(b)).map((name) =>
    el("optgroup", { label: name }, ...groups.get(name).map((v) => el("option", { value: v.id, text: voiceLabel(v) }))));
  select.replaceChildren(...parts);
  if (selected && voices.some((v) => v.id === selected)) select.value = selected;
}

let sample = null;
/** Play a voice's sample (GET /films/voices/{id}/sample, a WAV); a second press stops it. */
export async function playSample(button, voiceId, note) {
  if (sample) { sample.pause(); sample = null; }
  if (button.getAttribute("aria-pressed") === "true") { button.setAttribute("aria-pressed", "false"); button.textContent = "Play a sample"; return; }
  if (!voiceId) return;
  button.disabled = true;
  const label = "Play a sample";
  button.textContent = "Loading…";
  try {
    const res = await fetch(apiPath`/api/v1/films/voices/${voiceId}/sample`, { credentials: "same-origin" });
    if (!res.ok) throw new ApiError(res.status, await res.json().catch(() => null));
    const url = URL.createObjectURL(await res.blob());
    const audio = new Audio(url);
    sample = audio;
    const done = () => { URL.revokeObjectURL(url); button.textContent = label; button.setAttribute("aria-pressed", "false"); if (sample === audio) sample = null; };
    audio.addEventListener("ended", done);
    audio.addEventListener("pause", done);
    await audio.play();
    button.textContent = "Stop the sample";
    button.setAttribute("aria-pressed", "true");
    if (note) note.textContent = "Playing a sample of this voice.";
  } catch (error) {
    button.textContent = label;
    const message = error instanceof ApiError ? error.message : "The sample could not be played.";
    if (note) note.textContent = message;
    else toast(message, { kind: "error" });
  } finally {
    button.disabled = false;
  }
}

// --- the list ----------------------------------------------------------------------------------------------
function filmItem(film, trashed) {
  const node = document.getElementById("film-item").content.firstElementChild.cloneNode(true);
  const href = apiPath`/films/${film.id}`;
  const thumb = node.querySelector(".film-thumb");
  const img = thumb.querySelector("img");
  const picture = film.thumbnail_url ?? film.outputs?.thumbnail_url ?? film.cover_url ?? null;
  if (picture) { img.src = picture; thumb.querySelector(".film-thumb-none").remove(); } else img.remove();
  const title = node.querySelector(".film-item-title a");
  title.textContent = film.title;
  if (!trashed) { thumb.href = href; title.href = href; } else { thumb.removeAttribute("tabindex"); title.removeAttribute("href"); }
  const seconds = film.duration ?? film.outputs?.duration ?? film.planned_seconds;
  const scenes = film.scene_count ?? film.scenes?.length;
  const meta = [];
  if (seconds) meta.push(film.status === "rendered" ? duration(seconds) : `about ${duration(seconds)}`);
  if (scenes) meta.push(`${scenes} scene${scenes === 1 ? "" : "s"}`);
  if (film.aspect) meta.push(film.aspect);
  node.querySelector(".film-item-meta").textContent = meta.join(" · ");
  const badge = node.querySelector(".film-status");
  badge.textContent = STATUS_TEXT[film.status] ?? film.status;
  badge.classList.add(`badge-film-${film.status}`);
  const actions = node.querySelector(".film-item-actions");
  const label = (what) => `${what} “${film.title}”`;
  if (trashed) {
    actions.append(
      el("button", { class: "btn btn-sm", type: "button", "aria-label": label("Restore"), text: "Restore",
        onclick: () => restore(film, node) }),
      el("button", { class: "btn btn-sm btn-danger", type: "button", "aria-label": label("Delete forever"), text: "Delete forever",
        onclick: () => purge(film, node) }));
  } else {
    actions.append(el("button", { class: "btn btn-sm btn-ghost", type: "button", "aria-label": label("Move to the Trash"),
      text: "Delete", onclick: () => trash(film, node) }));
  }
  node.dataset.id = film.id;
  return node;
}

function refreshEmpty() {
  const list = document.getElementById("film-list");
  document.getElementById("films-empty").hidden = list.children.length > 0;
}

async function trash(film, node) {
  try {
    await api(apiPath`films/${film.id}`, { method: "DELETE" });
    node.remove();
    refreshEmpty();
    toast(`“${film.title}” moved to the Trash.`, { action: { label: "Undo", run: () => restore(film, null, true) } });
  } catch (error) { toast(error.message, { kind: "error" }); }
}

async function restore(film, node, reload = false) {
  try {
    await api(apiPath`films/${film.id}/restore`, { method: "POST" });
    if (reload) { location.reload(); return; }
    node?.remove();
    refreshEmpty();
    toast(`“${film.title}” is back in your films.`);
  } catch (error) { toast(error.message, { kind: "error" }); }
}

async function purge(film, node) {
  if (!(await confirmDialog(`Delete “${film.title}” and its video for good? This cannot be undone.`, { ok: "Delete forever" }))) return;
  try {
    await api(apiPath`films/${film.id}/purge`, { method: "DELETE" });
    node.remove();
    refreshEmpty();
  } catch (error) { toast(error.message, { kind: "error" }); }
}

async function loadList() {
  const list = document.getElementById("film-list");
  const status = document.getElementById("films-status");
  const more = document.getElementById("films-more");
  const trashed = list.dataset.trashed === "true";
  let cursor = null;
  const load = async () => {
    const params = new URLSearchParams({ limit: String(PAGE) });
    if (trashed) params.set("trashed", "true");
    if (cursor) params.set("cursor", cursor);
    more.disabled = true;
    try {
      const page = await api("films?" + params);
      list.append(...page.items.map((f) => filmItem(f, trashed)));
      cursor = page.next_cursor;
      more.hidden = !cursor;
      status.textContent = list.children.length ? `${number.format(list.children.length)} film${list.children.length === 1 ? "" : "s"}${cursor ? " shown" : ""}` : "";
      refreshEmpty();
    } catch (error) {
      status.textContent = error.message;
    } finally {
      more.disabled = false;
    }
  };
  more.addEventListener("click", load);
  await load();
  // Films rendering now: their state and thumbnail follow without a reload (the first page, every few seconds).
  const follow = async () => {
    if (!list.querySelector(".badge-film-rendering")) return;
    try {
      const page = await api(`films?limit=${PAGE}${trashed ? "&trashed=true" : ""}`, { retry: false });
      for (const film of page.items) {
        const old = list.querySelector(`.film-item[data-id="${CSS.escape(film.id)}"]`);
        if (old && old.querySelector(".film-status").textContent !== (STATUS_TEXT[film.status] ?? film.status)) {
          old.replaceWith(filmItem(film, trashed));
        }
      }
    } catch { /* offline for a moment: try again */ }
    setTimeout(follow, 4000);
  };
  setTimeout(follow, 4000);
}

// --- the new-film form -------------------------------------------------------------------------------------
function wireForm(form) {
  const max = Number(form.dataset.maxWords);
  const script = form.querySelector("#film-script");
  const count = form.querySelector("#script-count");
  const voice = form.querySelector("#film-voice");
  const note = form.querySelector("#voice-note");
  const podcast = form.querySelector("#film-podcast");
  const speakersBox = form.querySelector("#speakers");
  const speakerList = form.querySelector("#speaker-list");
  const speed = form.querySelector("#film-speed");
  const speedOut = form.querySelector("#speed-out");
  const music = form.querySelector("#film-music");
  const files = form.querySelector("#film-characters");
  const picks = form.querySelector("#character-picks");
  let voices = [];
  let draft = {};
  try { draft = JSON.parse(sessionStorage.getItem(DRAFT) || "{}"); } catch { draft = {}; }
  const speakerVoices = { ...(draft.speaker_voices ?? {}) };

  const words = () => {
    const n = countWords(script.value);
    count.textContent = `${number.format(n)} / ${number.format(max)} words`;
    count.classList.toggle("over", n > max);
  };
  const speakers = () => {
    const names = podcast.checked ? findSpeakers(script.value) : [];
    speakersBox.hidden = !podcast.checked;
    form.querySelector("#speakers-hint").textContent = names.length
      ? "Speakers found in the script (lines that start with NAME:). Pick a voice for each:"
      : "No speakers yet: write lines as “NAME: text”, and each name gets its own voice here.";
    const kept = new Set(names);
    for (const row of [...speakerList.children]) if (!kept.has(row.dataset.speaker)) row.remove();
    names.forEach((name, i) => {
      if ([...speakerList.children].some((r) => r.dataset.speaker === name)) return;
      const id = `speaker-voice-${i}-${Math.random().toString(36).slice(2, 7)}`;
      const select = el("select", { id, "data-skip": "", "data-speaker": name });
      fillVoices(select, voices, speakerVoices[name] ?? voice.value);
      select.addEventListener("change", () => { speakerVoices[name] = select.value; save(); });
      const play = el("button", { class: "btn btn-sm", type: "button", text: "Play a sample", "aria-label": `Play a sample of ${name}’s voice` });
      play.addEventListener("click", () => playSample(play, select.value, note));
      speakerList.append(el("div", { class: "field speaker", "data-speaker": name },
        el("label", { for: id, text: name }), el("div", { class: "row" }, select, play)));
    });
  };
  const values = () => {
    const body = formJson(form);
    for (const key of ["target_seconds", "speed"]) if (key in body) body[key] = Number(body[key]);
    const chosen = {};
    for (const select of speakerList.querySelectorAll("select[data-speaker]")) chosen[select.dataset.speaker] = select.value;
    body.speaker_voices = body.podcast ? chosen : {};
    if (!body.voice) body.voice = null;
    if (body.style === "none" || !body.style) body.style = null;
    return body;
  };
  const save = () => {
    try { sessionStorage.setItem(DRAFT, JSON.stringify({ ...values(), speaker_voices: { ...speakerVoices, ...values().speaker_voices } })); }
    catch { /* storage full or blocked */ }
  };
  const restoreDraft = () => {
    for (const [name, value] of Object.entries(draft)) {
      const input = form.elements.namedItem(name);
      if (!(input instanceof HTMLElement) || value === null || value === undefined) continue;
      if (input.type === "checkbox") input.checked = Boolean(value);
      else if (input.tagName === "SELECT" && name === "style" && value === null) continue;
      else input.value = String(value);
    }
    speedOut.textContent = `${Number(speed.value).toFixed(1)}×`;
  };

  restoreDraft();
  words();
  speakers();
  script.addEventListener("input", () => { words(); speakers(); });
  podcast.addEventListener("change", speakers);
  speed.addEventListener("input", () => { speedOut.textContent = `${Number(speed.value).toFixed(1)}×`; });
  form.addEventListener("input", save);
  form.addEventListener("change", save);
  form.querySelector("#voice-sample").addEventListener("click", (e) => playSample(e.currentTarget, voice.value, note));
  files.addEventListener("change", () => {
    picks.replaceChildren(...[...files.files].map((f) => el("li", { text: `${characterName(f.name)} (${f.name})` })));
  });

  Promise.all([api("films/voices"), api("films/options")]).then(([v, options]) => {
    voices = v.voices ?? [];
    fillVoices(voice, voices, draft.voice ?? v.default);
    if (!voices.length) {
      voice.replaceChildren(el("option", { value: "", text: "No voices on this server" }));
      note.textContent = "No voice is installed: ask the administrator to install espeak-ng.";
      form.querySelector("#voice-sample").disabled = true;
    }
    for (const mood of options.moods ?? []) music.append(el("option", { value: mood, text: mood[0].toUpperCase() + mood.slice(1) }));
    if (draft.music) music.value = draft.music;
    else if ((options.moods ?? []).includes("calm")) music.value = "calm";
    // Image-to-video models (SVD), when the server has any: the choice appears only then.
    const motions = (options.motions ?? []).filter((m) => m !== "kenburns");
    const motion = form.querySelector("#film-motion");
    for (const id of motions) motion.append(el("option", { value: id, text: `Animated by ${id}` }));
    form.querySelector("#motion-field").hidden = motions.length === 0;
    if (draft.motion && [...motion.options].some((o) => o.value === draft.motion)) motion.value = draft.motion;
    if (options.max_words) form.dataset.maxWords = String(options.max_words);
    speakers();
    form.dataset.ready = "true";
  }).catch((error) => {
    note.textContent = error.message;
    form.dataset.ready = "true";
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearFieldErrors(form);
    const button = form.querySelector("[type=submit]");
    button.disabled = true;
    button.textContent = "Making the storyboard…";
    try {
      const film = await api("films", { method: "POST", body: values() });
      for (const file of files.files) {
        const data = new FormData();
        data.append("name", characterName(file.name));
        data.append("image", file);
        try { await api(apiPath`films/${film.id}/characters`, { method: "POST", body: data }); }
        catch (error) { sessionStorage.setItem("studiolo-film-notice", `${file.name}: ${error.message}`); }
      }
      try { sessionStorage.removeItem(DRAFT); } catch { /* blocked */ }
      location.assign(apiPath`/films/${film.id}`);
    } catch (error) {
      button.disabled = false;
      button.textContent = "Create the storyboard";
      if (!(error instanceof ApiError)) throw error;
      showFieldErrors(form, error);
    }
  });
}

/** A character's name from its picture's file name: "mara_the-keeper.png" -> "mara the keeper". */
export function characterName(fileName) {
  return fileName.replace(/\.[^.]+$/, "").replace(/[_-]+/g, " ").trim().slice(0, 100) || "Character";
}

if (document.body.dataset.page === "films") {
  loadList();
  const form = document.getElementById("film-form");
  if (form) wireForm(form);
  if (location.hash === "#new-film") document.getElementById("new-film")?.focus();
  document.getElementById("new-film-link")?.addEventListener("click", (e) => {
    e.preventDefault();
    const box = document.getElementById("new-film");
    box.scrollIntoView({ block: "start" });
    document.getElementById("film-title").focus();
  });
}
