// The gallery: justified rows over keyset pages, stars, multi-select (shift for a range) with bulk actions,
// compare, a tile menu, drag to the generator, keyboard shortcuts, and deletion through the Trash: a delete is
// sent at once (so leaving the page cannot lose it), Undo restores, and a failed request puts the tile back.
// /gallery?view=trash is the Trash itself (restore, delete forever, empty).
import { api, apiPath, confirmDialog, el, shortcuts, toast, typingIn } from "./app.js";
import { openCompare } from "./compare.js";
import { actionUrl, linkActions, purge, restore, trash, trashFailed, upscale, why } from "./image-actions.js";
import { openImage, setup as setupLightbox, shownImage, step, trashFromLightbox } from "./lightbox.js";

const grid = document.getElementById("gallery");
const trashGrid = document.getElementById("trash");
const list = grid ?? trashGrid;
const views = new Map(); // image id -> ImageView from the API (filled lazily)
const styleNames = JSON.parse(document.getElementById("style-names")?.textContent || "{}");
const styleName = (slug) => styleNames[slug] ?? slug;
const plural = (n, one, many) => (n === 1 ? one : `${n} ${many}`);

// --- tiles: each keeps its image's shape ------------------------------------------------------------------
// A row's tiles grow in proportion to their aspect ratios, so every row is one height and no image is cropped
// (app.css: .gallery > .tile). The ratio is set here: the pages' CSP allows no inline style attributes.
function shape(tile) {
  const w = Number(tile.dataset.w) || 1;
  const h = Number(tile.dataset.h) || 1;
  tile.style.setProperty("--ar", String(Math.min(4, Math.max(0.25, w / h))));
}
document.querySelectorAll(".tile[data-w]").forEach(shape);

const tileTemplate = document.getElementById("tile-template");
function tileFor(view) {
  const node = tileTemplate.content.firstElementChild.cloneNode(true);
  const t = view.urls.thumbnails;
  Object.assign(node.dataset, { id: view.id, w: view.width, h: view.height });
  const link = node.querySelector("a");
  link.href = view.urls.file;
  link.dataset.id = view.id;
  const img = node.querySelector("img");
  Object.assign(img, { src: t["300"], srcset: `${t["150"]} 150w, ${t["300"]} 300w, ${t["800"]} 800w`,
    alt: view.prompt.slice(0, 160), width: view.width, height: view.height });
  node.querySelector(".tile-prompt").textContent = view.prompt;
  const style = node.querySelector(".tile-style");
  if (view.style) style.textContent = styleName(view.style); else style.remove();
  node.querySelector(".select").setAttribute("aria-label", "Select: " + view.prompt.slice(0, 80));
  setStar(node.querySelector(".tile-star"), view.starred);
  shape(node);
  return node;
}

// --- the Trash's tiles ---------------------------------------------------------------------------------------
const DAY = 86_400_000;
function trashWhen(view, now = Date.now()) {
  const ago = Math.max(0, Math.floor((now - Date.parse(view.trashed_at)) / DAY));
  const deleted = ago === 0 ? "deleted today" : ago === 1 ? "deleted yesterday" : `deleted ${ago} days ago`;
  if (!view.purge_at) return deleted.charAt(0).toUpperCase() + deleted.slice(1);
  const left = Math.max(0, Math.ceil((Date.parse(view.purge_at) - now) / DAY));
  const purged = left === 0 ? "purged today" : left === 1 ? "purged tomorrow" : `purged in ${left} days`;
  return `${deleted.charAt(0).toUpperCase() + deleted.slice(1)} · ${purged}`;
}
function trashTileFor(view) {
  const node = document.getElementById("trash-template").content.firstElementChild.cloneNode(true);
  Object.assign(node.dataset, { id: view.id, w: view.width, h: view.height });
  const t = view.urls.thumbnails;
  Object.assign(node.querySelector("img"), { src: t["300"], srcset: `${t["150"]} 150w, ${t["300"]} 300w, ${t["800"]} 800w`,
    alt: view.prompt.slice(0, 160), width: view.width, height: view.height });
  node.querySelector(".trash-prompt").textContent = view.prompt;
  node.querySelector(".trash-when").textContent = view.trashed_at ? trashWhen(view) : "";
  node.querySelector(".select").setAttribute("aria-label", "Select: " + view.prompt.slice(0, 80));
  for (const b of node.querySelectorAll("[data-trash]")) {
    b.setAttribute("aria-label", `${b.textContent}: ${view.prompt.slice(0, 60)}`);
  }
  shape(node);
  return node;
}

