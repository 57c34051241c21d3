// Two images one over the other with a divider: the left part shows the first, the right part the second. The
// divider follows a range input (arrow keys, Home/End, PageUp/PageDown come with it) and a pointer dragged on
// the images; both stay in step.
const $ = (id) => document.getElementById(id);

function place(percent) {
  const value = Math.min(100, Math.max(0, Math.round(percent)));
  // The second image covers the first from the divider to the right edge.
  $("compare-top").style.clipPath = `inset(0 0 0 ${value}%)`;
  $("compare-line").style.left = `${value}%`;
  const slider = $("compare-slider");
  slider.value = String(value);
  slider.setAttribute("aria-valuetext", `${value}% first image, ${100 - value}% second image`);
}

/** Show ``a`` and ``b`` ({src, alt, label, width, height}) side by side in the compare dialog. */
export function openCompare(a, b) {
  const dialog = $("compare");
  $("compare-a").src = a.src;
  $("compare-a").alt = "First: " + a.alt;
  $("compare-b").src = b.src;
  $("compare-b").alt = "Second: " + b.alt;
  $("compare-label-a").textContent = a.label;
  $("compare-label-b").textContent = b.label;
  // Both images fill the same box, shaped like the first (the second is letterboxed when its shape differs).
  $("compare-stage").style.setProperty("--ar", String((a.width || 1) / (a.height || 1)));
  place(50);
  dialog.showModal();
  $("compare-slider").focus();
}

const dialog = $("compare");
if (dialog) {
  $("compare-slider").addEventListener("input", (e) => place(Number(e.target.value)));
  $("compare-close").addEventListener("click", () => dialog.close());
  dialog.addEventListener("click", (e) => { if (e.target === dialog) dialog.close(); });
  const stage = $("compare-stage");
  let dragging = false;
  const follow = (e) => {
    const box = stage.getBoundingClientRect();
    place(((e.clientX - box.left) / box.width) * 100);
  };
  stage.addEventListener("pointerdown", (e) => { dragging = true; stage.setPointerCapture(e.pointerId); follow(e); });
  stage.addEventListener("pointermove", (e) => { if (dragging) follow(e); });
  stage.addEventListener("pointerup", () => { dragging = false; });
  stage.addEventListener("pointercancel", () => { dragging = false; });
}
