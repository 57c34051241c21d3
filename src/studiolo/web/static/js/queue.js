// The queue view: every waiting and running job of the signed-in user, from any tab or device, with its place,
// progress, Cancel, Cancel all and Retry for the ones that failed. It polls GET /jobs every 2 seconds; tabs tell
// each other of their changes over a BroadcastChannel so they agree at once rather than at the next poll.
import { api, apiPath, toast } from "./app.js";
import { progressPercent, progressText, queuedText, quietGet } from "./gen-jobs.js";

const $ = (id) => document.getElementById(id);
const list = $("queue-list");
const failedList = $("failed-list");
const template = $("queue-item");
const channel = "BroadcastChannel" in window ? new BroadcastChannel("studiolo-jobs") : null;
const rows = new Map(); // job id -> row
const POLL_MS = 2000;
let timer = null;

function row(job) {
  let li = rows.get(job.id);
  if (!li) {
    li = template.content.firstElementChild.cloneNode(true);
    li.id = "queue-" + job.id;
    li.dataset.jobId = job.id;
    const link = li.querySelector(".queue-prompt");
    link.href = "/generate#job-" + encodeURIComponent(job.id);
    link.textContent = job.params?.prompt ?? "Generation";
    link.title = job.params?.prompt ?? "";
    li.querySelector(".queue-cancel").addEventListener("click", (e) => control(e.currentTarget, apiPath`jobs/${job.id}/cancel`));
    li.querySelector(".queue-retry").addEventListener("click", (e) => control(e.currentTarget, apiPath`jobs/${job.id}/retry`));
    rows.set(job.id, li);
  }
  const images = job.params?.n ?? 1;
  const status = li.querySelector(".queue-status");
  status.textContent = job.status;
  status.className = "badge queue-status badge-" + job.status;
  li.dataset.status = job.status;
  const pct = job.status === "running" ? progressPercent({ images, ...job.progress }) : 0;
  const bar = li.querySelector(".progress");
  bar.firstElementChild.style.width = pct + "%";
  bar.setAttribute("aria-valuenow", String(pct));
  bar.hidden = job.status !== "running";
  const text = job.status === "queued" ? queuedText(job.queue_position, job.queue_position_capped)
    : job.status === "running" ? progressText({ images, ...job.progress }) || "Starting…"
    : job.error?.message ?? "Failed";
  const what = [images === 1 ? "1 image" : `${images} images`, job.model, job.kind !== "txt2img" ? job.kind : null].filter(Boolean);
  li.querySelector(".queue-text").textContent = `${text} · ${what.join(" · ")}`;
  bar.setAttribute("aria-valuetext", text);
  li.querySelector(".queue-place").textContent = job.status === "queued" && job.queue_position ? `#${job.queue_position}`
    : job.status === "running" ? "▶" : "!";
  li.querySelector(".queue-cancel").hidden = job.status === "failed";
  li.querySelector(".queue-retry").hidden = job.status !== "failed";
  return li;
}

/** Put ``items`` into ``box`` in order, moving existing rows (focus stays where it was). */
function place(box, items) {
  const wanted = items.map(row);
  wanted.forEach((li, i) => { if (box.children[i] !== li) box.insertBefore(li, box.children[i] ?? null); });
  for (const li of [...box.children]) if (!wanted.includes(li)) li.remove();
}

async function refresh() {
  clearTimeout(timer);
  try {
    const [running, queued, failed] = await Promise.all([
      quietGet("jobs?status=running&limit=100"), quietGet("jobs?status=queued&limit=100"), quietGet("jobs?status=failed&limit=10"),
    ]);
    const waiting = [...running.items, ...queued.items.sort((a, b) => (a.queue_position ?? 1e9) - (b.queue_position ?? 1e9))];
    place(list, waiting);
    place(failedList, failed.items);
    for (const [id, li] of rows) if (!li.isConnected) rows.delete(id);
    $("queue-empty").hidden = waiting.length > 0;
    $("failed-section").hidden = failed.items.length === 0;
    $("cancel-all").hidden = waiting.length === 0;
    $("cancel-all").disabled = false;
    const more = running.next_cursor || queued.next_cursor ? "+" : "";
    $("queue-summary").textContent = waiting.length
      ? `${[running.items.length && `${running.items.length} running`, queued.items.length && `${queued.items.length}${more} waiting`].filter(Boolean).join(", ")}. Updates as they change, from every tab.`
      : ""; // the empty box below says it
    document.title = waiting.length ? `Queue (${waiting.length}) · Studiolo` : "Queue · Studiolo";
  } catch (error) {
    $("queue-summary").textContent = error.status === 0 ? "Offline: the queue will update when the connection is back." : error.message;
  }
  timer = setTimeout(refresh, POLL_MS);
}

async function control(button, path) {
  button.disabled = true;
  try {
    await api(path, { method: "POST" });
    channel?.postMessage({ type: "changed" });
    await refresh();
  } catch (error) {
    toast(error.message, { kind: "error" });
  } finally {
    button.disabled = false;
  }
}

$("cancel-all").addEventListener("click", async (e) => {
  // No "are you sure": canceled jobs can be queued again, and the toast's Undo does that.
  const button = e.currentTarget;
  button.disabled = true;
  try {
    const { canceled } = await api("jobs/cancel-all", { method: "POST" });
    channel?.postMessage({ type: "changed" });
    toast(canceled.length === 1 ? "1 job canceled." : `${canceled.length} jobs canceled.`, {
      timeout: 8000,
      action: { label: "Undo", run: () => undoCancel(canceled) },
    });
  } catch (error) {
    toast(error.message, { kind: "error" });
  }
  await refresh();
});

async function undoCancel(ids) {
  // A job that was running stops at its next step: until then it cannot be queued again (409), so it is skipped.
  const results = await Promise.allSettled(ids.map((id) => api(apiPath`jobs/${id}/retry`, { method: "POST" })));
  const back = results.filter((r) => r.status === "fulfilled").length;
  if (back < ids.length) toast(`${back} of ${ids.length} jobs queued again; the others were still stopping.`);
  channel?.postMessage({ type: "changed" });
  await refresh();
}

channel?.addEventListener("message", () => refresh());
document.addEventListener("visibilitychange", () => { if (!document.hidden) refresh(); });
refresh();
