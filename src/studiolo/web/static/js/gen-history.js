// Prompt history: ↑ / ↓ in an empty (or just recalled) prompt box step through earlier prompts, and the
// "History" list picks one. Earlier prompts come from the user's jobs (deduplicated) and from what this browser
// sent (localStorage, per user, so a prompt shows at once even before its job is listed).
const STORE = "studiolo-generator-history";
const KEEP = 50;

export function createHistory({ prompt, toggle, panel, user, onPick }) {
  const list = panel.querySelector("ul");
  const read = () => { try { return JSON.parse(localStorage.getItem(STORE) || "{}"); } catch { return {}; } };
  let local = read()[user] ?? [];
  let fromJobs = [];
  let index = -1; // -1: the box holds the user's own text, not a recalled prompt
  let recalled = null;

  const entries = () => {
    const seen = new Set();
    const out = [];
    for (const p of [...local, ...fromJobs]) {
      const key = p.trim();
      if (key && !seen.has(key)) { seen.add(key); out.push(key); }
    }
    return out.slice(0, KEEP);
  };

  function add(text) {
    const t = text.trim();
    if (!t) return;
    local = [t, ...local.filter((p) => p !== t)].slice(0, KEEP);
    const all = read();
    all[user] = local;
    try { localStorage.setItem(STORE, JSON.stringify(all)); } catch { /* storage full or blocked */ }
    index = -1;
    recalled = null;
  }
  const setJobs = (prompts) => { fromJobs = prompts; };

  function put(text) {
    prompt.value = text;
    recalled = text;
    prompt.dispatchEvent(new Event("input", { bubbles: true }));
    prompt.setSelectionRange(text.length, text.length);
  }

  prompt.addEventListener("input", () => { if (prompt.value !== recalled) { index = -1; recalled = null; } });
  prompt.addEventListener("keydown", (e) => {
    if ((e.key !== "ArrowUp" && e.key !== "ArrowDown") || e.altKey || e.ctrlKey || e.metaKey || e.shiftKey) return;
    // Only in an empty box or one showing a recalled prompt: otherwise the arrows move the caret as usual.
    if (prompt.value !== "" && prompt.value !== recalled) return;
    const all = entries();
    if (!all.length) return;
    e.preventDefault();
    if (e.key === "ArrowUp") index = Math.min(index + 1, all.length - 1);
    else index -= 1;
    if (index < 0) { index = -1; put(""); recalled = null; return; }
    put(all[index]);
  });

  // --- the list ---
  const close = ({ focus = true } = {}) => {
    panel.hidden = true;
    toggle.setAttribute("aria-expanded", "false");
    if (focus) toggle.focus();
  };
  function open() {
    list.replaceChildren();
    const all = entries();
    if (!all.length) {
      const li = document.createElement("li");
      li.className = "muted small";
      li.textContent = "No prompts yet: the ones you generate with appear here.";
      list.append(li);
    }
    for (const text of all) {
      const li = document.createElement("li");
      const b = document.createElement("button");
      b.type = "button";
      b.className = "history-item";
      b.textContent = text;
      b.title = text;
      b.addEventListener("click", () => { put(text); close({ focus: false }); prompt.focus(); onPick?.(text); });
      li.append(b);
      list.append(li);
    }
    panel.hidden = false;
    toggle.setAttribute("aria-expanded", "true");
    (list.querySelector("button") ?? toggle).focus();
  }
  toggle.addEventListener("click", () => (panel.hidden ? open() : close()));
  panel.addEventListener("keydown", (e) => {
    const items = [...list.querySelectorAll("button")];
    const at = items.indexOf(document.activeElement);
    if (e.key === "Escape") { e.preventDefault(); close(); }
    else if (e.key === "ArrowDown" && at >= 0) { e.preventDefault(); items[Math.min(at + 1, items.length - 1)].focus(); }
    else if (e.key === "ArrowUp" && at >= 0) { e.preventDefault(); items[Math.max(at - 1, 0)].focus(); }
  });
  document.addEventListener("click", (e) => {
    if (!panel.hidden && !panel.contains(e.target) && e.target !== toggle) close({ focus: false });
  });

  return { add, setJobs };
}