// --- infinite scroll --------------------------------------------------------------------------------------------
let loadMore = async () => {};
if (list) {
  const sentinel = document.getElementById("sentinel");
  const end = document.getElementById("gallery-end");
  let loading = false;
  let first = Boolean(trashGrid); // the Trash's first page is fetched here, not rendered by the server
  loadMore = async () => {
    const cursor = list.dataset.cursor;
    if ((!cursor && !first) || loading) return;
    loading = true;
    const skeletons = Array.from({ length: first ? 4 : 6 }, () => list.appendChild(el("div", { class: "tile skeleton", "aria-hidden": "true" })));
    try {
      const query = new URLSearchParams(list.dataset.query);
      if (cursor) query.set("cursor", cursor);
      query.set("limit", "48");
      const page = await api("images?" + query);
      for (const view of page.items) { views.set(view.id, view); list.append(trashGrid ? trashTileFor(view) : tileFor(view)); }
      list.dataset.cursor = page.next_cursor ?? "";
      first = false;
      if (!page.next_cursor) { end.textContent = list.querySelector(".tile:not(.skeleton)") ? "That is everything." : ""; observer.disconnect(); }
    } catch (error) {
      end.textContent = trashGrid && error.status === 0 ? "The Trash cannot be shown offline." : error.message;
    } finally {
      skeletons.forEach((s) => s.remove());
      list.removeAttribute("aria-busy");
      loading = false;
      if (trashGrid) trashChanged();
    }
  };
  const observer = new IntersectionObserver((entries) => { if (entries.some((e) => e.isIntersecting)) loadMore(); },
    { rootMargin: "800px" });
  observer.observe(sentinel);
  document.getElementById("more-link")?.addEventListener("click", (e) => { e.preventDefault(); loadMore(); });
}

for (const select of document.querySelectorAll("#filters select, #filters input[type=checkbox]")) {
  select.addEventListener("change", () => select.form.requestSubmit());
}

// The tiles (or parts of them) showing image ``id``; the id is escaped, never spliced into the selector.
const tilesOf = (id, inner = "") => document.querySelectorAll(`.tile[data-id="${CSS.escape(String(id))}"]${inner}`);
const allTiles = () => [...list?.querySelectorAll(".tile:not(.skeleton)") ?? []];

// --- stars ------------------------------------------------------------------------------------------------------
function setStar(button, on) {
  button.setAttribute("aria-pressed", String(on));
  if (button.classList.contains("tile-star")) button.textContent = on ? "★" : "☆";
  else button.textContent = on ? "Starred" : "Star";
}
async function star(id, on) {
  const view = await api(apiPath`images/${id}`, { method: "PATCH", body: { starred: on } });
  views.set(id, view);
  tilesOf(id, " .tile-star").forEach((b) => setStar(b, on));
  return view;
}
async function toggleStar(id) {
  const on = tilesOf(id, " .tile-star")[0]?.getAttribute("aria-pressed") !== "true";
  try {
    await star(id, views.get(id)?.starred !== undefined ? !views.get(id).starred : on);
    toast(views.get(id).starred ? "Starred." : "Unstarred.", { timeout: 2500 });
  } catch (error) { toast(`Could not star the image: ${why(error)}.`, { kind: "error" }); }
}

