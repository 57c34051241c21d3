// The administrators' billing views: a user's plan and credits (forms posting to /admin/users/{id}/plan and
// /credits), the plan catalogue's editor (POST /admin/billing/plans, PATCH /admin/billing/plans/{slug}), and revenue
// and usage per day on the analytics page (GET /admin/billing/analytics?days=, drawn like the server's charts.py).
import { api, ApiError, apiPath, clearFieldErrors, el, showFieldErrors, toast, wireApiForms } from "./app.js";

const number = new Intl.NumberFormat();

wireApiForms({ reload: () => location.reload() });

// --- the plan editor -----------------------------------------------------------------------------------------
const editor = document.getElementById("plan-editor");
const planForm = document.getElementById("plan-form");
// Empty means "no limit" for these (null in the API), not "leave as it was".
const UNLIMITED = ["monthly_images", "daily_images", "max_pixels", "max_images_per_job", "max_steps", "max_running_jobs"];
const NUMBERS = ["monthly_credits", "queue_priority", "sort_order"];
let editing = null; // the slug being edited; null: a new plan

function openEditor(slug) {
  editing = slug;
  clearFieldErrors(planForm);
  planForm.reset();
  const values = slug ? JSON.parse(document.getElementById("plan-values").textContent)[slug] : null;
  document.getElementById("editor-h").textContent = values ? `Edit ${values.name}` : "New plan";
  document.getElementById("plan-save").textContent = values ? "Save changes" : "Create plan";
  planForm.elements.slug.readOnly = Boolean(values);
  if (values) {
    for (const input of planForm.elements) {
      if (!input.name || input.type === "submit" || input.type === "button") continue;
      if (input.name === "features") input.checked = values.features.includes(input.value);
      else if (input.type === "checkbox") input.checked = Boolean(values[input.name]);
      else input.value = values[input.name] ?? "";
    }
  }
  editor.hidden = false;
  editor.scrollIntoView({ block: "start" });
  planForm.elements[values ? "name" : "slug"].focus();
}

function planBody() {
  const f = planForm.elements;
  const body = {
    name: f.name.value.trim(),
    description: f.description.value.trim(),
    price_cents: Math.round(Number(f.price.value || 0) * 100),
    currency: f.currency.value.trim().toLowerCase() || "usd",
    stripe_price_id: f.stripe_price_id.value.trim() || null,
    watermark: f.watermark.checked,
    nsfw_policy: f.nsfw_policy.value || null, // empty: the install's STUDIOLO_NSFW_POLICY
    features: [...planForm.querySelectorAll("input[name=features]:checked")].map((c) => c.value),
  };
  for (const name of UNLIMITED) body[name] = f[name].value === "" ? null : Number(f[name].value);
  for (const name of NUMBERS) body[name] = Number(f[name].value || 0);
  if (!editing) body.slug = f.slug.value.trim();
  return body;
}

if (planForm) {
  document.getElementById("plan-new").addEventListener("click", () => openEditor(null));
  document.getElementById("plan-cancel").addEventListener("click", () => { editor.hidden = true; });
  document.addEventListener("click", (event) => {
    const button = event.target instanceof Element ? event.target.closest("button[data-plan-edit]") : null;
    if (button) openEditor(button.dataset.planEdit);
  });
  planForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearFieldErrors(planForm);
    const save = document.getElementById("plan-save");
    save.disabled = true;
    try {
      if (editing) await api(apiPath`admin/billing/plans/${editing}`, { method: "PATCH", body: planBody() });
      else await api("admin/billing/plans", { method: "POST", body: planBody() });
      location.reload();
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      showFieldErrors(planForm, error);
    } finally {
      save.disabled = false;
    }
  });
}

// --- revenue and usage per day (analytics page) ----------------------------------------------------------------
const SVG = "http://www.w3.org/2000/svg";
const W = 640, H = 220, LEFT = 52, RIGHT = 8, TOP = 12, BOTTOM = 28;
let charts = 0;

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

function niceMax(value) {
  if (value <= 0) return 1;
  const magnitude = 10 ** (String(Math.floor(value)).length - 1);
  for (const step of [1, 2, 2.5, 5, 10]) if (step * magnitude >= value) return step * magnitude;
  return value;
}

