// The start image and its inpainting mask: brush and eraser with a preview circle, undo/redo, invert, feather,
// zoom, and a brush size that [ and ] change. The mask is painted white on a transparent canvas over the image
// and sent white-on-black (white = repaint), feathered by blurring its edge.
import { toast } from "./app.js";

const TYPES = ["image/png", "image/jpeg", "image/webp"];
const HISTORY = 30; // undo steps kept (each a full-size copy of the mask)

export function createMaskEditor() {
  const $ = (id) => document.getElementById(id);
  const editor = $("init-editor");
  const frame = $("mask-editor");
  const preview = $("init-preview");
  const canvas = $("mask-canvas");
  const cursor = $("brush-cursor");
  const maskOn = $("mask-on");
  const brush = $("brush");
  const zoom = $("zoom");
  const feather = $("feather");
  const strength = $("strength");
  const undoButton = $("mask-undo");
  const redoButton = $("mask-redo");
  const brushButton = $("mask-brush");
  const eraserButton = $("mask-eraser");
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  let file = null;
  let painted = false;
  let erasing = false;
  let undo = [];
  let redo = [];

  const bindOutput = (input, id, format = (v) => v) => {
    const show = () => { $(id).textContent = format(input.value); };
    input.addEventListener("input", show);
    show();
    return show;
  };
  const showStrength = bindOutput(strength, "strength-out");
  const showBrush = bindOutput(brush, "brush-out");
  bindOutput(zoom, "zoom-out");
  bindOutput(feather, "feather-out");

  const scale = () => canvas.width / canvas.getBoundingClientRect().width;
  const applyZoom = () => { frame.style.width = `${zoom.value}%`; };
  zoom.addEventListener("input", applyZoom);
  // The preview shows the feathered edge as it will be sent (blur in image pixels, drawn at the display's scale).
  const applyFeather = () => { canvas.style.filter = Number(feather.value) ? `blur(${Number(feather.value) / scale() || 0}px)` : ""; };
  feather.addEventListener("input", applyFeather);

  const syncHistoryButtons = () => { undoButton.disabled = !undo.length; redoButton.disabled = !redo.length; };
  const snapshot = () => ctx.getImageData(0, 0, canvas.width, canvas.height);
  const remember = () => {
    undo.push(snapshot());
    if (undo.length > HISTORY) undo.shift();
    redo = [];
    syncHistoryButtons();
  };
  const markPainted = () => {
    const data = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
    painted = false;
    for (let i = 3; i < data.length; i += 4) if (data[i]) { painted = true; break; }
  };
  const restore = (from, to) => {
    if (!from.length) return;
    to.push(snapshot());
    ctx.putImageData(from.pop(), 0, 0);
    markPainted();
    syncHistoryButtons();
  };
  undoButton.addEventListener("click", () => restore(undo, redo));
  redoButton.addEventListener("click", () => restore(redo, undo));

  const setTool = (eraser) => {
    erasing = eraser;
    brushButton.setAttribute("aria-pressed", String(!eraser));
    eraserButton.setAttribute("aria-pressed", String(eraser));
    cursor.classList.toggle("eraser", eraser);
  };
  brushButton.addEventListener("click", () => { setTool(false); maskOn.checked = true; syncMaskOn(); });
  eraserButton.addEventListener("click", () => { setTool(true); maskOn.checked = true; syncMaskOn(); });

  function clear({ record = true } = {}) {
    if (record && painted) remember();
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    painted = false;
  }
  $("mask-clear").addEventListener("click", () => clear());
  $("mask-invert").addEventListener("click", () => {
    remember();
    // White where nothing was painted, clear where something was: paint everything, cut out the old strokes.
    const old = document.createElement("canvas");
    old.width = canvas.width; old.height = canvas.height;
    old.getContext("2d").drawImage(canvas, 0, 0);
    ctx.save();
    ctx.globalCompositeOperation = "source-over";
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    ctx.globalCompositeOperation = "destination-out";
    ctx.drawImage(old, 0, 0);
    ctx.restore();
    markPainted();
    maskOn.checked = true;
    syncMaskOn();
  });

  const syncMaskOn = () => {
    frame.classList.toggle("painting", maskOn.checked);
    $("mask-tools").classList.toggle("inactive", !maskOn.checked);
  };
  maskOn.addEventListener("change", syncMaskOn);

  // --- painting ---
  let last = null;
  const point = (e) => {
    const r = canvas.getBoundingClientRect();
    const s = canvas.width / r.width;
    return { x: (e.clientX - r.left) * s, y: (e.clientY - r.top) * s, s };
  };
  const stroke = (from, to) => {
    ctx.save();
    ctx.globalCompositeOperation = erasing ? "destination-out" : "source-over";
    ctx.strokeStyle = ctx.fillStyle = "#fff";
    ctx.lineCap = ctx.lineJoin = "round";
    ctx.lineWidth = Number(brush.value) * to.s;
    ctx.beginPath();
    ctx.moveTo(from.x, from.y);
    ctx.lineTo(to.x, to.y);
    ctx.stroke();
    ctx.restore();
  };
  const moveCursor = (e) => {
    const r = frame.getBoundingClientRect();
    const size = Number(brush.value);
    cursor.style.width = cursor.style.height = `${size}px`;
    cursor.style.transform = `translate(${e.clientX - r.left - size / 2}px, ${e.clientY - r.top - size / 2}px)`;
    cursor.hidden = !maskOn.checked;
  };
  canvas.addEventListener("pointerdown", (e) => {
    if (!maskOn.checked) return;
    canvas.focus({ preventScroll: true }); // so Ctrl+Z undoes the stroke just painted
    remember();
    canvas.setPointerCapture(e.pointerId);
    last = point(e);
    stroke(last, last);
    painted = painted || !erasing;
  });
  canvas.addEventListener("pointermove", (e) => {
    moveCursor(e);
    if (!last) return;
    const p = point(e);
    stroke(last, p);
    last = p;
  });
  const stop = () => { if (last && erasing) markPainted(); last = null; };
  canvas.addEventListener("pointerup", stop);
  canvas.addEventListener("pointercancel", stop);
  canvas.addEventListener("pointerleave", () => { cursor.hidden = true; });

  // [ and ] change the brush (outside text fields, while the editor is open), like the tools people know.
  document.addEventListener("keydown", (e) => {
    if (editor.hidden || e.ctrlKey || e.metaKey || e.altKey) return;
    if (e.target.closest?.("input:not([type=range]):not([type=checkbox]), textarea, select")) return;
    if (e.key !== "[" && e.key !== "]") return;
    e.preventDefault();
    const step = Math.max(2, Math.round(Number(brush.value) * 0.15));
    brush.value = String(Math.min(Number(brush.max), Math.max(Number(brush.min), Number(brush.value) + (e.key === "]" ? step : -step))));
    showBrush();
  });
  // Ctrl/Cmd+Z and Shift+Ctrl/Cmd+Z undo and redo strokes while the pointer or focus is in the editor.
  editor.addEventListener("keydown", (e) => {
    if (!(e.ctrlKey || e.metaKey) || e.key.toLowerCase() !== "z") return;
    if (e.target.closest?.("textarea, input:not([type=range]):not([type=checkbox])")) return;
    e.preventDefault();
    if (e.shiftKey) restore(redo, undo); else restore(undo, redo);
  });

  // --- the image ---
  function useFile(next, { mode = "img2img" } = {}) {
    if (!next) return false;
    if (!TYPES.includes(next.type)) {
      toast("Use a PNG, JPEG or WebP image.", { kind: "error" });
      return false;
    }
    file = next;
    const url = URL.createObjectURL(next);
    preview.onload = () => {
      canvas.width = preview.naturalWidth;
      canvas.height = preview.naturalHeight;
      undo = []; redo = []; syncHistoryButtons();
      clear({ record: false });
      applyFeather();
      URL.revokeObjectURL(url);
    };
    preview.src = url;
    editor.hidden = false;
    maskOn.checked = mode === "inpaint";
    syncMaskOn();
    document.getElementById("image-input").open = true;
    return true;
  }
  function remove() {
    file = null; editor.hidden = true; maskOn.checked = false; clear({ record: false }); syncMaskOn();
    const input = $("init-file");
    input.value = "";
  }
  $("init-remove").addEventListener("click", () => { remove(); $("init-file").focus(); });

  async function maskBlob() {
    const out = document.createElement("canvas");
    out.width = canvas.width;
    out.height = canvas.height;
    const c = out.getContext("2d");
    c.fillStyle = "#000";
    c.fillRect(0, 0, out.width, out.height);
    if (Number(feather.value)) c.filter = `blur(${Number(feather.value)}px)`;
    c.drawImage(canvas, 0, 0);
    return new Promise((resolve) => out.toBlob(resolve, "image/png"));
  }

  applyZoom();
  syncMaskOn();
  return {
    useFile,
    remove,
    get file() { return file; },
    /** "inpaint" when a mask is painted and on, "img2img" with an image, null without one. */
    kind: () => (!file ? null : maskOn.checked && painted ? "inpaint" : "img2img"),
    maskBlob,
    strength: () => Number(strength.value),
    setStrength(value) { strength.value = String(value); showStrength(); },
  };
}