// --- selection (shift selects a range) and bulk actions ------------------------------------------------------------
const bulkbar = document.getElementById("bulkbar");
const selected = () => [...document.querySelectorAll(".tile .select:checked")].map((c) => c.closest(".tile").dataset.id);
let anchor = null; // the tile last selected or unselected without shift: one end of a shift range
function updateBulk() {
  const ids = selected();
  document.querySelectorAll(".tile").forEach((t) => t.classList.toggle("selected", Boolean(t.querySelector(".select")?.checked)));
  document.body.classList.toggle("selecting", ids.length > 0);
  if (!bulkbar) return;
  bulkbar.hidden = ids.length === 0;
  document.getElementById("bulk-count").textContent = `${ids.length} selected`;
  const compare = document.getElementById("bulk-compare");
  if (compare) compare.hidden = ids.length !== 2;
}
function selectRange(tile, on = true) {
  const tilesNow = allTiles();
  const from = tilesNow.indexOf(anchor?.isConnected ? anchor : tile);
  const to = tilesNow.indexOf(tile);
  const [lo, hi] = from < to ? [from, to] : [to, from];
  for (const t of tilesNow.slice(lo, hi + 1)) t.querySelector(".select").checked = on;
  updateBulk();
}
const setAll = (on) => { allTiles().forEach((t) => { t.querySelector(".select").checked = on; }); updateBulk(); };
document.getElementById("bulk-clear")?.addEventListener("click", () => setAll(false));
document.getElementById("bulk-all")?.addEventListener("click", () => setAll(true));
document.getElementById("bulk-compare")?.addEventListener("click", () => {
  const [a, b] = selected().map((id) => tilesOf(id)[0]);
  const side = (tile, n) => ({
    src: views.get(tile.dataset.id)?.urls.thumbnails["1920"] ?? tile.querySelector("a.open").href,
    alt: tile.querySelector("img").alt, label: `${n}: ${tile.querySelector("img").alt.slice(0, 60)}`,
    width: Number(tile.dataset.w), height: Number(tile.dataset.h),
  });
  openCompare(side(a, "Left"), side(b, "Right"));
});
document.querySelectorAll("[data-bulk]").forEach((button) => button.addEventListener("click", async () => {
  const ids = selected();
  const action = button.dataset.bulk;
  if (!ids.length) return;
  if (action === "delete") { trashIds(ids); return; }
  if (action === "restore") { restoreFromTrash(ids); return; }
  if (action === "purge") { purgeForever(ids); return; }
  try {
    const res = await api("images/bulk", { method: "POST", body: { image_ids: ids, action } });
    for (const id of res.done) tilesOf(id, " .tile-star").forEach((b) => setStar(b, action === "star"));
    toast(`${plural(res.done.length, "1 image", "images")} ${action === "star" ? "starred" : "unstarred"}.`);
  } catch (error) { toast(error.message, { kind: "error" }); }
}));
document.getElementById("bulk-collection")?.addEventListener("change", async (event) => {
  const select = event.target;
  const cid = select.value;
  if (!cid) return;
  const ids = selected();
  try {
    const c = await api(apiPath`collections/${cid}/images`, { method: "POST", body: { image_ids: ids } });
    toast(`Added ${ids.length} to “${c.name}”.`);
  } catch (error) { toast(error.message, { kind: "error" }); }
  select.value = "";
});

// --- trash, with undo -----------------------------------------------------------------------------------------------
// The tiles go at once and the DELETE is sent at once (keepalive: leaving the page does not cancel it); Undo
// restores from the Trash. When the request fails, the tiles come back where they were and the toast says why.
function takeOut(ids) {
  const removed = [];
  for (const id of ids) {
    for (const tile of tilesOf(id)) {
      removed.push({ tile, parent: tile.parentNode, next: tile.nextSibling });
      tile.querySelector(".select").checked = false;
      tile.remove();
    }
  }
  updateBulk();
  return removed;
}
function putBack(removed) {
  for (const r of [...removed].reverse()) {
    r.parent.insertBefore(r.tile, r.next && r.next.parentNode === r.parent ? r.next : null);
  }
  updateBulk();
}
let lastTrashed = null; // {ids, removed}: what Ctrl+Z brings back

