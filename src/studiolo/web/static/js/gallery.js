// The gallery: infinite scroll over keyset pages, a lightbox with metadata and actions, stars, tags,
// collections, multi-select bulk actions, and delete with an undo window.
import { api, ApiError, apiPath, copyText, el, isId, showFieldErrors, toast } from "./app.js";

const grid = document.getElementById("gallery");
const lightbox = document.getElementById("lightbox");
const views = new Map(); // image id -> ImageView from the API (filled lazily)

// --- infinite scroll -----------------------------------------------------------------------------------
const tileTemplate = document.getElementById("tile-template");
function tileFor(view) {
  const node = tileTemplate.content.firstElementChild.cloneNode(true);
  const t = view.urls.thumbnails;
  node.dataset.id = view.id;
  const link = node.querySelector("a");
  link.href = view.urls.file;
  link.dataset.id = view.id;
  const img = node.querySelector("img");
  img.src = t["300"];
  img.srcset = `${t["150"]} 150w, ${t["300"]} 300w, ${t["800"]} 800w`;
  img.alt = view.prompt.slice(0, 160);
  node.querySelector(".select").setAttribute("aria-label", "Select: " + view.prompt.slice(0, 80));
  setStar(node.querySelector(".tile-star"), view.starred);
  return node;
}