/** A column per day, as charts.bars draws it on the server: a title, a description, each value in a <title>. */
export function barChart(points, { title, format = (v) => number.format(v) }) {
  const id = `bc${++charts}`;
  const chart = svg("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-labelledby": `${id}-t ${id}-d` });
  const total = points.reduce((sum, [, v]) => sum + v, 0);
  const desc = points.length ? `${points.length} days from ${points[0][0]} to ${points.at(-1)[0]}, ${format(total)} in all.` : "No data.";
  chart.append(svg("title", { id: `${id}-t` }, title), svg("desc", { id: `${id}-d` }, desc));
  const top = niceMax(Math.max(0, ...points.map(([, v]) => v)));
  const innerH = H - TOP - BOTTOM;
  for (const frac of [0, 0.5, 1]) {
    const y = TOP + innerH * (1 - frac);
    chart.append(svg("line", { class: "axis", x1: LEFT, x2: W - RIGHT, y1: y, y2: y }),
      svg("text", { x: LEFT - 6, y: y + 4, "text-anchor": "end" }, format(top * frac)));
  }
  const slot = (W - LEFT - RIGHT) / Math.max(points.length, 1);
  const every = Math.max(1, Math.round(points.length / 6));
  points.forEach(([label, value], i) => {
    const h = innerH * (value / top);
    const bar = svg("rect", { class: "bar", x: LEFT + slot * i + slot * 0.15, y: TOP + innerH - h, width: slot * 0.7, height: h });
    bar.append(svg("title", {}, `${label}: ${format(value)}`));
    chart.append(bar);
    if (i % every === 0 || i === points.length - 1) {
      chart.append(svg("text", { x: LEFT + slot * (i + 0.5), y: H - 8, "text-anchor": "middle" }, label.slice(5)));
    }
  });
  return chart;
}

/** $14.99; ``whole`` rounds to $15 where cents would crowd (a chart's axis). */
function money(cents, currency, whole = false) {
  const digits = whole && cents % 100 === 0 ? { maximumFractionDigits: 0 } : {};
  return new Intl.NumberFormat(undefined, { style: "currency", currency: (currency || "usd").toUpperCase(), ...digits }).format(cents / 100);
}

async function loadAnalytics(box) {
  const status = box.querySelector("[data-status]");
  try {
    const data = await api(`admin/billing/analytics?days=${encodeURIComponent(box.dataset.days || "30")}`);
    const days = data.days ?? [];
    const sum = (key) => days.reduce((total, d) => total + (d[key] ?? 0), 0);
    const stat = (value, label) => el("div", { class: "card stat" }, el("span", { class: "value", text: value }), el("span", { class: "label", text: label }));
    const plans = Object.entries(data.plans ?? {}).map(([slug, n]) => `${slug} ${number.format(n)}`).join(" · ");
    box.querySelector("[data-totals]").replaceChildren(
      stat(money(data.revenue_cents, data.currency), "Revenue"),
      stat(money(sum("refunds_cents"), data.currency), "Refunded"),
      stat(number.format(sum("payments")), "Payments"),
      stat(number.format(data.paying_users), "Paying users"),
      stat(number.format(sum("images")), "Images charged"),
      stat(number.format(sum("credits_captured")), "Credits spent"));
    box.querySelector("[data-plans]").textContent = plans ? `Users per plan: ${plans}.` : "";
    // The charts sit in the page's grid with the other charts (admin.html), outside this section.
    document.querySelector("[data-revenue]")?.replaceChildren(
      barChart(days.map((d) => [d.day, d.revenue_cents / 100]), { title: "Revenue per day", format: (v) => money(v * 100, data.currency, true) }));
    document.querySelector("[data-usage]")?.replaceChildren(
      barChart(days.map((d) => [d.day, d.images]), { title: "Images made on plans per day" }));
    status.textContent = "";
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    status.textContent = `Revenue and usage could not be loaded: ${error.message}`;
    toast(status.textContent, { kind: "error" });
  }
}

const analytics = document.getElementById("billing-analytics");
if (analytics) loadAnalytics(analytics);