export async function trashIds(ids) {
  const focusNext = document.activeElement?.closest?.(".tile") && ids.includes(document.activeElement.closest(".tile").dataset.id);
  const after = focusNext ? neighbour(tilesOf(ids.at(-1))[0]) : null;
  const removed = takeOut(ids);
  after?.querySelector("a.open")?.focus();
  // Undoable at once: Ctrl+Z pressed while the request is still on its way waits for it, then restores
  // (tests/e2e/test_web_gallery.py presses it as soon as the server has the image in the Trash).
  const entry = { ids, removed, pending: trash(ids), undone: false };
  lastTrashed = entry;
  let done;
  try { done = await entry.pending; } catch (error) {
    if (lastTrashed === entry) lastTrashed = null;
    putBack(removed);
    if (!entry.undone) trashFailed(ids, error);
    return;
  }
  const missing = ids.filter((id) => !done.includes(id));
  if (missing.length) putBack(removed.filter((r) => missing.includes(r.tile.dataset.id)));
  entry.ids = done;
  entry.removed = removed.filter((r) => done.includes(r.tile.dataset.id));
  if (entry.undone) return; // undoTrash, waiting on the same request, restores what it trashed
  if (!done.length) { if (lastTrashed === entry) lastTrashed = null; return; }
  entry.closeToast = toast(done.length === 1 ? "Image moved to the Trash." : `${done.length} images moved to the Trash.`, {
    timeout: 8000, action: { label: "Undo", run: () => undoTrash(entry) } });
}
async function undoTrash(entry) {
  if (entry.undone) return;
  entry.undone = true;
  if (lastTrashed === entry) lastTrashed = null;
  entry.closeToast?.(); // Ctrl+Z as well as the toast's button: the Undo offer is spent either way
  // trashIds' own wait on this request runs first: by now entry.ids are the images it did trash.
  try { await entry.pending; } catch { return; } // nothing was trashed; trashIds put the tiles back
  if (!entry.ids.length) return;
  try {
    await restore(entry.ids);
    putBack(entry.removed);
    toast("Restored.");
  } catch (error) {
    toast(`Could not restore: ${why(error)}. ${entry.ids.length === 1 ? "The image is" : "The images are"} still in the Trash.`,
      { kind: "error", timeout: 9000 });
  }
}
const neighbour = (tile) => {
  const tilesNow = allTiles();
  const at = tilesNow.indexOf(tile);
  return tilesNow[at + 1] ?? tilesNow[at - 1] ?? null;
};

// In the Trash: restore and delete forever (confirmed), one by one or selected, and "Empty trash".
function trashChanged({ refill = false } = {}) {
  const any = allTiles().length > 0;
  // Everything shown was restored or purged while older pages wait: fetch the next one.
  if (refill && !any && trashGrid.dataset.cursor) { loadMore(); return; }
  document.getElementById("trash-empty").hidden = any;
  document.getElementById("empty-trash").disabled = !any;
  if (!any) document.getElementById("gallery-end").textContent = "";
}
async function restoreFromTrash(ids) {
  const removed = takeOut(ids);
  try {
    const done = await restore(ids);
    putBack(removed.filter((r) => !done.includes(r.tile.dataset.id)));
    toast(done.length === 1 ? "Restored: the image is back in the gallery." : `Restored ${done.length} images to the gallery.`,
      { action: { label: "Gallery", run: () => location.assign("/gallery") } });
  } catch (error) {
    putBack(removed);
    toast(`Not restored: ${why(error)}.`, { kind: "error", timeout: 9000 });
  }
  trashChanged({ refill: true });
}
async function purgeForever(ids) {
  const what = ids.length === 1 ? "this image" : `these ${ids.length} images`;
  if (!(await confirmDialog(`Delete ${what} forever? The files are erased; this cannot be undone.`, { ok: "Delete forever" }))) return;
  const removed = takeOut(ids);
  try {
    const done = await purge(ids);
    putBack(removed.filter((r) => !done.includes(r.tile.dataset.id)));
    toast(done.length === 1 ? "Deleted forever." : `${done.length} images deleted forever.`);
  } catch (error) {
    putBack(removed);
    toast(`Not deleted: ${why(error)}.`, { kind: "error", timeout: 9000 });
  }
  trashChanged({ refill: true });
}
document.getElementById("empty-trash")?.addEventListener("click", async () => {
  if (!(await confirmDialog("Empty the Trash? Every image in it is erased for good; this cannot be undone.", { ok: "Empty trash" }))) return;
  try {
    const res = await api("images/trash/empty", { method: "POST" });
    allTiles().forEach((t) => t.remove());
    document.getElementById("trash").dataset.cursor = "";
    updateBulk();
    trashChanged();
    toast(res.purged === 1 ? "1 image deleted forever." : `${res.purged} images deleted forever.`);
  } catch (error) { toast(`The Trash was not emptied: ${why(error)}.`, { kind: "error", timeout: 9000 }); }
});