if (grid) {
  const sentinel = document.getElementById("sentinel");
  const end = document.getElementById("gallery-end");
  let loading = false;
  const loadMore = async () => {
    const cursor = grid.dataset.cursor;
    if (!cursor || loading) return;
    loading = true;
    const skeletons = Array.from({ length: 6 }, () => grid.appendChild(el("div", { class: "tile skeleton", "aria-hidden": "true" })));
    try {
      const query = new URLSearchParams(grid.dataset.query);
      query.set("cursor", cursor);
      query.set("limit", "48");
      const page = await api("images?" + query);
      for (const view of page.items) { views.set(view.id, view); grid.append(tileFor(view)); }
      grid.dataset.cursor = page.next_cursor ?? "";
      if (!page.next_cursor) { end.textContent = "That is everything."; observer.disconnect(); }
    } catch (error) {
      end.textContent = error.message;
    } finally {
      skeletons.forEach((s) => s.remove());
      loading = false;
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

// --- stars ---------------------------------------------------------------------------------------------
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

// --- selection + bulk actions ---------------------------------------------------------------------------
const bulkbar = document.getElementById("bulkbar");
const selected = () => [...document.querySelectorAll(".tile .select:checked")].map((c) => c.closest(".tile").dataset.id);
function updateBulk() {
  const ids = selected();
  document.querySelectorAll(".tile").forEach((t) => t.classList.toggle("selected", t.querySelector(".select")?.checked));
  if (!bulkbar) return;
  bulkbar.hidden = ids.length === 0;
  document.getElementById("bulk-count").textContent = `${ids.length} selected`;
}
document.getElementById("bulk-clear")?.addEventListener("click", () => {
  document.querySelectorAll(".tile .select").forEach((c) => { c.checked = false; });
  updateBulk();
});
document.getElementById("bulk-all")?.addEventListener("click", () => {
  document.querySelectorAll(".tile .select").forEach((c) => { c.checked = true; });
  updateBulk();
});
document.querySelectorAll("[data-bulk]").forEach((button) => button.addEventListener("click", async () => {
  const ids = selected();
  const action = button.dataset.bulk;
  if (!ids.length) return;
  if (action === "delete") { deleteWithUndo(ids); return; }
  try {
    const res = await api("images/bulk", { method: "POST", body: { image_ids: ids, action } });
    for (const id of res.done) tilesOf(id, " .tile-star").forEach((b) => setStar(b, action === "star"));
    toast(`${res.done.length} image${res.done.length === 1 ? "" : "s"} ${action === "star" ? "starred" : "unstarred"}.`);
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

// --- delete with undo ------------------------------------------------------------------------------------
// The tiles disappear at once; the request is only sent when the undo window closes (or the page is left),
// so Undo needs no server-side trash.
const pending = new Map(); // id -> {tile, parent, next}
function flushDeletes(keepalive = false) {
  const ids = [...pending.keys()];
  if (!ids.length) return;
  pending.clear();
  const request = ids.length === 1
    ? api(apiPath`images/${ids[0]}`, { method: "DELETE", keepalive })
    : api("images/bulk", { method: "POST", body: { image_ids: ids, action: "delete" }, keepalive });
  request.catch((error) => toast(`Delete failed: ${error.message}`, { kind: "error" }));
}
addEventListener("pagehide", () => flushDeletes(true));

function deleteWithUndo(ids) {
  const removed = [];
  for (const id of ids) {
    for (const tile of tilesOf(id)) {
      removed.push({ tile, parent: tile.parentNode, next: tile.nextSibling });
      tile.querySelector(".select").checked = false;
      tile.remove();
    }
    pending.set(id, true);
  }
  updateBulk();
  const label = ids.length === 1 ? "Image deleted." : `${ids.length} images deleted.`;
  toast(label, {
    timeout: 6000,
    action: {
      label: "Undo",
      run: () => {
        for (const id of ids) pending.delete(id);
        for (const r of removed.reverse()) r.parent.insertBefore(r.tile, r.next && r.next.parentNode === r.parent ? r.next : null);
        toast("Restored.");
      },
      expire: () => flushDeletes(),
    },
  });
}

// --- lightbox --------------------------------------------------------------------------------------------
let current = null;
const $ = (id) => document.getElementById(id);
const tiles = () => [...document.querySelectorAll("#gallery .tile")];

async function openImage(id) {
  // The id may come from the address bar (/gallery?image=…): only an id of the server's shape is ever used.
  if (!isId(id)) { toast("There is no such image.", { kind: "error" }); return; }
  current = id;
  $("lb-error").textContent = "";
  const tileImg = tilesOf(id, " img")[0];
  $("lb-img").src = tileImg?.currentSrc || apiPath`/api/v1/images/${id}/file` + "?size=800";
  if (!lightbox.open) lightbox.showModal();
  let view = views.get(id);
  if (!view) {
    // Skeletons while the details load (the thumbnail already shows).
    $("lb-prompt").textContent = "";
    $("lb-prompt").classList.add("skeleton");
    $("lb-meta").replaceChildren(...Array.from({ length: 6 }, () => [el("dt", { text: "…" }), el("dd", { class: "skeleton", text: "\u00a0" })]).flat());
  }
  try {
    if (!view) { view = await api(apiPath`images/${id}`); views.set(id, view); }
  } catch (error) {
    $("lb-error").textContent = error.status === 0 ? "Offline: the details of this image are not saved on this device." : error.message;
    return;
  }
  if (current !== id) return;
  $("lb-prompt").classList.remove("skeleton");
  const big = view.urls.thumbnails["1920"] ?? view.urls.file;
  $("lb-img").src = big;
  $("lb-img").alt = view.prompt;
  $("lb-title").textContent = `${view.width}×${view.height} · seed ${view.seed}`;
  $("lb-prompt").textContent = view.prompt;
  const meta = $("lb-meta");
  meta.replaceChildren();
  const rows = [["Negative", view.negative_prompt || "—"], ["Style", view.style ?? "none"], ["Model", view.model],
    ["Seed", String(view.seed)], ["Steps", String(view.steps)], ["Guidance", String(view.guidance)],
    ["Sampler", view.sampler ?? "default"], ["Size", `${view.width}×${view.height}`], ["Kind", view.kind],
    ["Created", new Date(view.created_at).toLocaleString()], ["Tags", view.tags.join(", ") || "—"]];
  for (const [k, v] of rows) meta.append(el("dt", { text: k }), el("dd", { text: v }));
  setStar($("lb-star"), view.starred);
  $("lb-download").href = view.urls.file + "?download=true";
  $("lb-tags").value = view.tags.join(", ");
  const list = tiles();
  const at = list.findIndex((t) => t.dataset.id === id);
  $("lb-prev").disabled = at <= 0;
  $("lb-next").disabled = at < 0 || at >= list.length - 1;
}

function step(delta) {
  const list = tiles();
  const at = list.findIndex((t) => t.dataset.id === current);
  const next = list[at + delta];
  if (next) openImage(next.dataset.id);
}

document.addEventListener("click", async (event) => {
  const open = event.target.closest("a.open");
  if (open && lightbox) { event.preventDefault(); openImage(open.dataset.id); return; }
  const starBtn = event.target.closest(".tile-star");
  if (starBtn) {
    const id = starBtn.closest(".tile").dataset.id;
    try { await star(id, starBtn.getAttribute("aria-pressed") !== "true"); } catch (error) { toast(error.message, { kind: "error" }); }
  }
});
document.addEventListener("change", (event) => { if (event.target.classList.contains("select")) updateBulk(); });

if (lightbox) {
  $("lb-close").addEventListener("click", () => lightbox.close());
  lightbox.addEventListener("click", (e) => { if (e.target === lightbox) lightbox.close(); });
  lightbox.addEventListener("keydown", (e) => {
    if (e.target.matches("input, textarea, select")) return;
    if (e.key === "ArrowLeft") step(-1);
    if (e.key === "ArrowRight") step(1);
  });
  $("lb-prev").addEventListener("click", () => step(-1));
  $("lb-next").addEventListener("click", () => step(1));
  $("lb-copy-prompt").addEventListener("click", () => copyText(views.get(current)?.prompt ?? "", "Prompt copied"));
  $("lb-copy-seed").addEventListener("click", () => copyText(String(views.get(current)?.seed ?? ""), "Seed copied"));
  $("lb-star").addEventListener("click", async () => {
    try { const v = await star(current, !views.get(current)?.starred); setStar($("lb-star"), v.starred); }
    catch (error) { $("lb-error").textContent = error.message; }
  });
  for (const [button, seed] of [["lb-regen-same", "same"], ["lb-regen-new", "new"]]) {
    $(button).addEventListener("click", async () => {
      try {
        const job = await api(apiPath`images/${current}/regenerate`, { method: "POST", body: { seed } });
        toast("Queued: it will appear in the gallery when done.", {
          action: { label: "Watch", run: () => location.assign("/generate#job-" + encodeURIComponent(job.id)) } });
      } catch (error) { $("lb-error").textContent = error.message; }
    });
  }
  $("lb-tags-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const tags = $("lb-tags").value.split(",").map((t) => t.trim()).filter(Boolean);
    try {
      const v = await api(apiPath`images/${current}`, { method: "PATCH", body: { tags } });
      views.set(current, v);
      toast("Tags saved.");
      openImage(current);
    } catch (error) {
      if (error instanceof ApiError) showFieldErrors(event.target, error); else throw error;
    }
  });
  $("lb-collection").addEventListener("change", () => { $("lb-new-collection").hidden = $("lb-collection").value !== "__new"; });
  $("lb-collection-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      let cid = $("lb-collection").value;
      if (cid === "__new") {
        const name = $("lb-new-name").value.trim();
        if (!name) { $("lb-new-name").focus(); return; }
        const created = await api("collections", { method: "POST", body: { name } });
        cid = created.id;
        const option = el("option", { value: cid, text: created.name });
        $("lb-collection").insertBefore(option, $("lb-collection").lastElementChild);
        $("lb-collection").value = cid;
        $("lb-new-collection").hidden = true;
        document.getElementById("bulk-collection")?.append(option.cloneNode(true));
      }
      const c = await api(apiPath`collections/${cid}/images`, { method: "POST", body: { image_ids: [current] } });
      toast(`Added to “${c.name}”.`);
    } catch (error) {
      if (error instanceof ApiError) showFieldErrors(event.target, error); else throw error;
    }
  });
  $("lb-uncollect")?.addEventListener("click", async () => {
    const cid = $("lb-uncollect").dataset.collection;
    try {
      await api(apiPath`collections/${cid}/images/${current}`, { method: "DELETE" });
      tilesOf(current).forEach((t) => t.remove());
      lightbox.close();
      toast("Removed from the collection.");
    } catch (error) { $("lb-error").textContent = error.message; }
  });
  $("lb-delete").addEventListener("click", () => {
    const id = current;
    lightbox.close();
    deleteWithUndo([id]);
  });
  const wanted = new URLSearchParams(location.search).get("image");
  if (wanted) openImage(wanted);
}
