// The billing pages (/pricing, /billing, and the admin's view of a user's ledger): times in the viewer's own zone,
// usage bars, Stripe Checkout and Customer Portal (the server answers a URL; the browser goes there), and
// "Show older" on the credit ledger (GET …/ledger?cursor=, rows built like the server's _ledger.html).
import { api, ApiError, el, localTime, toast } from "./app.js";

const number = new Intl.NumberFormat();

/** Server-rendered <time data-local> show UTC (readable without JavaScript); here they become local times. */
export function localizeTimes(root = document) {
  for (const t of root.querySelectorAll("time[data-local]")) {
    t.title = t.textContent.trim();
    t.textContent = localTime(t.dateTime);
    t.removeAttribute("data-local");
  }
}

// Inline styles are refused by the pages' CSP; a width set from script is not.
function fillBars(root = document) {
  for (const bar of root.querySelectorAll(".progress > [data-pct]")) bar.style.width = `${Number(bar.dataset.pct)}%`;
}

function showError(error) {
  const slot = document.getElementById("billing-error");
  if (slot) { slot.textContent = error.message; slot.scrollIntoView({ block: "nearest" }); }
  else toast(error.message, { kind: "error" });
}

/** POST a billing route that answers {url} (checkout, portal) and go there. */
async function redirectVia(button, path, body) {
  button.disabled = true;
  const label = button.textContent;
  button.textContent = "Opening…";
  try {
    const { url } = await api(path, { method: "POST", body });
    location.assign(url);
  } catch (error) {
    button.disabled = false;
    button.textContent = label;
    if (!(error instanceof ApiError)) throw error;
    showError(error);
  }
}

const signed = (n) => (n > 0 ? `+${number.format(n)}` : n < 0 ? `−${number.format(-n)}` : "0");

function ledgerRow(entry, kinds) {
  const note = el("td", { class: "note" });
  if (entry.job_id) {
    note.append(el("a", { href: `/generate#job-${encodeURIComponent(entry.job_id)}`, text: "Job" }));
    if (entry.reason) note.append(" · ");
  }
  note.append(entry.reason ?? "");
  const amountClass = "num c-amount" + (entry.amount < 0 ? " minus" : entry.amount > 0 ? " plus" : "");
  return el("tr", {},
    el("td", { class: "nowrap c-when" }, el("time", { datetime: entry.created_at, title: entry.created_at, text: localTime(entry.created_at) })),
    el("td", { class: "c-what" }, el("span", { class: `badge badge-ledger-${entry.kind}`, text: kinds[entry.kind] ?? entry.kind })),
    el("td", { class: amountClass, text: signed(entry.amount) }),
    el("td", { class: "num muted col-held", text: entry.held ? signed(entry.held) : "" }),
    el("td", { class: "num c-balance", text: number.format(entry.balance_after) }),
    note);
}

async function showOlder(button) {
  const table = document.querySelector("table[data-ledger]");
  if (!table) return;
  const kinds = JSON.parse(table.dataset.kinds || "{}");
  button.disabled = true;
  try {
    const sep = table.dataset.ledger.includes("?") ? "&" : "?";
    const page = await api(`${table.dataset.ledger}${sep}limit=20&cursor=${encodeURIComponent(button.dataset.ledgerMore)}`);
    table.tBodies[0].append(...page.items.map((e) => ledgerRow(e, kinds)));
    button.dataset.ledgerMore = page.next_cursor ?? "";
    button.hidden = !page.next_cursor;
  } catch (error) {
    toast(error.message, { kind: "error" });
  } finally {
    button.disabled = false;
  }
}

document.addEventListener("click", (event) => {
  const target = event.target instanceof Element ? event.target : null;
  const plan = target?.closest("button[data-checkout-plan]");
  const pack = target?.closest("button[data-checkout-pack]");
  const more = target?.closest("button[data-ledger-more]");
  if (plan) redirectVia(plan, "billing/checkout", { plan: plan.dataset.checkoutPlan });
  else if (pack) redirectVia(pack, "billing/checkout", { credit_pack: pack.dataset.checkoutPack });
  else if (more) showOlder(more);
  else if (target?.closest("#manage-subscription")) redirectVia(target.closest("button"), "billing/portal", {});
});

localizeTimes();
fillBars();
// Back from Stripe: the confirmation is said once; a reload should not thank the user again.
if (new URLSearchParams(location.search).has("checkout")) history.replaceState(null, "", location.pathname + location.hash);