// --- the tile menu: one menu, moved into the tile whose "⋯" was pressed ---------------------------------------------
const menu = document.getElementById("tile-menu");
const items = () => [...menu.querySelectorAll("[role=menuitem]")];
function openMenu(button) {
  const tile = button.closest(".tile");
  closeMenu(false);
  linkActions(menu, tile.dataset.id);
  tile.append(menu);
  menu.hidden = false;
  tile.classList.add("menu-open");
  button.setAttribute("aria-expanded", "true");
  items()[0].focus();
}
function closeMenu(refocus = true) {
  if (!menu || menu.hidden) return;
  const tile = menu.closest(".tile");
  menu.hidden = true;
  tile?.classList.remove("menu-open");
  const button = tile?.querySelector(".tile-more");
  button?.setAttribute("aria-expanded", "false");
  if (refocus) button?.focus();
}
menu?.addEventListener("keydown", (e) => {
  const all = items();
  const at = all.indexOf(document.activeElement);
  const moves = { ArrowDown: at + 1, ArrowUp: at - 1, Home: 0, End: all.length - 1 };
  if (e.key in moves) { e.preventDefault(); all[(moves[e.key] + all.length) % all.length].focus(); }
  else if (e.key === "Escape") { e.preventDefault(); e.stopPropagation(); closeMenu(); }
  else if (e.key === "Tab") closeMenu(false);
});
menu?.addEventListener("focusout", (e) => { if (!menu.contains(e.relatedTarget)) closeMenu(false); });
menu?.addEventListener("click", (e) => {
  const item = e.target.closest("[data-action]");
  if (!item) return;
  const id = menu.closest(".tile").dataset.id;
  const action = item.dataset.action;
  if (action === "trash") { closeMenu(false); trashIds([id]); }
  else if (action.startsWith("upscale-")) { closeMenu(); upscale(id, Number(action.slice(8)), { open: openImage }); }
  // Links navigate by themselves.
});

// --- clicks: open, star, select (shift for a range), menu --------------------------------------------------------------
document.addEventListener("click", async (event) => {
  const tile = event.target.closest(".tile");
  if (!tile || tile.classList.contains("skeleton") || event.target.closest("#tile-menu")) return;
  if (event.shiftKey && !event.target.closest(".tile-star, .tile-more, [data-trash]")) {
    event.preventDefault();
    selectRange(tile, true);
    return;
  }
  if (event.target.closest(".tile-more")) { openMenu(event.target.closest(".tile-more")); return; }
  const open = event.target.closest("a.open");
  if (open && document.getElementById("lightbox")) { event.preventDefault(); openImage(open.dataset.id); return; }
  const starBtn = event.target.closest(".tile-star");
  if (starBtn) { toggleStar(tile.dataset.id); return; }
  const trashBtn = event.target.closest("[data-trash]");
  if (trashBtn) {
    if (trashBtn.dataset.trash === "restore") restoreFromTrash([tile.dataset.id]);
    else purgeForever([tile.dataset.id]);
    return;
  }
  if (event.target.closest(".tile-select")) anchor = tile;
});
document.addEventListener("change", (event) => { if (event.target.classList.contains("select")) updateBulk(); });
document.addEventListener("click", (event) => {
  if (menu && !menu.hidden && !menu.contains(event.target) && !event.target.closest(".tile-more")) closeMenu(false);
});

// --- drag a tile to the generator's drop zone (CONTRACTS.md "Drag") ---------------------------------------------------
document.addEventListener("dragstart", (event) => {
  const tile = event.target.closest?.("#gallery .tile");
  if (!tile) return;
  const file = new URL(tile.querySelector("a.open").getAttribute("href"), location.origin).href;
  event.dataTransfer.setData("text/uri-list", file);
  event.dataTransfer.setData("text/plain", file);
  event.dataTransfer.setData("application/x-studiolo-image", tile.dataset.id);
  event.dataTransfer.effectAllowed = "copyLink";
});

// --- keyboard -------------------------------------------------------------------------------------------------------
const SECTION = "Gallery and image viewer";
if (grid) {
  shortcuts.register(SECTION, "s", "Star or unstar the image");
  shortcuts.register(SECTION, "d or Delete", "Move the image to the Trash");
  shortcuts.register(SECTION, "Ctrl+Z", "Undo the last move to the Trash");
  shortcuts.register(SECTION, "r", "Use the image's settings in the generator (remix)");
  shortcuts.register(SECTION, "i", "Send the image to image-to-image");
  shortcuts.register(SECTION, "← or → or ↑ or ↓", "Move between images in the gallery");
  shortcuts.register(SECTION, "Enter", "Open the focused image");
  shortcuts.register(SECTION, "← or →", "Previous or next image in the viewer");
  shortcuts.register(SECTION, "Space", "Select or unselect the focused image");
  shortcuts.register(SECTION, "Shift+Space or Shift+click", "Select every image from the last one selected");
  shortcuts.register(SECTION, "Esc", "Close the viewer, or clear the selection");
}

/** The tile next to ``tile`` in the direction of an arrow key: the one before or after it, or in the row above or
 * below, the one whose middle is nearest (rows differ in how many tiles they hold). */
function tileTowards(tile, key) {
  const tilesNow = allTiles();
  const at = tilesNow.indexOf(tile);
  if (key === "ArrowLeft") return tilesNow[at - 1] ?? null;
  if (key === "ArrowRight") return tilesNow[at + 1] ?? null;
  const box = tile.getBoundingClientRect();
  const middle = box.left + box.width / 2;
  const down = key === "ArrowDown";
  const row = tilesNow.filter((t) => {
    const r = t.getBoundingClientRect();
    return down ? r.top >= box.bottom - 1 : r.bottom <= box.top + 1;
  });
  if (!row.length) return null;
  const edge = down ? Math.min(...row.map((t) => t.getBoundingClientRect().top))
    : Math.max(...row.map((t) => t.getBoundingClientRect().bottom));
  const near = row.filter((t) => Math.abs((down ? t.getBoundingClientRect().top : t.getBoundingClientRect().bottom) - edge) < 2);
  const distance = (t) => { const r = t.getBoundingClientRect(); return Math.abs(r.left + r.width / 2 - middle); };
  return near.reduce((best, t) => (distance(t) < distance(best) ? t : best));
}

/** The image a key press is about: the one in the open viewer, else the focused tile's. */
function imageForKeys(event) {
  const shown = shownImage();
  if (shown) return shown;
  if (document.querySelector("dialog[open]")) return null;
  return event.target.closest?.("#gallery .tile")?.dataset.id ?? null;
}

document.addEventListener("keydown", (event) => {
  if (!grid || typingIn(event.target) || event.altKey || event.defaultPrevented) return;
  const key = event.key;
  if ((event.ctrlKey || event.metaKey) && key.toLowerCase() === "z" && !event.shiftKey) {
    if (lastTrashed && !document.querySelector("dialog[open]")) { event.preventDefault(); undoTrash(lastTrashed); }
    return;
  }
  if (event.ctrlKey || event.metaKey) return;
  if (key === " " && event.target.matches?.("#gallery a.open")) {
    // Space on an image selects it (Shift+Space: the range from the last one selected), as in file managers.
    const tile = event.target.closest(".tile");
    event.preventDefault();
    if (event.shiftKey) selectRange(tile, true);
    else { const box = tile.querySelector(".select"); box.checked = !box.checked; updateBulk(); }
    anchor = tile;
    return;
  }
  if (key === "Escape" && !document.querySelector("dialog[open]") && selected().length) { setAll(false); return; }
  if (shownImage() && (key === "ArrowLeft" || key === "ArrowRight")) {
    if (event.target.closest?.("#lightbox")) { event.preventDefault(); step(key === "ArrowLeft" ? -1 : 1); }
    return;
  }
  if (key.startsWith("Arrow") && event.target.matches?.("#gallery a.open") && !event.shiftKey) {
    const next = tileTowards(event.target.closest(".tile"), key);
    if (next) { event.preventDefault(); next.querySelector("a.open").focus(); }
    return;
  }
  const id = imageForKeys(event);
  if (!id) return;
  const lower = key.toLowerCase();
  if (lower === "s") { event.preventDefault(); toggleStar(id).then(() => { if (shownImage() === id) openImage(id); }); }
  else if (lower === "d" || key === "Delete") {
    event.preventDefault();
    if (shownImage()) trashFromLightbox(); else trashIds([id]);
  } else if (lower === "r" || lower === "i") {
    event.preventDefault();
    location.assign(actionUrl(lower === "r" ? "remix" : "img2img", id));
  }
});

setupLightbox({ views, styleName, setStar, star, trashIds });
