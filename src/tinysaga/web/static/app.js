// Tiny-Saga storefront: a small single-page app over the public API.
// Same origin as the API (through the gateway), so the browser sends the HttpOnly `access_token`
// cookie itself; no token is ever visible to this script. Routing uses location.pathname.

// the saga has ended (PLACED, FAILED, CANCELED); the live stream also ends once the order is shipped
const TERMINAL = new Set(["PLACED", "FAILED", "CANCELED"]);
const STREAM_ENDS = new Set([...TERMINAL, "ON_THE_WAY", "DELIVERED"]);
// the owner may cancel while the saga runs and until the order is shipped
const CANCELABLE = new Set(["INITIATED", "PAYMENT_DONE", "PLACED"]);
const EMAIL_KEY = "tinysaga.email";

const main = document.getElementById("main");
const flashEl = document.getElementById("flash");

const session = { signedIn: false, admin: false, email: sessionStorage.getItem(EMAIL_KEY) || "" };

// ---- small helpers -------------------------------------------------------------------------------

/** Build an element. attrs: class, text, on<event>, boolean attributes as true; children: nodes or text. */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

const enc = encodeURIComponent;

function money(value, currency = "USD") {
  if (value === null || value === undefined || value === "") return "–";
  try {
    return new Intl.NumberFormat(undefined, { style: "currency", currency }).format(Number(value));
  } catch {
    return `${Number(value).toFixed(2)} ${currency}`;
  }
}

function when(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleString();
}

function clock(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso || "";
  return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", fractionalSecondDigits: 3 });
}

function shortId(id) {
  return id ? String(id).slice(0, 8) : "–";
}

function newKey() {
  if (crypto.randomUUID) return crypto.randomUUID();
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
}

const MONEY_RE = /^\d{1,7}(\.\d{1,2})?$/;

const STATUS_TEXT = {
  INITIATED: "Order received",
  PAYMENT_DONE: "Paid",
  PLACED: "Placed",
  REFUND_INITIATED: "Refunding",
  FAILED: "Failed",
  CANCELING: "Canceling",
  CANCELED: "Canceled",
  ON_THE_WAY: "On the way",
  DELIVERED: "Delivered",
};
const FAIL_TEXT = {
  INSUFFICIENT_FUNDS: "there was not enough money in your wallet",
  PAYMENT_ERROR: "the payment could not be taken",
  INVENTORY_INSUFFICIENT: "the product ran out of stock after you paid",
  TIMEOUT: "the order took too long and was stopped",
};
const REFUND_TEXT = {
  REFUND_INITIATED: "Refund in progress: your money is on its way back to your wallet.",
  REFUND_DONE: "Refund done: the money is back in your wallet.",
  REFUND_FAILED: "The refund failed. Our team has been alerted and will fix it.",
};
const EVENT_TEXT = {
  ORDER_INITIATED: "Order received",
  PAYMENT_DONE: "Payment taken from the wallet",
  PAYMENT_FAIL: "Payment refused",
  INVENTORY_RESERVED: "Stock reserved",
  INVENTORY_RESERVERVED: "Stock reserved",
  INVENTORY_INSUFFICIENT: "Out of stock after payment",
  REFUND_INITIATED: "Refund started",
  REFUND_DONE: "Money refunded to the wallet",
  REFUND_FAILED: "Refund failed",
  ORDER_TIMED_OUT: "Stopped: took too long",
  ORDER_CANCEL_REQUESTED: "Cancel requested",
  PAYMENT_VOIDED: "Payment voided: nothing was charged",
  INVENTORY_RELEASED: "Stock given back",
  ORDER_CANCELED: "Order canceled",
  ORDER_SHIPPED: "Shipped",
  ORDER_DELIVERED: "Delivered",
};
const statusText = (s) => STATUS_TEXT[s] || s || "–";

function statusPill(order, attrs = {}) {
  const pill = h("span", { class: "pill", "data-status": order.orderStatus, ...attrs }, statusText(order.orderStatus));
  return pill;
}

// ---- talking to the API --------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, problem, retryAfter) {
    super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
    this.status = status;
    this.problem = problem || {};
    this.retryAfter = retryAfter;
    this.handled = false;
  }
}

/** fetch with the cookie; returns {data, res}; throws ApiError. A 401 sends the user to sign in
 * unless on401 is "quiet". */
async function request(path, { method = "GET", body, headers = {}, signal, on401 = "redirect" } = {}) {
  const init = { method, credentials: "same-origin", headers: { Accept: "application/json", ...headers }, signal };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError(0, { title: "Network error", detail: "cannot reach the shop" });
  }
  const text = res.status === 204 ? "" : await res.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!res.ok) {
    const err = new ApiError(res.status, data, res.headers.get("Retry-After"));
    if (res.status === 401 && on401 === "redirect") {
      signedOut();
      goSignIn("Your session has ended. Please sign in to continue.");
      err.handled = true;
    }
    throw err;
  }
  return { data, res };
}

async function api(path, opts) {
  return (await request(path, opts)).data;
}

function retrySeconds(header) {
  if (!header) return 10;
  const n = Number(header);
  if (Number.isFinite(n)) return Math.max(1, Math.ceil(n));
  const t = Date.parse(header);
  return Number.isNaN(t) ? 10 : Math.max(1, Math.ceil((t - Date.now()) / 1000));
}

/** A message a person can act on, for any error. */
function explain(err, context = "") {
  if (!(err instanceof ApiError)) return `Something went wrong: ${err && err.message ? err.message : err}`;
  const p = err.problem || {};
  switch (err.status) {
    case 0:
      return "Cannot reach the shop. Check your connection and try again.";
    case 401:
      return context === "signin" ? "Wrong email or password." : "Please sign in to continue.";
    case 403:
      return context === "admin" ? "This page is for administrators only." : "You are not allowed to do that.";
    case 404:
      if (context === "order") return "This product no longer exists.";
      return p.detail && p.detail !== "Not Found" ? `Not found: ${p.detail}.` : "Not found.";
    case 409:
      if (context === "order") return `Out of stock: ${p.detail || "not enough left; no order was created"}.`;
      if (context === "signup") return "An account with this email already exists. Sign in instead.";
      return p.detail || "That conflicts with the current state; reload and try again.";
    case 413:
      return "That is too much data to send.";
    case 422: {
      const errs = Array.isArray(p.errors) ? p.errors : [];
      if (!errs.length) return p.detail || "Some values are invalid.";
      return "Please check: " + errs.map((e) => `${e.field}: ${e.message}`).join("; ") + ".";
    }
    case 429:
      return `Too many requests: wait ${retrySeconds(err.retryAfter)} seconds and try again.`;
    case 503:
      if (p.type === "urn:tinysaga:problem:overloaded") {
        return `The shop is very busy: no order was created. Try again in ${retrySeconds(err.retryAfter)} seconds.`;
      }
      return "A part of the shop is unavailable right now. Try again in a moment.";
    case 502:
    case 504:
      return "A part of the shop is unavailable right now. Try again in a moment.";
    default:
      return p.detail || p.title || `The request failed (HTTP ${err.status}).`;
  }
}

/** Product names by id (the orders only carry the id); the public catalogue, cached a minute. */
let namesCache = null;
async function productNames() {
  if (!namesCache || Date.now() - namesCache.at > 60000) {
    namesCache = { at: Date.now(), names: api("/api/products").then((list) => new Map(list.map((p) => [p.productId, p.name]))) };
    namesCache.names.catch(() => {
      namesCache = null;
    });
  }
  try {
    return await namesCache.names;
  } catch {
    return new Map();
  }
}

// ---- messages ------------------------------------------------------------------------------------

let pendingFlash = null;

function flash(text, kind = "info") {
  if (!text) {
    flashEl.hidden = true;
    flashEl.textContent = "";
    return;
  }
  flashEl.dataset.kind = kind;
  flashEl.textContent = text;
  flashEl.hidden = false;
}

/** An inline message box (role=alert for errors) that starts hidden. */
function messageBox(testid, kind = "error") {
  const box = h("p", { class: `note ${kind}`, role: kind === "error" ? "alert" : "status", "data-testid": testid, hidden: true });
  box.show = (text, k = kind) => {
    box.className = `note ${k}`;
    box.textContent = text || "";
    box.hidden = !text;
  };
  return box;
}

/** Submit handling for a form: busy state, errors in `box`, 429 cool-down on the button. */
function handleSubmit(form, box, fn, { context = "", canSubmit = () => true } = {}) {
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (form.dataset.busy) return;
    const btn = form.querySelector('button[type="submit"]');
    form.dataset.busy = "1";
    form.setAttribute("aria-busy", "true");
    if (btn) btn.disabled = true;
    box.show("");
    let cooldown = 0;
    try {
      await fn();
    } catch (err) {
      if (err.name === "AbortError" || err.handled) return;
      box.show(explain(err, context));
      if (err.status === 429) cooldown = retrySeconds(err.retryAfter);
    } finally {
      delete form.dataset.busy;
      form.removeAttribute("aria-busy");
      if (btn) {
        if (cooldown) {
          setTimeout(() => {
            btn.disabled = !canSubmit();
          }, cooldown * 1000);
        } else {
          btn.disabled = !canSubmit();
        }
      }
    }
  });
}

function field(id, label, input, hint) {
  input.id = id;
  const kids = [h("label", { for: id }, label), input];
  if (hint) {
    const hid = `${id}-hint`;
    input.setAttribute("aria-describedby", hid);
    kids.push(h("span", { class: "hint", id: hid }, hint));
  }
  return h("div", { class: "field" }, kids);
}

function markInvalid(form, err) {
  form.querySelectorAll("[aria-invalid]").forEach((el) => el.removeAttribute("aria-invalid"));
  const errs = err && err.problem && Array.isArray(err.problem.errors) ? err.problem.errors : [];
  for (const e of errs) {
    const el = form.querySelector(`[name="${CSS.escape(String(e.field))}"]`);
    if (el) el.setAttribute("aria-invalid", "true");
  }
}

function table(testid, headers, caption) {
  const tbody = h("tbody");
  const t = h(
    "table",
    { "data-testid": testid },
    caption ? h("caption", { class: "visually-hidden" }, caption) : null,
    h("thead", null, h("tr", null, headers.map((x) => (typeof x === "string" ? h("th", { scope: "col" }, x) : x)))),
    tbody,
  );
  // on a phone each row becomes a small card: every cell says which column it is
  const labels = [...t.tHead.rows[0].cells].map((th) => th.textContent);
  const label = () => {
    for (const tr of tbody.rows) {
      if (tr.cells.length !== labels.length) continue;
      [...tr.cells].forEach((td, i) => td.setAttribute("data-label", labels[i]));
    }
  };
  new MutationObserver(label).observe(tbody, { childList: true });
  return { wrap: h("div", { class: "table-wrap stacked" }, t), tbody, table: t };
}

// ---- session -------------------------------------------------------------------------------------

function signedOut() {
  session.signedIn = false;
  session.admin = false;
  session.email = "";
  sessionStorage.removeItem(EMAIL_KEY);
  updateHeader();
}

async function checkAdmin() {
  try {
    await api("/api/admin/alerts", { on401: "quiet" });
    session.admin = true;
  } catch {
    session.admin = false;
  }
}

/** Signed in = GET /api/wallet answers 200; admin = GET /api/admin/alerts answers 200. */
async function loadSession() {
  try {
    await api("/api/wallet", { on401: "quiet" });
    session.signedIn = true;
  } catch (err) {
    // 401: signed out. Anything else (429, 503): keep what this tab knew.
    session.signedIn = err.status === 401 ? false : Boolean(session.email);
  }
  if (session.signedIn) await checkAdmin();
  else if (session.email) signedOut();
  updateHeader();
}

function updateHeader() {
  const state = { guest: !session.signedIn, user: session.signedIn, admin: session.signedIn && session.admin };
  document.querySelectorAll("[data-when]").forEach((el) => {
    el.hidden = !state[el.dataset.when];
  });
  document.querySelector('[data-testid="user-email"]').textContent = session.email || "Signed in";
  const path = location.pathname;
  const links = [...document.querySelectorAll("#nav a")];
  const matches = (href) => (href === "/" ? path === "/" || path.startsWith("/products/") : path === href || path.startsWith(href + "/"));
  // the most precise link is the current page (/admin/operations is Operations, not Admin)
  const best = links.map((a) => a.getAttribute("href")).filter(matches).sort((a, b) => b.length - a.length)[0];
  links.forEach((a) => {
    if (a.getAttribute("href") === best) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  });
}

function goSignIn(message) {
  if (location.pathname === "/signin" || location.pathname === "/signup") return;
  const next = location.pathname + location.search;
  navigate(`/signin?next=${enc(next)}`, { replace: true, message: { text: message, kind: "info" } });
}

function safeNext(fallback = "/") {
  const next = new URLSearchParams(location.search).get("next");
  return next && next.startsWith("/") && !next.startsWith("//") ? next : fallback;
}

document.getElementById("signout").addEventListener("click", async (ev) => {
  const btn = ev.currentTarget;
  btn.disabled = true;
  try {
    await request("/api/auth/logout", { method: "POST", on401: "quiet" });
    signedOut();
    navigate("/", { message: { text: "You are signed out.", kind: "ok" } });
  } catch (err) {
    flash(`Could not sign out: ${explain(err)}`, "error");
  } finally {
    btn.disabled = false;
  }
});

// ---- routing -------------------------------------------------------------------------------------

const ROUTES = [
  [/^\/$/, pageShop],
  [/^\/signin\/?$/, pageSignIn],
  [/^\/signup\/?$/, pageSignUp],
  [/^\/products\/([^/]+)\/?$/, pageProduct],
  [/^\/orders\/?$/, pageOrders],
  [/^\/orders\/([^/]+)\/?$/, pageOrder],
  [/^\/wallet\/?$/, pageWallet],
  [/^\/notifications\/?$/, pageInbox],
  [/^\/admin\/?$/, pageAdmin],
  [/^\/admin\/operations\/?$/, pageOperations],
  [/^\/admin\/saga\/?$/, pageSagaDefinition],
  [/^\/admin\/orders\/([^/]+)\/?$/, pageAdminOrderMap],
];

let current = null;
let firstRender = true;
let renderedPath = "";

function navigate(path, { replace = false, message = null, state = null } = {}) {
  if (message && message.text) pendingFlash = message;
  if (replace) history.replaceState(state, "", path);
  else history.pushState(state, "", path);
  render();
}

document.addEventListener("click", (ev) => {
  const a = ev.target.closest && ev.target.closest("a[href]");
  if (!a || ev.defaultPrevented || ev.button !== 0 || ev.metaKey || ev.ctrlKey || ev.shiftKey || ev.altKey) return;
  if (a.target || a.hasAttribute("download")) return;
  const href = a.getAttribute("href");
  if (href.startsWith("#")) return;
  const url = new URL(a.href, location.href);
  if (url.origin !== location.origin || url.pathname.startsWith("/api/") || url.pathname.startsWith("/static/")) return;
  ev.preventDefault();
  navigate(url.pathname + url.search);
});
// in-page links (#main, the admin's sections) change only the hash: not a new page
window.addEventListener("popstate", () => {
  if (location.pathname + location.search !== renderedPath) render();
});

async function render() {
  if (current) {
    current.ctrl.abort();
    for (const f of current.cleanups) {
      try {
        f();
      } catch {
        /* ignore */
      }
    }
  }
  const ctrl = new AbortController();
  const ctx = {
    signal: ctrl.signal,
    cleanups: [],
    onLeave(f) {
      this.cleanups.push(f);
    },
    /** Run fn every ms while this page is shown and the tab is visible. */
    every(ms, fn) {
      const id = setInterval(() => {
        if (!document.hidden && !ctrl.signal.aborted) fn();
      }, ms);
      this.cleanups.push(() => clearInterval(id));
    },
    get left() {
      return ctrl.signal.aborted;
    },
  };
  current = { ctrl, cleanups: ctx.cleanups };
  flash(pendingFlash ? pendingFlash.text : "", pendingFlash ? pendingFlash.kind : undefined);
  pendingFlash = null;

  const path = location.pathname;
  renderedPath = path + location.search;
  let page = pageNotFound;
  let params = [];
  for (const [re, fn] of ROUTES) {
    const m = path.match(re);
    if (m) {
      page = fn;
      params = m.slice(1).map((p) => decodeURIComponent(p));
      break;
    }
  }
  const view = h("div", { class: "view", "data-testid": "view", "data-page": page.name });
  main.replaceChildren(view);
  updateHeader();
  const running = page(view, params, ctx);
  // keyboard and screen-reader users land on the new page's heading
  if (!firstRender) {
    const h1 = view.querySelector("h1");
    if (h1) {
      h1.tabIndex = -1;
      h1.focus();
    }
    window.scrollTo(0, 0);
  }
  firstRender = false;
  try {
    await running;
  } catch (err) {
    if (err.name === "AbortError" || err.handled || ctx.left) return;
    view.append(h("p", { class: "note error", role: "alert", "data-testid": "page-error" }, explain(err, page.context || "")));
  }
}

function heading(view, text) {
  const el = h("h1", { "data-testid": "page-title" }, text);
  view.append(el);
  document.title = `${text} · Tiny-Saga shop`;
  return el;
}

function requireSignIn() {
  if (session.signedIn) return true;
  goSignIn("Please sign in to see this page.");
  return false;
}

// ---- pages: sign in / sign up --------------------------------------------------------------------

async function afterSignIn(email) {
  session.signedIn = true;
  session.email = email;
  sessionStorage.setItem(EMAIL_KEY, email);
  await checkAdmin();
  updateHeader();
}

async function pageSignIn(view) {
  heading(view, "Sign in");
  if (session.signedIn) {
    view.append(h("p", { class: "note info" }, `You are already signed in as ${session.email || "a user"}. Sign in again to switch account.`));
  }
  const email = h("input", { type: "email", name: "email", autocomplete: "username", required: true, "data-testid": "signin-email" });
  const password = h("input", { type: "password", name: "password", autocomplete: "current-password", required: true, "data-testid": "signin-password" });
  const box = messageBox("signin-error");
  const form = h(
    "form",
    { class: "card", "data-testid": "signin-form" },
    field("signin-email", "Email", email),
    field("signin-password", "Password", password),
    box,
    h("div", { class: "row" },
      h("button", { type: "submit", "data-testid": "signin-submit" }, "Sign in"),
      h("span", null, "No account yet? ", h("a", { href: `/signup${location.search}` }, "Sign up"))),
  );
  handleSubmit(form, box, async () => {
    const e = email.value.trim();
    await api("/api/auth/token", { method: "POST", body: { email: e, password: password.value }, on401: "quiet" });
    await afterSignIn(e);
    navigate(safeNext("/"), { replace: true, message: { text: `Signed in as ${e}.`, kind: "ok" } });
  }, { context: "signin" });
  view.append(form);
}

async function pageSignUp(view) {
  heading(view, "Create an account");
  view.append(h("p", { class: "muted" }, "You get a wallet with a balance of 0; top it up to pay for orders."));
  const email = h("input", { type: "email", name: "email", autocomplete: "email", required: true, maxlength: 254, "data-testid": "signup-email" });
  const name = h("input", { type: "text", name: "name", autocomplete: "name", required: true, maxlength: 100, "data-testid": "signup-name" });
  const password = h("input", { type: "password", name: "password", autocomplete: "new-password", required: true, minlength: 8, maxlength: 128, "data-testid": "signup-password" });
  const phone = h("input", { type: "tel", name: "phone", autocomplete: "tel", maxlength: 20, "data-testid": "signup-phone" });
  const box = messageBox("signup-error");
  const form = h(
    "form",
    { class: "card", "data-testid": "signup-form" },
    field("signup-email", "Email", email),
    field("signup-name", "Name", name),
    field("signup-password", "Password", password, "At least 8 characters."),
    field("signup-phone", "Phone (optional)", phone, "For SMS updates, e.g. +1 555 0123."),
    box,
    h("div", { class: "row" },
      h("button", { type: "submit", "data-testid": "signup-submit" }, "Create account"),
      h("span", null, "Have an account? ", h("a", { href: `/signin${location.search}` }, "Sign in"))),
  );
  handleSubmit(form, box, async () => {
    const body = { email: email.value.trim(), password: password.value, name: name.value.trim() };
    if (phone.value.trim()) body.phone = phone.value.trim();
    try {
      await api("/api/auth/register", { method: "POST", body, on401: "quiet" });
    } catch (err) {
      markInvalid(form, err);
      throw err;
    }
    await api("/api/auth/token", { method: "POST", body: { email: body.email, password: body.password }, on401: "quiet" });
    await afterSignIn(body.email);
    navigate(safeNext("/wallet"), {
      replace: true,
      message: { text: "Welcome! Your account is ready. Top up your wallet to start ordering.", kind: "ok" },
    });
  }, { context: "signup" });
  view.append(form);
}

// ---- pages: catalogue and ordering ---------------------------------------------------------------

function availability(count) {
  const n = Number(count);
  if (n <= 0) return h("span", { class: "pill none", "data-testid": "availability", "data-available": n }, "Out of stock");
  if (n <= 5) return h("span", { class: "pill low", "data-testid": "availability", "data-available": n }, `Only ${n} left`);
  return h("span", { class: "pill ok", "data-testid": "availability", "data-available": n }, `${n} in stock`);
}

async function pageShop(view, _params, ctx) {
  heading(view, "Shop");
  view.append(h("p", { class: "muted" }, "Pay from your wallet. Availability is live."));
  const list = h("ul", { class: "grid", "data-testid": "catalogue" });
  view.append(list);
  let shownIds = "";

  function card(p) {
    const hid = `product-${p.productId}`;
    return h(
      "li",
      { class: "card product", "data-testid": "product-card", "data-product-id": p.productId },
      h("p", { class: "type" }, p.type),
      h("h2", { id: hid }, p.name),
      h("p", { class: "price", "data-testid": "price" }, money(p.price, p.currency)),
      h("p", { class: "avail" }, availability(p.availableCount)),
      h("p", { class: "actions" },
        h("a", { class: p.availableCount > 0 ? "button" : "button secondary", href: `/products/${enc(p.productId)}`, "data-testid": "order-link", "aria-describedby": hid },
          p.availableCount > 0 ? "Order" : "Details")),
    );
  }

  async function load() {
    const products = await api("/api/products", { signal: ctx.signal });
    const ids = products.map((p) => p.productId).join("\n");
    if (!products.length) {
      list.replaceChildren(h("li", { class: "empty" }, "No products yet."));
    } else if (ids !== shownIds) {
      list.replaceChildren(...products.map(card));
    } else {
      // update in place, so keyboard focus stays where it is
      for (const p of products) {
        const c = list.querySelector(`[data-product-id="${CSS.escape(p.productId)}"]`);
        c.querySelector('[data-testid="price"]').textContent = money(p.price, p.currency);
        const old = c.querySelector('[data-testid="availability"]');
        if (old.dataset.available !== String(p.availableCount)) old.replaceWith(availability(p.availableCount));
      }
    }
    shownIds = ids;
  }
  await load();
  ctx.every(5000, () => load().catch(() => {}));
}

const REASON_TEXT = {
  INSUFFICIENT_FUNDS: "Not enough money in your wallet",
};

async function pageProduct(view, [productId], ctx) {
  const title = heading(view, "Order");
  let product;
  try {
    product = await api(`/api/products/${enc(productId)}`, { signal: ctx.signal });
  } catch (err) {
    if (err.status === 404) {
      view.append(h("p", { class: "note error", role: "alert", "data-testid": "page-error" }, "This product does not exist."),
        h("p", null, h("a", { href: "/" }, "Back to the shop")));
      return;
    }
    throw err;
  }
  title.textContent = product.name;
  document.title = `${product.name} · Tiny-Saga shop`;
  const avail = h("span", null, availability(product.availableCount));
  view.append(
    h("section", { class: "card", "data-testid": "product", "data-product-id": product.productId },
      h("dl", { class: "facts" },
        h("dt", null, "Price"), h("dd", { "data-testid": "unit-price" }, `${money(product.price, product.currency)} each`),
        h("dt", null, "Availability"), h("dd", null, avail),
        h("dt", null, "Category"), h("dd", null, product.type),
        h("dt", null, "Product id"), h("dd", null, h("code", null, product.productId)))),
  );

  if (!session.signedIn) {
    view.append(h("p", { class: "note info", "data-testid": "signin-to-order" },
      h("a", { href: `/signin?next=${enc(location.pathname)}` }, "Sign in"), " or ",
      h("a", { href: `/signup?next=${enc(location.pathname)}` }, "create an account"), " to order."));
    ctx.every(5000, async () => {
      try {
        const p = await api(`/api/products/${enc(productId)}`, { signal: ctx.signal });
        avail.replaceChildren(availability(p.availableCount));
      } catch {
        /* shown on the next try */
      }
    });
    return;
  }

  const qty = h("input", { type: "number", name: "productQuantity", min: 1, max: 100, step: 1, value: 1, inputmode: "numeric", required: true, "data-testid": "quantity" });
  const total = h("strong", { "data-testid": "quote-total" }, "…");
  const quoteLine = h("p", { "data-testid": "quote", "aria-live": "polite" }, "Total: ", total);
  const outOfStock = h("p", { class: "note error", "data-testid": "out-of-stock", hidden: true });
  const modes = h("fieldset", { "data-testid": "payment-modes" }, h("legend", null, "Payment"), h("p", { class: "muted" }, "Loading payment options…"));
  const box = messageBox("order-error");
  const submit = h("button", { type: "submit", "data-testid": "order-submit", disabled: true }, "Place order");
  const form = h("form", { class: "card", "data-testid": "order-form", novalidate: true },
    field("quantity", "Quantity", qty, "1 to 100."), quoteLine, outOfStock, modes, box, submit);
  view.append(h("h2", null, "Your order"), form);

  let quote = null;
  let key = newKey();
  let loading = 0;

  const qtyValue = () => {
    const v = qty.value.trim();
    return /^\d+$/.test(v) && Number(v) >= 1 && Number(v) <= 100 ? Number(v) : null;
  };
  const selected = () => form.querySelector('input[name="paymentType"]:checked:not(:disabled)');
  const canSubmit = () => Boolean(quote && quote.inStock && qtyValue() === quote.quantity && selected());
  const refreshButton = () => {
    if (!form.dataset.busy) submit.disabled = !canSubmit();
  };

  function showQuote(q) {
    quote = q;
    total.textContent = `${money(q.totalAmount, q.currency)} (${q.quantity} × ${money(q.unitPrice, q.currency)})`;
    avail.replaceChildren(availability(q.availableCount));
    outOfStock.hidden = q.inStock;
    outOfStock.textContent = q.inStock ? "" : q.availableCount > 0
      ? `Out of stock for this quantity: only ${q.availableCount} left. Lower the quantity to order.`
      : "Out of stock: this product is sold out right now.";
    const before = selected() ? selected().value : null;
    const rows = [h("legend", null, "Payment")];
    for (const m of q.paymentModes || []) {
      const id = `pay-${m.type}`;
      const reasonId = `${id}-reason`;
      const label = m.type === "WALLET" ? "Wallet" : m.type;
      const extra = m.type === "WALLET" && q.walletBalance !== undefined ? ` (balance ${money(q.walletBalance, q.currency)})` : "";
      const input = h("input", { type: "radio", name: "paymentType", id, value: m.type, disabled: !m.enabled, "data-testid": id, "aria-describedby": m.enabled ? null : reasonId });
      if (m.enabled && (before === m.type || !before)) input.checked = true;
      input.addEventListener("change", refreshButton);
      rows.push(h("div", { class: "radio" }, input, h("label", { for: id }, label, h("span", { class: "muted" }, extra))));
      if (!m.enabled) {
        const why = REASON_TEXT[m.reason] || `Not available (${m.reason || "unknown reason"})`;
        const detail = m.reason === "INSUFFICIENT_FUNDS" && q.walletBalance !== undefined
          ? `: the total is ${money(q.totalAmount, q.currency)} and your balance is ${money(q.walletBalance, q.currency)}. `
          : ". ";
        rows.push(h("p", { class: "note warn", id: reasonId, "data-testid": reasonId, "data-reason": m.reason || "" },
          why, detail, m.reason === "INSUFFICIENT_FUNDS" ? h("a", { href: "/wallet" }, "Top up your wallet") : null));
      }
    }
    if (rows.length === 1) rows.push(h("p", { class: "note warn" }, "No payment method is available."));
    modes.replaceChildren(...rows);
    refreshButton();
  }

  async function loadQuote() {
    const n = qtyValue();
    if (n === null) {
      quote = null;
      total.textContent = "–";
      box.show("Quantity must be a whole number from 1 to 100.");
      refreshButton();
      return;
    }
    const mine = ++loading;
    try {
      const q = await api(`/api/checkout/quote?productId=${enc(productId)}&quantity=${n}`, { signal: ctx.signal });
      if (mine !== loading) return; // a newer quote is on its way
      if (box.textContent.startsWith("Quantity")) box.show("");
      showQuote(q);
    } catch (err) {
      if (err.name === "AbortError" || err.handled || mine !== loading) return;
      box.show(explain(err, "quote"));
    }
  }

  let timer = null;
  qty.addEventListener("input", () => {
    key = newKey();
    submit.disabled = true;
    clearTimeout(timer);
    timer = setTimeout(loadQuote, 250);
  });
  ctx.onLeave(() => clearTimeout(timer));

  handleSubmit(form, box, async () => {
    const n = qtyValue();
    const mode = selected();
    if (!n || !mode) throw new Error("choose a quantity and a payment method");
    let res;
    try {
      res = await request("/api/orders", {
        method: "POST",
        body: { productId, productQuantity: n, paymentType: mode.value },
        headers: { "Idempotency-Key": key },
        signal: ctx.signal,
      });
    } catch (err) {
      if (err.status !== 0) key = newKey(); // a network error may be retried with the same key
      if (err.status === 409) {
        quote = null; // stale: wait for the fresh quote before allowing another try
        loadQuote();
      }
      throw err;
    }
    const order = res.data;
    navigate(`/orders/${enc(order.orderId)}`, { state: { order }, message: { text: "Order accepted. Follow it below.", kind: "ok" } });
  }, { context: "order", canSubmit });

  await loadQuote();
  ctx.every(10000, loadQuote); // availability and funds stay current
}

// ---- pages: one order, live ----------------------------------------------------------------------

async function pageOrder(view, [orderId], ctx) {
  const title = heading(view, "Order");
  const path = `/api/orders/${enc(orderId)}`;
  const status = h("span", { class: "pill status-big", "data-testid": "order-status", "aria-live": "polite" }, "…");
  const live = h("span", { class: "live", "data-testid": "live-indicator", "data-state": "idle" }, "");
  const info = h("p", { "data-testid": "status-info" });
  const fail = h("p", { class: "note error", "data-testid": "fail-reason", hidden: true });
  const refund = h("p", { class: "note", "data-testid": "refund-status", hidden: true });
  const outcome = h("div", { class: "note", role: "status", tabindex: -1, "data-testid": "cancel-outcome", hidden: true });
  const problems = messageBox("order-page-error");
  const facts = h("dl", { class: "facts", "data-testid": "order-facts" });
  const timeline = h("ol", { class: "timeline", "data-testid": "timeline", "aria-label": "Saga steps, oldest first" });

  // cancel: a button while a cancel is allowed, then a confirmation in the page
  const cancelBtn = h("button", { type: "button", class: "secondary", "data-testid": "order-cancel", "aria-controls": "cancel-confirm", hidden: true }, "Cancel order");
  const confirmText = h("p", { id: "cancel-confirm-text", "data-testid": "cancel-confirm-text" });
  const confirmYes = h("button", { type: "button", class: "danger", "data-testid": "cancel-confirm-yes" }, "Yes, cancel the order");
  const confirmNo = h("button", { type: "button", class: "secondary", "data-testid": "cancel-confirm-no" }, "No, keep it");
  const confirmBox = h("div", { class: "note warn confirm", id: "cancel-confirm", role: "group", "aria-labelledby": "cancel-confirm-text", "data-testid": "cancel-confirm", hidden: true },
    confirmText, h("p", { class: "row" }, confirmYes, confirmNo));
  const cancelError = messageBox("cancel-error");
  const cancelArea = h("div", { class: "cancel-area", "data-testid": "cancel-area" }, cancelBtn, confirmBox, cancelError);

  const mapView = sagaMapView(ctx, `${path}/saga`);
  view.append(
    h("section", { class: "card", "data-testid": "order", "aria-labelledby": "status-heading" },
      h("h2", { id: "status-heading", class: "visually-hidden" }, "Status"),
      h("div", { class: "order-head" }, status, live), info, fail, refund, outcome, problems, facts, cancelArea),
    mapView.el,
    h("section", null, h("h2", null, "Saga timeline"), timeline),
    h("p", { class: "row" }, h("a", { href: "/orders" }, "All your orders"), h("a", { href: "/" }, "Back to the shop")),
  );

  let order = null;
  let steps = [];
  let names = new Map();
  let confirming = false;
  let canceling = false; // the cancel request is on its way
  let cancelKey = newKey();

  const setLive = (state, text) => {
    live.dataset.state = state;
    live.textContent = text;
  };

  function showOrder(o) {
    order = o;
    const undoing = o.orderStatus === "CANCELING" || o.orderStatus === "CANCELED";
    status.textContent = statusText(o.orderStatus);
    status.dataset.status = o.orderStatus;
    info.textContent = o.statusInfo || "";
    fail.hidden = !o.failReason;
    fail.dataset.reason = o.failReason || "";
    fail.textContent = o.failReason ? `The order failed because ${FAIL_TEXT[o.failReason] || o.failReason} (${o.failReason}).` : "";
    // a canceled order's refund is told by the cancel's outcome below
    refund.hidden = !o.refundStatus || undoing;
    refund.dataset.refund = o.refundStatus || "";
    refund.className = `note ${o.refundStatus === "REFUND_DONE" ? "ok" : o.refundStatus === "REFUND_FAILED" ? "error" : "warn"}`;
    refund.replaceChildren(o.refundStatus ? REFUND_TEXT[o.refundStatus] || o.refundStatus : "");
    if (o.refundStatus === "REFUND_DONE") refund.append(" ", h("a", { href: "/wallet" }, "See your wallet"));
    facts.replaceChildren(
      h("dt", null, "Order"), h("dd", null, h("code", { "data-testid": "order-id" }, o.orderId)),
      h("dt", null, "Product"), h("dd", null, h("a", { href: `/products/${enc(o.productId)}`, "data-testid": "order-product" }, names.get(o.productId) || o.productId)),
      h("dt", null, "Quantity"), h("dd", null, String(o.productQuantity)),
      h("dt", null, "Total"), h("dd", { "data-testid": "order-total" }, `${money(o.totalAmount, o.currency)} (${money(o.price, o.currency)} each)`),
      h("dt", null, "Paid with"), h("dd", null, o.paymentType === "WALLET" ? "Wallet" : o.paymentType),
      h("dt", null, "Ordered"), h("dd", null, when(o.createdAt)),
      h("dt", null, "Last change"), h("dd", null, when(o.updatedAt)),
    );
    title.textContent = `Order ${shortId(o.orderId)}`;
    document.title = `Order ${shortId(o.orderId)}: ${statusText(o.orderStatus)} · Tiny-Saga shop`;
    drawTimeline();
    drawCancel();
  }

  /** An answer that may be older than what the live stream already showed (the cancel's 202). */
  function showIfNewer(o) {
    if (!order || Date.parse(o.updatedAt) >= Date.parse(order.updatedAt)) showOrder(o);
  }

  const wasReserved = () => steps.some((s) => s.eventName === "INVENTORY_RESERVED" || s.eventName === "INVENTORY_RESERVERVED");

  /** The Cancel button and its confirmation while a cancel is allowed; then what the cancel undid. */
  function drawCancel() {
    if (!order) return;
    const s = order.orderStatus;
    const allowed = CANCELABLE.has(s);
    if (!allowed) confirming = false;
    cancelBtn.hidden = !allowed || confirming;
    cancelBtn.setAttribute("aria-expanded", String(confirming));
    confirmBox.hidden = !allowed || !confirming;
    confirmYes.disabled = confirmNo.disabled = canceling;
    const total = money(order.totalAmount, order.currency);
    confirmText.textContent = s === "PLACED"
      ? `Cancel this order? The ${total} you paid goes back to your wallet and the stock is given back. This cannot be undone.`
      : `Cancel this order? Anything already charged (${total}) goes back to your wallet and any reserved stock is given back. This cannot be undone.`;

    outcome.hidden = s !== "CANCELING" && s !== "CANCELED";
    outcome.dataset.state = s === "CANCELING" ? "canceling" : s === "CANCELED" ? "canceled" : "";
    if (s === "CANCELING") {
      outcome.className = "note warn";
      outcome.replaceChildren(h("strong", null, "Canceling your order…"), " ",
        "What was done is being undone: any payment goes back to your wallet and any reserved stock is given back.");
    } else if (s === "CANCELED") {
      const r = order.refundStatus;
      outcome.className = `note ${r === "REFUND_FAILED" ? "error" : "ok"}`;
      let paid;
      if (r === "REFUND_DONE") {
        paid = h("span", { "data-testid": "cancel-refund", "data-refund": r, "data-amount": String(order.totalAmount) },
          `${total} was refunded to your wallet. `, h("a", { href: "/wallet" }, "See your wallet"));
      } else if (r === "REFUND_FAILED") {
        paid = h("span", { "data-testid": "cancel-refund", "data-refund": r, "data-amount": "0" },
          `The refund of ${total} failed. Our team has been alerted and will fix it.`);
      } else if (r === "REFUND_INITIATED") {
        paid = h("span", { "data-testid": "cancel-refund", "data-refund": r, "data-amount": "0" }, `A refund of ${total} is on its way to your wallet.`);
      } else {
        paid = h("span", { "data-testid": "cancel-refund", "data-refund": "", "data-amount": "0" }, "Nothing was charged.");
      }
      outcome.replaceChildren(
        h("p", null, h("strong", null, "Your order is canceled.")),
        h("p", null, paid),
        ...(wasReserved() ? [h("p", { "data-testid": "cancel-stock" }, `The stock was given back (${order.productQuantity} × ${names.get(order.productId) || order.productId}).`)] : []));
    } else {
      outcome.replaceChildren();
    }
  }

  function drawTimeline() {
    const items = steps.map((s) =>
      h("li", { "data-testid": "timeline-step", "data-status": s.orderStatus, "data-event": s.eventName || "" },
        h("div", { class: "what" }, EVENT_TEXT[s.eventName] || s.eventName || statusText(s.orderStatus), " ",
          h("span", { class: "pill", "data-status": s.orderStatus }, s.orderStatus)),
        s.statusInfo ? h("div", null, s.statusInfo) : null,
        h("div", { class: "when" }, h("time", { datetime: s.at }, clock(s.at)), s.eventName ? h("span", { class: "event" }, ` · ${s.eventName}`) : null)),
    );
    // the live status can arrive just before its step is readable in the history
    const last = steps[steps.length - 1];
    if (order && (!last || last.orderStatus !== order.orderStatus)) {
      items.push(h("li", { "data-testid": "timeline-step", "data-status": order.orderStatus, "data-event": "", "data-pending": "true" },
        h("div", { class: "what" }, statusText(order.orderStatus), " ", h("span", { class: "pill", "data-status": order.orderStatus }, order.orderStatus)),
        h("div", { class: "when" }, h("time", { datetime: order.updatedAt }, clock(order.updatedAt)))));
    }
    timeline.replaceChildren(...(items.length ? items : [h("li", { class: "empty" }, "No steps yet.")]));
  }

  let historyBusy = false;
  let historyAgain = false;
  async function loadHistory() {
    if (historyBusy) {
      historyAgain = true;
      return;
    }
    historyBusy = true;
    try {
      do {
        historyAgain = false;
        steps = await api(`${path}/history`, { signal: ctx.signal });
        drawTimeline();
        drawCancel();
      } while (historyAgain && !ctx.left);
    } catch (err) {
      if (err.name !== "AbortError" && !err.handled) problems.show(`Could not load the steps: ${explain(err)}`);
    } finally {
      historyBusy = false;
    }
  }

  // first paint: the order (or what the order form just got back) and its steps
  const fromForm = history.state && history.state.order && history.state.order.orderId === orderId ? history.state.order : null;
  if (fromForm) showOrder(fromForm);
  try {
    const [o, hist, known] = await Promise.all([api(path, { signal: ctx.signal }), api(`${path}/history`, { signal: ctx.signal }), productNames()]);
    steps = hist;
    names = known;
    showOrder(o);
  } catch (err) {
    if (err.status === 404) {
      view.replaceChildren(view.querySelector("h1"),
        h("p", { class: "note error", role: "alert", "data-testid": "page-error" }, "There is no such order in your account."),
        h("p", null, h("a", { href: "/orders" }, "Your orders")));
      return;
    }
    throw err;
  }

  // after a FAILED saga the refund can still move (a timed-out order is refunded afterwards)
  function refundPending(o) {
    return o.orderStatus === "FAILED" &&
      (o.refundStatus === "REFUND_INITIATED" || (o.failReason === "TIMEOUT" && o.transactionId && !o.refundStatus));
  }

  const FINAL_TEXT = {
    PLACED: "Final: the saga is complete.",
    CANCELED: "Final: the order is canceled.",
    ON_THE_WAY: "The order is on its way.",
    DELIVERED: "Final: the order was delivered.",
  };

  function finished(o) {
    setLive("done", FINAL_TEXT[o.orderStatus] || "Final: the saga has ended.");
    loadHistory();
    if (refundPending(o)) watchRefund();
  }

  function watchRefund() {
    let tries = 0;
    setLive("live", "Waiting for the refund…");
    const tick = async () => {
      if (ctx.left) return;
      tries += 1;
      try {
        const o = await api(path, { signal: ctx.signal });
        const changed = o.refundStatus !== order.refundStatus;
        showOrder(o);
        if (changed) loadHistory();
        if (!refundPending(o)) {
          setLive("done", "Final: the saga has ended.");
          return;
        }
      } catch (err) {
        if (err.name === "AbortError" || err.handled) return;
      }
      if (tries < 60) setTimeout(tick, 3000);
      else setLive("offline", "The refund is still in progress; reload later.");
    };
    setTimeout(tick, 2000);
  }

  // follow the saga live: first the current state, then one event per change; the stream ends
  // once no step is in flight (the browser would reconnect, so close it ourselves). A cancel opens
  // it again if it had ended (a PLACED order): CANCELING, then CANCELED.
  let es = null;
  let failures = 0;
  let reopen = null;
  ctx.onLeave(() => {
    if (es) es.close();
    clearTimeout(reopen);
  });

  function follow() {
    if (ctx.left || es) return;
    clearTimeout(reopen);
    setLive("live", "Following live…");
    const source = new EventSource(`${path}/events`);
    es = source;
    source.addEventListener("order-status", (ev) => {
      if (es !== source) return;
      failures = 0;
      let o;
      try {
        o = JSON.parse(ev.data);
      } catch {
        return;
      }
      problems.show("");
      setLive("live", "Following live…");
      showOrder(o);
      mapView.follow();
      if (STREAM_ENDS.has(o.orderStatus)) {
        source.close();
        es = null;
        finished(o);
      } else {
        loadHistory();
      }
    });
    source.addEventListener("error", async () => {
      if (es !== source) return;
      if (source.readyState === EventSource.CONNECTING) {
        setLive("offline", "Connection lost; reconnecting…");
        return;
      }
      // the stream was refused (401, 404, 429, 503 ...): ask once with a plain request to know why
      source.close();
      es = null;
      failures += 1;
      let wait = Math.min(30, 2 ** failures);
      try {
        const o = await api(path, { signal: ctx.signal });
        showOrder(o);
        if (STREAM_ENDS.has(o.orderStatus)) {
          finished(o);
          return;
        }
      } catch (err) {
        if (err.name === "AbortError" || err.handled) return;
        if (err.status === 404) {
          problems.show("There is no such order in your account.");
          setLive("offline", "");
          return;
        }
        if (err.status === 429) wait = retrySeconds(err.retryAfter);
        problems.show(explain(err));
      }
      setLive("offline", `Live updates paused; retrying in ${wait} s…`);
      reopen = setTimeout(follow, wait * 1000);
    });
  }

  cancelBtn.addEventListener("click", () => {
    confirming = true;
    cancelError.show("");
    drawCancel();
    confirmNo.focus();
  });
  confirmNo.addEventListener("click", () => {
    confirming = false;
    drawCancel();
    cancelBtn.focus();
  });
  confirmYes.addEventListener("click", async () => {
    if (canceling) return;
    canceling = true;
    confirmYes.setAttribute("aria-busy", "true");
    drawCancel();
    try {
      const o = await api(`${path}/cancel`, { method: "POST", headers: { "Idempotency-Key": cancelKey }, signal: ctx.signal });
      confirming = false;
      showIfNewer(o);
      loadHistory();
      mapView.follow();
      follow(); // the stream had ended (a PLACED order) or was never opened: follow the cancel live
      if (!outcome.hidden) outcome.focus(); // the button just pressed is gone: keyboard focus goes to what happens now
    } catch (err) {
      if (err.name === "AbortError" || err.handled) return;
      if (err.status !== 0) cancelKey = newKey(); // a network error may be retried with the same key
      confirming = false;
      if (err.status === 409) {
        cancelError.show(err.problem.detail ? `Cannot cancel: ${err.problem.detail}.` : "This order can no longer be canceled.");
        try {
          showOrder(await api(path, { signal: ctx.signal }));
          loadHistory();
        } catch {
          /* the live stream or the next visit shows it */
        }
      } else {
        cancelError.show(explain(err));
      }
    } finally {
      canceling = false;
      confirmYes.removeAttribute("aria-busy");
      drawCancel();
      if (!cancelBtn.hidden && !confirming) cancelBtn.focus();
    }
  });

  mapView.follow();
  if (STREAM_ENDS.has(order.orderStatus)) finished(order);
  else follow();
}

// ---- drawings in plain SVG -----------------------------------------------------------------------

const SVG_NS = "http://www.w3.org/2000/svg";
let svgIds = 0; // each drawing's own ids (arrow markers, titles)

/** Build an SVG element, as h() builds HTML ones (attrs; text as "text"; children nodes or text). */
function svg(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "text") el.textContent = v;
    else el.setAttribute(k, String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function seconds(v) {
  if (v === null || v === undefined || !Number.isFinite(Number(v))) return "–";
  const n = Number(v);
  if (n < 1) return `${Math.round(n * 1000)} ms`;
  if (n < 120) return `${n.toFixed(n < 10 ? 2 : 1)} s`;
  return `${Math.floor(n / 60)} min ${Math.round(n % 60)} s`;
}

/** The smallest 1, 2 or 5 × 10^k at least v (the top of a chart's scale). */
function niceCeil(v) {
  if (!(v > 0)) return 0;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

/** A line chart of samples over the last spanMs: series [{name, cls, values: [[t, v or null]]}]. */
function lineChart({ label, series, format, spanMs, now, width = 480, height = 170 }) {
  const pad = { l: 58, r: 12, t: 12, b: 24 };
  const iw = width - pad.l - pad.r;
  const ih = height - pad.t - pad.b;
  const finite = series.flatMap((s) => s.values.map((p) => p[1])).filter((v) => v !== null && Number.isFinite(v));
  const top = niceCeil(Math.max(0, ...finite)) || 1;
  const x = (t) => pad.l + iw * (1 - (now - t) / spanMs);
  const y = (v) => pad.t + ih * (1 - v / top);
  const id = `chart-${++svgIds}`;
  const latest = series.map((s) => {
    const last = [...s.values].reverse().find((p) => p[1] !== null);
    return `${s.name} ${last ? format(last[1]) : "no figure"}`;
  });
  const grid = [0, top / 2, top].map((v) => [
    svg("line", { class: "grid", x1: pad.l, x2: width - pad.r, y1: y(v), y2: y(v) }),
    svg("text", { class: "tick", x: pad.l - 6, y: y(v) + 4, "text-anchor": "end", text: format(v) }),
  ]);
  const lines = series.map((s) => {
    let d = "";
    let pen = false;
    const shown = s.values.filter((p) => now - p[0] <= spanMs);
    for (const [t, v] of shown) {
      if (v === null || !Number.isFinite(v)) {
        pen = false;
        continue;
      }
      d += `${pen ? "L" : "M"}${x(t).toFixed(1)},${y(v).toFixed(1)}`;
      pen = true;
    }
    const last = [...shown].reverse().find((p) => p[1] !== null && Number.isFinite(p[1]));
    return svg("g", { class: `series ${s.cls || ""}`, "data-series": s.name },
      svg("path", { d: d || `M${pad.l},${y(0)}`, fill: "none" }),
      last ? svg("circle", { cx: x(last[0]), cy: y(last[1]), r: 3 }) : null);
  });
  return svg("svg", {
    class: "chart", viewBox: `0 0 ${width} ${height}`, role: "img", "aria-labelledby": `${id}-t`,
    "data-testid": "chart", "data-points": String(Math.max(0, ...series.map((s) => s.values.length))),
  },
  svg("title", { id: `${id}-t`, text: `${label}: ${latest.join(", ")}` }),
  grid,
  svg("text", { class: "tick", x: pad.l, y: height - 6, text: `−${Math.round(spanMs / 60000)} min` }),
  svg("text", { class: "tick", x: width - pad.r, y: height - 6, "text-anchor": "end", text: "now" }),
  lines);
}

/** Horizontal bars: items [{label, value, text, cls}], the longest bar the largest value. */
function barChart({ label, items, width = 480 }) {
  const rowH = 30;
  const labelW = 190;
  const height = Math.max(1, items.length) * rowH + 8;
  const top = Math.max(1, ...items.map((i) => i.value));
  const id = `chart-${++svgIds}`;
  const barW = width - labelW - 140;
  return svg("svg", { class: "chart bars", viewBox: `0 0 ${width} ${height}`, role: "img", "aria-labelledby": `${id}-t`, "data-testid": "chart" },
    svg("title", { id: `${id}-t`, text: `${label}: ${items.map((i) => `${i.label} ${i.text}`).join("; ") || "none"}` }),
    items.map((item, n) => {
      const yy = 4 + n * rowH;
      const w = item.value > 0 ? Math.max(3, (barW * item.value) / top) : 0;
      return svg("g", { class: `bar ${item.cls || ""}` },
        svg("text", { class: "bar-label", x: labelW - 8, y: yy + 19, "text-anchor": "end", text: item.label }),
        svg("rect", { x: labelW, y: yy + 5, width: w, height: rowH - 10, rx: 3 }),
        svg("text", { class: "bar-value", x: labelW + w + 6, y: yy + 19, text: item.text }));
    }));
}

// ---- the saga map: the declared saga, and where one order is in it -------------------------------

let definitionCache = null;
/** The saga as the code declares it (GET /api/saga/definition), fetched once per page load. */
function sagaDefinition() {
  if (!definitionCache) {
    definitionCache = api("/api/saga/definition");
    definitionCache.catch(() => {
      definitionCache = null;
    });
  }
  return definitionCache;
}

// Where each kind of step is drawn: the forward path (with the order's life after it), the
// compensations and the cancel below it, what follows every outcome, and the user's own steps.
const MAP_LANES = [
  { title: "The saga, then the order's life", kinds: ["action", "lifecycle"] },
  { title: "Compensations and the cancel", kinds: ["compensation", "cancel"] },
  { title: "Following every outcome", kinds: ["tracking", "notification"] },
  { title: "Before any order (the user's own steps)", kinds: ["setup"] },
];
const STATE_TEXT = { done: "done", current: "in progress", failed: "failed", unknown: "unknown: its service did not answer", not_run: "not run" };
const MAP = { colW: 164, nodeW: 142, nodeH: 50, laneH: 132, left: 16, top: 46 };

/** Where every node goes, from the definition: each step in its kind's lane, in the order the
 * definition declares them; a compensation under the step it undoes; each order status an arrow
 * ends in right after the step whose success it is, else at the end of the compensations' lane. */
function mapLayout(def) {
  const byName = new Map(def.steps.map((s) => [s.name, s]));
  const laneOf = (s) => {
    const i = MAP_LANES.findIndex((l) => l.kinds.includes(s.kind));
    return i === -1 ? 2 : i; // a kind this page does not know: drawn with what follows the outcomes
  };
  const nodes = new Map(); // name -> {name, lane, col, status?}
  const used = MAP_LANES.map(() => new Set());
  const place = (name, lane, col, extra = {}) => {
    while (used[lane].has(col)) col += 1;
    used[lane].add(col);
    nodes.set(name, { name, lane, col, ...extra });
  };
  const successOf = new Map(); // step -> the status its success ends in, when an arrow says so
  for (const e of def.edges) if (e.toStatus && byName.get(e.from) && byName.get(e.from).leadsTo === e.to) successOf.set(e.from, e.to);
  let col = 0;
  for (const s of def.steps.filter((x) => laneOf(x) === 0)) {
    place(s.name, 0, col++, { step: s });
    if (successOf.has(s.name)) place(successOf.get(s.name), 0, col++, { status: true });
  }
  for (const lane of [1, 2, 3]) {
    const steps = def.steps.filter((x) => laneOf(x) === lane);
    for (const s of steps) {
      const undoes = def.steps.find((f) => f.compensation === s.name && nodes.has(f.name));
      if (undoes) place(s.name, lane, nodes.get(undoes.name).col, { step: s });
    }
    for (const s of steps) if (!nodes.has(s.name)) place(s.name, lane, 0, { step: s });
  }
  for (const e of def.edges) {
    if (!e.toStatus || nodes.has(e.to)) continue;
    const from = nodes.get(e.from);
    place(e.to, from && from.lane === 2 ? 2 : 1, 0, { status: true });
  }
  const cols = Math.max(...[...nodes.values()].map((n) => n.col)) + 1;
  return { nodes, byName, width: MAP.left * 2 + cols * MAP.colW - (MAP.colW - MAP.nodeW), height: MAP.top + MAP_LANES.length * MAP.laneH - 40 };
}

/** Whether the order went along arrow `e`: out of a step that ran, into a step that ran; or into
 * the status reached, by the step's success (the status its success leads to) when it is done, by
 * its failure when it failed. */
function tookEdge(e, source, stateOf, reached) {
  const from = stateOf.get(e.from);
  if (from !== "done" && from !== "failed") return false;
  if (!e.toStatus) return ["done", "failed", "current"].includes(stateOf.get(e.to));
  const success = !source.leadsTo || e.to.split(" or ").includes(source.leadsTo);
  return reached(e.to) && from === (success ? "done" : "failed");
}

/** The map as SVG: `map` (GET .../saga) gives each step's state and the status reached; without
 * it, the saga as declared. */
function drawSagaMap(def, map) {
  const L = mapLayout(def);
  const id = `map-${++svgIds}`;
  const at = (n) => ({ x: MAP.left + n.col * MAP.colW, y: MAP.top + n.lane * MAP.laneH, w: MAP.nodeW, h: MAP.nodeH });
  const stateOf = new Map((map ? map.steps : []).map((s) => [s.step, s.state]));
  const reached = (label) => Boolean(map) && label.split(" or ").includes(map.orderStatus);
  const events = new Set(def.steps.flatMap((s) => s.outcomes));
  const edges = def.edges.map((e) => {
    const a = L.nodes.get(e.from);
    const b = L.nodes.get(e.to);
    if (!a || !b) return null;
    const p = at(a);
    const q = at(b);
    let d;
    if (a.lane === b.lane && b.col === a.col + 1) {
      d = `M${p.x + p.w},${p.y + p.h / 2} L${q.x - 2},${q.y + q.h / 2}`;
    } else if (a.lane === b.lane) {
      const dip = 18 + 7 * Math.abs(b.col - a.col);
      d = `M${p.x + p.w / 2},${p.y + p.h} C${p.x + p.w / 2},${p.y + p.h + dip} ${q.x + q.w / 2},${q.y + q.h + dip} ${q.x + q.w / 2},${q.y + q.h + 2}`;
    } else if (a.lane < b.lane) {
      d = `M${p.x + p.w / 2},${p.y + p.h} C${p.x + p.w / 2},${p.y + p.h + 44} ${q.x + q.w / 2},${q.y - 44} ${q.x + q.w / 2},${q.y - 2}`;
    } else {
      d = `M${p.x + p.w / 2},${p.y} C${p.x + p.w / 2},${p.y - 44} ${q.x + q.w / 2},${q.y + q.h + 44} ${q.x + q.w / 2},${q.y + q.h + 2}`;
    }
    const taken = map && tookEdge(e, L.byName.get(e.from), stateOf, reached);
    return svg("path", { class: `edge${e.dashed ? " dashed" : ""}${e.to === "track" ? " to-track" : ""}${taken ? " taken" : ""}`, d, "marker-end": `url(#${id}-arrow)`, "data-testid": "map-edge", "data-event": e.event, "data-from": e.from, "data-to": e.to, "data-taken": String(Boolean(taken)) },
      svg("title", { text: `${e.from} → ${e.to}: ${e.event}` }));
  });
  const nodes = [...L.nodes.values()].map((n) => {
    const r = at(n);
    if (n.status) {
      const hit = reached(n.name);
      return svg("g", { class: `node status${hit ? " reached" : ""}${/FAILED/.test(n.name) ? " bad" : ""}`, "data-testid": "map-status", "data-status": n.name, "data-reached": String(hit) },
        svg("rect", { x: r.x, y: r.y + 6, width: r.w, height: r.h - 12, rx: (r.h - 12) / 2 }),
        svg("text", { class: "name", x: r.x + r.w / 2, y: r.y + r.h / 2 + 4, "text-anchor": "middle", text: n.name.replace(" or ", " / ") }),
        svg("title", { text: hit ? `the order is ${map.orderStatus}` : `order status ${n.name}` }));
    }
    const s = n.step;
    const state = map ? stateOf.get(s.name) || "declared" : "declared";
    const caption = s.triggers.filter((t) => !events.has(t) && t !== "USER_REGISTERED")[0];
    return svg("g", { class: `node step state-${state} kind-${s.kind}`, "data-testid": "map-step", "data-step": s.name, "data-state": state, "data-participant": s.participant },
      caption ? svg("text", { class: "trigger", x: r.x + 2, y: r.y - 6, text: caption.length > 30 ? caption.replace("/api/admin/orders/{orderId}", "…").replace("/api/orders/{orderId}", "…") : caption }) : null,
      svg("rect", { x: r.x, y: r.y, width: r.w, height: r.h, rx: 7 }),
      svg("text", { class: "name", x: r.x + 9, y: r.y + 20, text: s.name }),
      svg("text", { class: "who", x: r.x + 9, y: r.y + 38, text: map && state !== "declared" ? `${s.participant} · ${STATE_TEXT[state] ? STATE_TEXT[state].split(":")[0] : state}` : s.participant }),
      svg("title", { text: `${s.name} (${s.participant}, ${s.kind}): ${s.does}${map ? ` — ${STATE_TEXT[state] || state}` : ""}` }));
  });
  const lanes = MAP_LANES.map((l, i) => svg("text", { class: "lane", x: MAP.left, y: MAP.top + i * MAP.laneH - 24, text: l.title }));
  const summary = map
    ? `The saga of order ${map.orderId}: ${statusText(map.orderStatus)}${map.current.length ? `, waiting for ${map.current.join(" and ")}` : ""}.`
    : `The saga as declared: ${def.steps.length} steps.`;
  return svg("svg", { class: "saga-map-svg", viewBox: `0 0 ${L.width} ${L.height}`, role: "img", "aria-labelledby": `${id}-t`, "data-testid": "saga-map-svg", "data-steps": String(def.steps.length) },
    svg("title", { id: `${id}-t`, text: summary }),
    svg("defs", null, svg("marker", { id: `${id}-arrow`, viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
      svg("path", { d: "M0,0 L10,5 L0,10 z", class: "arrow-head" }))),
    lanes, edges, nodes);
}

function mapLegend() {
  return h("ul", { class: "legend", "aria-label": "What the colours mean" },
    ["done", "current", "failed", "unknown", "not_run"].map((s) =>
      h("li", null, h("span", { class: `swatch state-${s}`, "aria-hidden": "true" }), STATE_TEXT[s].split(":")[0])));
}

/** The saga map of one order, live: the drawing, the steps' states as a list (for screen readers),
 * and beside it what each service did and when. `path`: the owner's or the admin's map route;
 * `onMap(m)` is told each map read. */
function sagaMapView(ctx, path, { onMap = () => {} } = {}) {
  const drawing = h("div", { class: "map-wrap", "data-testid": "saga-map-drawing" }, h("p", { class: "muted" }, "Drawing the saga…"));
  const stepsList = h("ul", { class: "visually-hidden", "data-testid": "map-steps-list" });
  const records = h("ol", { class: "map-timeline", "data-testid": "map-timeline", "aria-label": "What each service did, oldest first" });
  const unknown = h("p", { class: "note warn", "data-testid": "map-unknown", hidden: true });
  const live = h("span", { class: "live", "data-testid": "map-live", "data-state": "idle" });
  const mode = h("p", { class: "muted small-text", "data-testid": "map-mode" });
  const box = messageBox("saga-map-error");
  const el = h("section", { class: "saga-map", "data-testid": "saga-map", "aria-labelledby": "saga-map-h" },
    h("h2", { id: "saga-map-h" }, "Saga map"),
    h("p", { class: "muted small-text" }, "Every step of the saga as the code declares it; where this order is, and what each service did for it and when, from each service's own records. ", live),
    mode, box, unknown,
    h("div", { class: "map-grid" },
      h("div", { class: "map-main" }, drawing, mapLegend(), stepsList),
      h("div", { class: "map-side" }, h("h3", null, "What each service did"), records)));
  let def = null;
  let timer = null;
  let busy = false;
  let again = false;
  let lastLen = -1;
  let stable = 0;
  let polls = 0;
  let current = null;

  function show(m) {
    current = m;
    drawing.replaceChildren(drawSagaMap(def, m));
    drawing.dataset.orderStatus = m.orderStatus;
    stepsList.replaceChildren(...m.steps.map((s) => h("li", null, `${s.step} (${s.participant}): ${STATE_TEXT[s.state] || s.state}`)));
    const gone = m.services.filter((s) => s.state === "unknown");
    unknown.hidden = !gone.length;
    unknown.textContent = gone.length
      ? `Not answering: ${gone.map((s) => `${s.service} (${s.reason})`).join(", ")}. Their steps show as unknown; the map is refreshed until they answer.`
      : "";
    records.replaceChildren(...(m.timeline.length ? m.timeline.map((t) =>
      h("li", { "data-testid": "map-record", "data-service": t.service, "data-step": t.step, "data-state": t.state },
        h("div", { class: "when" }, h("time", { datetime: t.at }, clock(t.at)), " · ", h("strong", null, t.service), " · ", t.step,
          t.state !== "done" ? [" ", h("span", { class: `pill state-${t.state}` }, t.state)] : null),
        h("div", { class: "what" }, t.what),
        t.detail ? h("div", { class: "small-text muted" }, t.detail) : null)) : [h("li", { class: "empty" }, "No record yet.")]));
  }

  function moving(m) {
    if (m.timeline.length !== lastLen) {
      lastLen = m.timeline.length;
      stable = 0;
    } else {
      stable += 1;
    }
    const underway = !m.atRest || m.steps.some((s) => s.state === "current") || m.services.some((s) => s.state === "unknown");
    return (underway || stable < 3) && polls < 400;
  }

  async function refresh() {
    if (busy) {
      again = true;
      return;
    }
    busy = true;
    try {
      do {
        again = false;
        polls += 1;
        if (!def) {
          def = await sagaDefinition();
          mode.dataset.mode = def.mode;
          mode.textContent = def.mode === "orchestration"
            ? "Run by orchestration: Order sends each step to its participant as a command (saga-commands)."
            : "Run by choreography: each participant reacts to the events that start its steps.";
        }
        const m = await api(path, { signal: ctx.signal });
        box.show("");
        show(m);
        onMap(m);
      } while (again && !ctx.left);
    } catch (err) {
      if (err.name === "AbortError" || err.handled || ctx.left) return;
      box.show(err.status === 404 ? "There is no such order." : `Could not read the saga map: ${explain(err)}`);
      if (!def) drawing.replaceChildren(h("p", { class: "empty" }, "The map cannot be drawn right now."));
    } finally {
      busy = false;
    }
  }

  async function tick() {
    timer = null;
    if (ctx.left) return;
    await refresh();
    if (ctx.left) return;
    if (!current || moving(current)) {
      live.dataset.state = "live";
      live.textContent = "Following live…";
      timer = setTimeout(tick, 2500);
    } else {
      live.dataset.state = "done";
      live.textContent = "Up to date: nothing is under way.";
    }
  }

  /** Follow the order (again): refresh now, then every 2.5 s while anything is under way. */
  function follow() {
    stable = 0;
    if (timer) clearTimeout(timer);
    tick();
  }
  ctx.onLeave(() => clearTimeout(timer));
  return { el, refresh, follow };
}

// ---- pages: lists --------------------------------------------------------------------------------

function orderStatusCell(o) {
  return h("td", null, statusPill(o),
    o.refundStatus ? [" ", h("span", { class: "pill", "data-refund": o.refundStatus }, o.refundStatus === "REFUND_DONE" ? "Refunded" : o.refundStatus === "REFUND_FAILED" ? "Refund failed" : "Refunding")] : null,
    o.failReason ? h("div", { class: "small-text muted" }, o.failReason) : null);
}

async function pageOrders(view, _params, ctx) {
  heading(view, "Your orders");
  if (!requireSignIn()) return;
  const { wrap, tbody } = table("orders-table", ["Order", "Product", h("th", { scope: "col", class: "num" }, "Qty"), h("th", { scope: "col", class: "num" }, "Total"), "Status", "Ordered"], "Your orders, newest first");
  const empty = h("p", { class: "empty", "data-testid": "orders-empty", hidden: true }, "No orders yet. ", h("a", { href: "/" }, "Go shopping"), ".");
  const more = h("button", { type: "button", class: "secondary", "data-testid": "orders-more", hidden: true }, "Load more");
  const box = messageBox("orders-error");
  view.append(wrap, empty, box, h("p", null, more));
  let cursor = null;
  let pages = 0;
  const names = await productNames();

  const row = (o) => h("tr", { "data-testid": "order-row", "data-order-id": o.orderId, "data-status": o.orderStatus },
    h("td", null, h("a", { href: `/orders/${enc(o.orderId)}`, "aria-label": `Order ${o.orderId}` }, h("code", { class: "short" }, shortId(o.orderId)))),
    h("td", null, names.get(o.productId) || o.productId),
    h("td", { class: "num" }, String(o.productQuantity)),
    h("td", { class: "num" }, money(o.totalAmount, o.currency)),
    orderStatusCell(o),
    h("td", null, when(o.createdAt)));

  async function load(reset) {
    const url = `/api/orders?limit=20${!reset && cursor ? `&cursor=${enc(cursor)}` : ""}`;
    const { data, res } = await request(url, { signal: ctx.signal });
    if (reset) {
      tbody.replaceChildren();
      pages = 0;
    }
    pages += 1;
    tbody.append(...data.map(row));
    cursor = res.headers.get("X-Next-Cursor");
    more.hidden = !cursor;
    empty.hidden = tbody.children.length > 0;
    wrap.hidden = tbody.children.length === 0;
    return data;
  }
  more.addEventListener("click", async () => {
    more.disabled = true;
    try {
      await load(false);
    } catch (err) {
      if (!err.handled && err.name !== "AbortError") box.show(explain(err));
    } finally {
      more.disabled = false;
    }
  });
  await load(true);
  // orders still in flight: keep the first page fresh
  ctx.every(4000, async () => {
    const moving = [...tbody.rows].some((tr) => tr.dataset.status && !STREAM_ENDS.has(tr.dataset.status));
    if (pages !== 1 || !moving) return;
    try {
      await load(true);
    } catch {
      /* next time */
    }
  });
}

async function pageWallet(view, _params, ctx) {
  heading(view, "Wallet");
  if (!requireSignIn()) return;
  const balance = h("strong", { class: "price", "data-testid": "wallet-balance" }, "…");
  const amount = h("input", { type: "text", name: "amount", inputmode: "decimal", autocomplete: "off", required: true, "data-testid": "topup-amount", placeholder: "e.g. 50.00" });
  const box = messageBox("topup-error");
  const form = h("form", { "data-testid": "topup-form", novalidate: true },
    field("topup-amount", "Amount to add", amount, "From 0.01 to 10,000, at most 2 decimals."),
    box,
    h("button", { type: "submit", "data-testid": "topup-submit" }, "Top up"));
  const { wrap, tbody } = table("ledger", ["Date", "Type", "Description", "Order", "Status", h("th", { scope: "col", class: "num" }, "Amount")], "Wallet ledger, newest first");
  const empty = h("p", { class: "empty", "data-testid": "ledger-empty", hidden: true }, "No transactions yet.");
  view.append(
    h("div", { class: "two-col" },
      h("section", { class: "card", "aria-labelledby": "bal-h" }, h("h2", { id: "bal-h" }, "Balance"), h("p", null, balance)),
      h("section", { class: "card", "aria-labelledby": "top-h" }, h("h2", { id: "top-h" }, "Top up"), form)),
    h("h2", null, "Ledger"), wrap, empty);

  let currency = "USD";
  function showBalance(value) {
    balance.textContent = money(value, currency);
    balance.dataset.amount = String(value);
  }
  async function loadWallet() {
    const w = await api("/api/wallet", { signal: ctx.signal });
    currency = w.currency || currency;
    showBalance(w.balance);
  }
  async function loadLedger() {
    const txs = await api("/api/wallet/transactions", { signal: ctx.signal });
    tbody.replaceChildren(...txs.map((t) => {
      const sign = t.transactionType === "PAYMENT" ? "−" : "+";
      return h("tr", { "data-testid": "ledger-row", "data-type": t.transactionType, "data-status": t.paymentStatus },
        h("td", null, when(t.timestamp)),
        h("td", null, t.transactionType),
        h("td", null, t.description || ""),
        h("td", null, t.orderId ? h("a", { href: `/orders/${enc(t.orderId)}`, "aria-label": `Order ${t.orderId}` }, h("code", { class: "short" }, shortId(t.orderId))) : "–"),
        h("td", null, t.paymentStatus),
        h("td", { class: "num" }, `${sign}${money(t.amount, t.currency)}`));
    }));
    empty.hidden = txs.length > 0;
    wrap.hidden = txs.length === 0;
  }

  let key = newKey();
  amount.addEventListener("input", () => {
    key = newKey();
    amount.removeAttribute("aria-invalid");
  });
  handleSubmit(form, box, async () => {
    const v = amount.value.trim().replace(/,/g, "");
    if (!MONEY_RE.test(v) || Number(v) <= 0 || Number(v) > 10000) {
      amount.setAttribute("aria-invalid", "true");
      amount.focus();
      throw new ApiError(422, { detail: "Enter an amount from 0.01 to 10,000 with at most 2 decimals." });
    }
    let r;
    try {
      r = await api("/api/wallet/deposits", { method: "POST", body: { amount: Number(v) }, headers: { "Idempotency-Key": key }, signal: ctx.signal });
    } catch (err) {
      if (err.status !== 0) key = newKey();
      markInvalid(form, err);
      throw err;
    }
    key = newKey();
    showBalance(r.balance);
    amount.value = "";
    box.show(`Added ${money(v, currency)}. Your balance is ${money(r.balance, currency)}.`, "ok");
    await loadLedger();
  });
  await Promise.all([loadWallet(), loadLedger()]);
  ctx.every(10000, () => Promise.all([loadWallet(), loadLedger()]).catch(() => {}));
}

async function pageInbox(view, _params, ctx) {
  heading(view, "Notifications");
  if (!requireSignIn()) return;
  view.append(h("p", { class: "muted" }, "What we sent you by email and SMS about your orders."));
  const list = h("ul", { class: "stack inbox", "data-testid": "inbox" });
  const empty = h("p", { class: "empty", "data-testid": "inbox-empty", hidden: true }, "No notifications yet.");
  view.append(list, empty);
  async function load() {
    const items = await api("/api/notifications", { signal: ctx.signal });
    // the same message goes out by email and by SMS: show it once with both channels
    const groups = [];
    const byKey = new Map();
    for (const n of items) {
      const k = `${n.orderId}|${n.type}|${n.message}`;
      if (!byKey.has(k)) {
        const g = { ...n, channels: [] };
        byKey.set(k, g);
        groups.push(g);
      }
      byKey.get(k).channels.push(n.channel);
    }
    list.replaceChildren(...groups.map((g) =>
      h("li", { class: "card", "data-testid": "notification", "data-type": g.type, "data-order-id": g.orderId || "" },
        h("p", { class: "row small-text muted" }, h("span", null, when(g.createdAt)),
          h("span", null, `Sent by ${g.channels.map((c) => (c === "EMAIL" ? "email" : c === "SMS" ? "SMS" : c)).join(" and ")}`)),
        h("p", null, h("strong", null, g.type.replace(/_/g, " ").toLowerCase().replace(/^\w/, (c) => c.toUpperCase()))),
        h("p", null, g.message),
        g.orderId ? h("p", null, h("a", { href: `/orders/${enc(g.orderId)}` }, "See the order")) : null)));
    empty.hidden = groups.length > 0;
  }
  await load();
  ctx.every(10000, () => load().catch(() => {}));
}

// ---- page: admin ---------------------------------------------------------------------------------

async function pageAdmin(view, _params, ctx) {
  heading(view, "Admin");
  if (!requireSignIn()) return;
  const refreshAll = h("button", { type: "button", class: "secondary", "data-testid": "admin-refresh" }, "Refresh everything");
  const denied = messageBox("admin-denied");
  view.append(h("p", { class: "row" }, h("span", { class: "muted" }, "Operator views of the shop and its sagas. Live figures on "),
    h("a", { href: "/admin/operations" }, "Operations"), h("span", { class: "muted" }, "; every step of the saga on "), h("a", { href: "/admin/saga" }, "the saga map"), refreshAll), denied);
  const nav = h("nav", { "aria-label": "Admin sections" }, h("ul", { class: "row", style: "list-style:none;padding:0" },
    [["adm-products", "Products"], ["adm-sagas", "Sagas"], ["adm-alerts", "Refund alerts"], ["adm-dlq", "Dead letters"], ["adm-mail", "Mail"], ["adm-sms", "SMS"]]
      .map(([id, t]) => h("li", null, h("a", { href: `#${id}` }, t)))));
  view.append(nav);

  function section(id, testid, title) {
    const body = h("div");
    const box = messageBox(`${testid}-error`);
    const sec = h("section", { id, "data-testid": testid, "aria-labelledby": `${id}-h` }, h("h2", { id: `${id}-h` }, title), box, body);
    view.append(sec);
    return { sec, body, box };
  }

  // products
  const products = section("adm-products", "admin-products", "Products and stock");
  const prodTable = table("admin-products-table", ["Product", "Name", "Type", h("th", { scope: "col", class: "num" }, "Price"), "Stock"], "Products");
  products.body.append(prodTable.wrap);

  function productRow(p) {
    const input = h("input", { type: "number", name: "availableCount", min: 0, max: 1000000, step: 1, value: p.availableCount, "aria-label": `Stock of ${p.name}`, "data-testid": "stock-input" });
    const msg = h("span", { class: "small-text", role: "status", "data-testid": "stock-message" });
    const form = h("form", { class: "inline-form", "data-testid": "stock-form", novalidate: true },
      input, h("button", { type: "submit", class: "small", "data-testid": "stock-save" }, "Save", h("span", { class: "visually-hidden" }, ` stock of ${p.name}`)), msg);
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const btn = form.querySelector("button");
      const v = input.value.trim();
      if (!/^\d+$/.test(v) || Number(v) > 1000000) {
        msg.className = "small-text error-text";
        msg.textContent = "A whole number from 0 to 1,000,000.";
        input.setAttribute("aria-invalid", "true");
        return;
      }
      input.removeAttribute("aria-invalid");
      btn.disabled = true;
      try {
        const r = await api(`/api/admin/products/${enc(p.productId)}/stock`, { method: "PUT", body: { availableCount: Number(v) }, signal: ctx.signal });
        input.value = r.availableCount;
        msg.className = "small-text";
        msg.textContent = `Saved: ${r.availableCount}.`;
      } catch (err) {
        if (err.handled || err.name === "AbortError") return;
        msg.className = "small-text error-text";
        msg.textContent = explain(err, "admin");
      } finally {
        btn.disabled = false;
      }
    });
    return h("tr", { "data-testid": "admin-product-row", "data-product-id": p.productId },
      h("td", null, h("code", null, p.productId)), h("td", null, p.name), h("td", null, p.type),
      h("td", { class: "num" }, money(p.price, p.currency)), h("td", null, form));
  }
  async function loadProducts() {
    const list = await api("/api/products", { signal: ctx.signal });
    prodTable.tbody.replaceChildren(...list.map(productRow));
  }

  // create product
  const cp = {
    productId: h("input", { type: "text", name: "productId", maxlength: 64, pattern: "[A-Za-z0-9][A-Za-z0-9._-]{0,63}", "data-testid": "new-product-id" }),
    name: h("input", { type: "text", name: "name", required: true, maxlength: 120, "data-testid": "new-product-name" }),
    type: h("input", { type: "text", name: "type", required: true, maxlength: 40, "data-testid": "new-product-type" }),
    price: h("input", { type: "text", name: "price", inputmode: "decimal", required: true, "data-testid": "new-product-price" }),
    stock: h("input", { type: "number", name: "availableCount", min: 0, max: 1000000, step: 1, value: 0, required: true, "data-testid": "new-product-stock" }),
  };
  const cpBox = messageBox("create-product-message");
  const cpForm = h("form", { class: "card", "data-testid": "create-product-form", novalidate: true },
    h("h3", null, "Add a product"),
    h("div", { class: "form-grid" },
      field("np-name", "Name", cp.name),
      field("np-type", "Category", cp.type),
      field("np-price", "Price", cp.price, "For example 19.99."),
      field("np-stock", "Stock", cp.stock),
      field("np-id", "Product id (optional)", cp.productId, "Letters, digits, '.', '_' or '-'. Left empty: one is made up.")),
    cpBox,
    h("button", { type: "submit", "data-testid": "create-product-submit" }, "Add product"));
  products.body.append(cpForm);
  handleSubmit(cpForm, cpBox, async () => {
    const price = cp.price.value.trim();
    const stock = cp.stock.value.trim();
    if (!cp.name.value.trim() || !cp.type.value.trim()) throw new ApiError(422, { detail: "Name and category are required." });
    if (!MONEY_RE.test(price) || Number(price) <= 0) throw new ApiError(422, { detail: "The price must be a positive amount with at most 2 decimals." });
    if (!/^\d+$/.test(stock)) throw new ApiError(422, { detail: "The stock must be a whole number, 0 or more." });
    const body = { name: cp.name.value.trim(), type: cp.type.value.trim(), price: Number(price), availableCount: Number(stock) };
    if (cp.productId.value.trim()) body.productId = cp.productId.value.trim();
    let created;
    try {
      created = await api("/api/admin/products", { method: "POST", body, signal: ctx.signal });
    } catch (err) {
      markInvalid(cpForm, err);
      throw err;
    }
    cpForm.reset();
    cpBox.show(`Added ${created.name} (${created.productId}).`, "ok");
    await loadProducts();
  }, { context: "admin" });

  // sagas: filtered by status; a placed order can be shipped, a shipped one delivered
  const sagas = section("adm-sagas", "admin-sagas", "Recent sagas");
  const filter = h("select", { name: "status", "data-testid": "saga-filter" },
    ["", "INITIATED", "PAYMENT_DONE", "REFUND_INITIATED", "PLACED", "FAILED", "CANCELING", "CANCELED", "ON_THE_WAY", "DELIVERED"]
      .map((s) => h("option", { value: s }, s ? statusText(s) + ` (${s})` : "All statuses")));
  const sagaTable = table("admin-sagas-table", ["Started", "Order", "User", "Product", h("th", { scope: "col", class: "num" }, "Total"), "Status", "Steps", "Action"], "Recent sagas, newest first");
  sagas.body.append(h("div", { class: "field" }, h("label", { for: "saga-filter" }, "Show"), Object.assign(filter, { id: "saga-filter" })), sagaTable.wrap);
  filter.addEventListener("change", () => loadSagas().catch((err) => sagas.box.show(explain(err, "admin"))));
  const NEXT_STEP = {
    PLACED: { step: "ship", label: "Ship", done: "shipped" },
    ON_THE_WAY: { step: "deliver", label: "Mark delivered", done: "marked delivered" },
  };

  function sagaRow(o) {
    const next = NEXT_STEP[o.orderStatus];
    let action = "–";
    if (next) {
      action = h("button", { type: "button", class: "small", "data-testid": next.step }, next.label, h("span", { class: "visually-hidden" }, ` order ${o.orderId}`));
      action.addEventListener("click", async () => {
        action.disabled = true;
        try {
          const updated = await api(`/api/admin/orders/${enc(o.orderId)}/${next.step}`, { method: "POST", signal: ctx.signal });
          sagas.box.show(`Order ${shortId(o.orderId)} ${next.done}: ${statusText(updated.orderStatus)}.`, "ok");
          // the row stays (whatever the filter) with its new status until the next refresh
          row.replaceWith(sagaRow({ ...o, ...updated, steps: o.steps }));
        } catch (err) {
          if (err.handled || err.name === "AbortError") return;
          sagas.box.show(`Could not ${next.step} order ${shortId(o.orderId)}: ${explain(err, "admin")}`);
          action.disabled = false;
        }
      });
    }
    const row = h("tr", { "data-testid": "saga-row", "data-order-id": o.orderId, "data-status": o.orderStatus, "data-trace-id": o.traceId },
      h("td", null, when(o.createdAt)),
      h("td", null, h("a", { href: `/admin/orders/${enc(o.orderId)}`, "data-testid": "saga-map-link", "aria-label": `Saga map of order ${o.orderId}` }, h("code", { class: "short", title: o.traceId ? `${o.orderId}, trace ${o.traceId}` : o.orderId }, shortId(o.orderId)))),
      h("td", null, h("code", { class: "short", title: o.userId }, shortId(o.userId))),
      h("td", null, `${o.productQuantity} × ${o.productId}`),
      h("td", { class: "num" }, money(o.totalAmount, o.currency)),
      orderStatusCell(o),
      h("td", null, h("ol", { class: "steps", "aria-label": "Steps" },
        (o.steps || []).map((s) => h("li", { title: `${s.orderStatus} at ${when(s.at)}`, "data-testid": "saga-step" }, s.eventName || s.orderStatus)))),
      h("td", null, action));
    return row;
  }
  let sagaLoads = 0;
  async function loadSagas() {
    const mine = ++sagaLoads;
    const q = filter.value ? `&status=${enc(filter.value)}` : "";
    const list = await api(`/api/admin/sagas?limit=50${q}`, { signal: ctx.signal });
    if (mine !== sagaLoads) return; // the filter changed meanwhile: a newer list is on its way
    sagaTable.tbody.replaceChildren(...list.map(sagaRow));
    if (!list.length) {
      const none = filter.value ? `No sagas with the status ${statusText(filter.value)}.` : "No sagas yet.";
      sagaTable.tbody.append(h("tr", null, h("td", { colspan: 8, class: "empty", "data-testid": "sagas-empty" }, none)));
    }
  }

  // alerts
  const alerts = section("adm-alerts", "admin-alerts", "Refund failures (alerts)");
  const alertTable = table("admin-alerts-table", ["When", "Order", "User", "Kind", "Detail"], "Orders whose refund failed");
  alerts.body.append(alertTable.wrap);
  async function loadAlerts() {
    const list = await api("/api/admin/alerts", { signal: ctx.signal });
    alertTable.tbody.replaceChildren(...list.map((a) =>
      h("tr", { "data-testid": "alert-row", "data-order-id": a.orderId },
        h("td", null, when(a.createdAt)), h("td", null, h("code", null, a.orderId)), h("td", null, h("code", { class: "short", title: a.userId }, shortId(a.userId))),
        h("td", null, h("span", { class: "pill none" }, a.kind)), h("td", null, a.detail || ""))));
    if (!list.length) alertTable.tbody.append(h("tr", null, h("td", { colspan: 5, class: "empty", "data-testid": "alerts-empty" }, "No refund has failed.")));
  }

  // dead letters
  const dlq = section("adm-dlq", "admin-dead-letters", "Dead letters");
  const dlqTable = table("admin-dead-letters-table", ["#", "Received", "Service", "Error", "Source", "Payload", "Replayed", "Action"], "Messages no handler could process");
  dlq.body.append(dlqTable.wrap);
  async function loadDeadLetters() {
    const list = await api("/api/admin/dead-letters", { signal: ctx.signal });
    dlqTable.tbody.replaceChildren(...list.map((d) => {
      const btn = h("button", { type: "button", class: "small", "data-testid": "replay" }, d.replayedAt ? "Replay again" : "Replay", h("span", { class: "visually-hidden" }, ` message ${d.id}`));
      btn.addEventListener("click", async () => {
        btn.disabled = true;
        try {
          await api(`/api/admin/dead-letters/${enc(d.id)}/replay`, { method: "POST", signal: ctx.signal });
          dlq.box.show(`Message #${d.id} was put back on ${d.sourceTopic || "its topic"}.`, "ok");
          await loadDeadLetters();
        } catch (err) {
          if (err.handled || err.name === "AbortError") return;
          dlq.box.show(`Could not replay #${d.id}: ${explain(err, "admin")}`);
          btn.disabled = false;
        }
      });
      return h("tr", { "data-testid": "dead-letter-row", "data-id": d.id },
        h("td", null, String(d.id)), h("td", null, when(d.receivedAt)), h("td", null, d.service),
        h("td", null, d.error), h("td", null, d.sourceTopic || "–", d.key ? h("div", { class: "small-text" }, h("code", null, d.key)) : null),
        h("td", null, h("details", null, h("summary", null, "Show"), h("pre", null, d.payload || ""))),
        h("td", null, d.replayedAt ? when(d.replayedAt) : "–"), h("td", null, btn));
    }));
    if (!list.length) dlqTable.tbody.append(h("tr", null, h("td", { colspan: 8, class: "empty", "data-testid": "dead-letters-empty" }, "No dead letters.")));
  }

  // notifications
  const mail = section("adm-mail", "admin-mail", "Mail (local SMTP sink)");
  const mailList = h("ul", { class: "grid", "data-testid": "admin-mail-list" });
  mail.body.append(mailList);
  async function loadMail() {
    const list = await api("/api/admin/notifications/mail?limit=30", { signal: ctx.signal });
    mailList.replaceChildren(...list.map((m) =>
      h("li", { class: "card", "data-testid": "mail-item" },
        h("p", { class: "small-text muted" }, "To ", m.to || "–"),
        h("p", null, h("strong", null, m.subject || "(no subject)")),
        h("details", null, h("summary", null, "Body"), h("pre", null, m.body || "")))));
    if (!list.length) mailList.append(h("li", { class: "empty", "data-testid": "mail-empty" }, "No mail yet."));
  }
  const sms = section("adm-sms", "admin-sms", "SMS log");
  const smsTable = table("admin-sms-table", ["When", "To", "Message"], "SMS messages sent");
  sms.body.append(smsTable.wrap);
  async function loadSms() {
    const list = await api("/api/admin/notifications/sms?limit=30", { signal: ctx.signal });
    smsTable.tbody.replaceChildren(...list.map((s) =>
      h("tr", { "data-testid": "sms-item" }, h("td", null, when(s.createdAt)), h("td", null, s.to), h("td", null, s.body))));
    if (!list.length) smsTable.tbody.append(h("tr", null, h("td", { colspan: 3, class: "empty", "data-testid": "sms-empty" }, "No SMS yet.")));
  }

  const parts = [[products, loadProducts], [sagas, loadSagas], [alerts, loadAlerts], [dlq, loadDeadLetters], [mail, loadMail], [sms, loadSms]];
  async function loadAll() {
    refreshAll.disabled = true;
    const results = await Promise.allSettled(parts.map(([, f]) => f()));
    refreshAll.disabled = false;
    let forbidden = false;
    results.forEach((r, i) => {
      const box = parts[i][0].box;
      if (r.status === "fulfilled") {
        if (box.dataset.kind !== "ok") box.show("");
        return;
      }
      const err = r.reason;
      if (err.handled || err.name === "AbortError") return;
      if (err.status === 403) forbidden = true;
      box.show(explain(err, "admin"));
    });
    if (forbidden) {
      denied.show("This page is for administrators. Sign in with an admin account to use it.");
      for (const [p] of parts) p.sec.hidden = true;
      nav.hidden = true;
    }
  }
  refreshAll.addEventListener("click", loadAll);
  await loadAll();
}

// ---- pages: operations (the admin) ----------------------------------------------------------------

const OPS_EVERY_MS = 2000;
const OPS_SPAN_MS = 3 * 60 * 1000;
const opsSamples = []; // kept while the app is open, so that coming back to the page keeps its past

function recordSample(data) {
  const s = data.summary;
  const sum = (o) => Object.values(o || {}).reduce((a, b) => a + b, 0);
  opsSamples.push({
    t: data.at * 1000,
    sps: s ? s.sagasPerSecond : null,
    p50: s ? s.p50Seconds : null,
    p99: s ? s.p99Seconds : null,
    inFlight: s ? sum(s.inFlight) : null,
    stuck: s ? sum(s.stuck) : null,
    dlNew: s ? s.deadLetters.notReplayed : null,
    lag: Object.fromEntries(data.consumerLag.map((l) => [l.group, l.records])),
  });
  while (opsSamples.length && data.at * 1000 - opsSamples[0].t > OPS_SPAN_MS) opsSamples.shift();
}

async function pageOperations(view, _params, ctx) {
  heading(view, "Operations");
  if (!requireSignIn()) return;
  const updated = h("span", { class: "live", "data-testid": "ops-live", "data-state": "idle" }, "Reading the figures…");
  const box = messageBox("ops-error");
  view.append(h("p", { class: "row" }, h("span", { class: "muted" }, "The figures of ", h("code", null, "./tiny-saga top"), ", live: every 2 s, over the last minute. "), updated), box);

  const figures = h("div", { class: "figures", "data-testid": "ops-figures" });
  const card = (id, title, ...body) => h("section", { class: "card chart-card", "data-testid": id, "aria-labelledby": `${id}-h` }, h("h2", { id: `${id}-h` }, title), ...body);
  const spsChart = h("div", { class: "chart-box" });
  const latencyChart = h("div", { class: "chart-box" });
  const flightChart = h("div", { class: "chart-box" });
  const flightTable = table("ops-in-flight-table", ["Waiting for", "Status", h("th", { scope: "col", class: "num" }, "In flight"), h("th", { scope: "col", class: "num" }, "Oldest"), h("th", { scope: "col", class: "num" }, "Stuck")], "Sagas in flight by the step they wait for, with how long the oldest has waited");
  const lagChart = h("div", { class: "chart-box" });
  const lagTable = table("ops-lag-table", ["Consumer group", h("th", { scope: "col", class: "num" }, "Records behind")], "Consumer lag by group");
  const stuckChart = h("div", { class: "chart-box" });
  const stuckTable = table("ops-stuck-table", ["Order", "Status", "Waiting for", "In its status", "Last event"], "Stuck sagas, longest first");
  const dlChart = h("div", { class: "chart-box" });
  const outboxTable = table("ops-outbox-table", ["Service", h("th", { scope: "col", class: "num" }, "Outbox rows"), h("th", { scope: "col", class: "num" }, "Oldest"), h("th", { scope: "col", class: "num" }, "Dead-lettered")], "Outboxes and dead-lettered events by service");
  const down = h("p", { class: "note error", role: "alert", "data-testid": "ops-down", hidden: true });
  view.append(figures, down, h("div", { class: "charts" },
    card("ops-throughput", "Sagas per second", spsChart),
    card("ops-latency", "Latency: p50 and p99", latencyChart),
    card("ops-in-flight", "Sagas in flight, by step", flightChart, flightTable.wrap),
    card("ops-lag", "Consumer lag", lagChart, lagTable.wrap),
    card("ops-stuck", "Stuck sagas", stuckChart, stuckTable.wrap),
    card("ops-dead-letters", "Dead letters and outboxes", dlChart, outboxTable.wrap)));

  const series = (key) => opsSamples.map((x) => [x.t, x[key]]);
  const count = (v) => String(Math.round(v * 100) / 100);
  const legend = (items) => h("ul", { class: "legend" }, items.map(([cls, text]) => h("li", null, h("span", { class: `swatch ${cls}`, "aria-hidden": "true" }), text)));
  function figure(testid, label, value, text, { sub = "", ...extra } = {}) {
    return h("div", { class: "figure", ...extra }, h("span", { class: "label", id: `${testid}-l` }, label),
      h("strong", { "data-testid": testid, "data-value": value === null ? "" : String(value), "aria-labelledby": `${testid}-l` }, text),
      sub ? h("span", { class: "sub" }, sub) : null);
  }

  function draw(data) {
    const s = data.summary;
    const now = data.at * 1000;
    const chartOf = (label, list, format) => lineChart({ label, series: list, format, spanMs: OPS_SPAN_MS, now });
    if (!s) {
      box.show("Order does not answer: no saga figures right now (the rest below is still read).");
    } else if (box.dataset.kind !== "error" || box.textContent.startsWith("Order")) {
      box.show("");
    }
    const sum = (o) => Object.values(o || {}).reduce((a, b) => a + b, 0);
    const ended = s ? sum(s.ended) : null;
    figures.replaceChildren(
      figure("ops-sagas-per-second", "Sagas per second", s ? s.sagasPerSecond : null, s ? s.sagasPerSecond.toFixed(2) : "–"),
      figure("ops-p50", "p50 (last minute)", s ? s.p50Seconds : null, s ? seconds(s.p50Seconds) : "–"),
      figure("ops-p99", "p99 (last minute)", s ? s.p99Seconds : null, s ? seconds(s.p99Seconds) : "–"),
      figure("ops-ended", "Ended in the last minute", ended, s ? String(ended) : "–", { sub: s ? Object.entries(s.ended).map(([k, v]) => `${v} ${k}`).join(", ") : "" }),
      figure("ops-in-flight-total", "In flight", s ? sum(s.inFlight) : null, s ? String(sum(s.inFlight)) : "–"),
      figure("ops-stuck-total", "Stuck", s ? sum(s.stuck) : null, s ? String(sum(s.stuck)) : "–", { "data-bad": s && sum(s.stuck) > 0 ? "true" : null }),
      figure("ops-dead-letters-new", "Dead letters (new / kept)", s ? s.deadLetters.notReplayed : null, s ? `${s.deadLetters.notReplayed} / ${s.deadLetters.kept}` : "–"),
    );
    down.hidden = !data.down.length;
    down.textContent = data.down.length ? `Not answering: ${data.down.join(", ")}.` : "";

    spsChart.replaceChildren(chartOf("Sagas per second", [{ name: "sagas/s", cls: "s1", values: series("sps") }], count),
      ...(s && s.p50Seconds === null ? [h("p", { class: "empty small-text" }, "No saga ended in the last minute.")] : []));
    latencyChart.replaceChildren(chartOf("Latency", [{ name: "p50", cls: "s1", values: series("p50") }, { name: "p99", cls: "s2", values: series("p99") }], seconds),
      legend([["s1", "p50"], ["s2", "p99"]]));

    const rows = s ? Object.keys(s.inFlight).sort() : [];
    flightChart.replaceChildren(barChart({
      label: "Sagas in flight by step",
      items: rows.map((st) => ({
        label: `${(s.awaiting[st] || []).join(", ") || "-"} (${st})`,
        value: s.inFlight[st],
        text: s.inFlight[st] ? `${s.inFlight[st]} · oldest ${seconds((s.oldestSeconds || {})[st])}${s.stuck[st] ? ` · ${s.stuck[st]} stuck` : ""}` : "0",
        cls: s.stuck[st] ? "bad" : "",
      })),
    }));
    flightTable.tbody.replaceChildren(...rows.map((st) => h("tr", { "data-testid": "ops-in-flight-row", "data-status": st },
      h("td", null, (s.awaiting[st] || []).join(", ") || "–"),
      h("td", { class: "small-text" }, st),
      h("td", { class: "num", "data-testid": "in-flight", "data-value": String(s.inFlight[st]) }, String(s.inFlight[st])),
      h("td", { class: "num", "data-testid": "oldest", "data-value": String((s.oldestSeconds || {})[st] ?? "") }, seconds((s.oldestSeconds || {})[st])),
      h("td", { class: "num", "data-testid": "stuck", "data-value": String(s.stuck[st]) }, String(s.stuck[st])))));
    if (!rows.length) flightTable.tbody.append(h("tr", null, h("td", { colspan: 5, class: "empty" }, "No figures.")));

    const groups = data.consumerLag.map((l) => l.group);
    const palette = ["s1", "s2", "s3", "s4", "s5", "s6"];
    lagChart.replaceChildren(chartOf("Consumer lag (records behind)", groups.slice(0, palette.length).map((g, i) => ({ name: g, cls: palette[i], values: opsSamples.map((x) => [x.t, x.lag[g] ?? null]) })), count),
      legend(groups.slice(0, palette.length).map((g, i) => [palette[i], g])));
    lagTable.tbody.replaceChildren(...data.consumerLag.map((l) => h("tr", { "data-testid": "ops-lag-row", "data-group": l.group },
      h("td", null, l.group === l.service ? l.group : `${l.group} (${l.service})`), h("td", { class: "num" }, String(Math.round(l.records))))));
    if (!groups.length) lagTable.tbody.append(h("tr", null, h("td", { colspan: 2, class: "empty" }, "No consumer reported its lag yet.")));

    stuckChart.replaceChildren(chartOf("Stuck sagas", [{ name: "stuck", cls: "bad", values: series("stuck") }, { name: "in flight", cls: "s1", values: series("inFlight") }], count),
      legend([["bad", "stuck"], ["s1", "in flight"]]));
    stuckTable.tbody.replaceChildren(...data.stuck.map((st) => h("tr", { "data-testid": "ops-stuck-row", "data-order-id": st.orderId },
      h("td", null, h("a", { href: `/admin/orders/${enc(st.orderId)}`, "aria-label": `Saga map of order ${st.orderId}` }, h("code", { class: "short" }, shortId(st.orderId)))),
      h("td", null, h("span", { class: "pill", "data-status": st.orderStatus }, st.orderStatus)),
      h("td", null, (st.waitingFor || []).join(", ") || "–"),
      h("td", null, `${seconds(st.ageSeconds)} (over ${seconds(st.deadlineSeconds)})`),
      h("td", null, st.lastEvent || "–"))));
    if (!data.stuck.length) stuckTable.tbody.append(h("tr", null, h("td", { colspan: 5, class: "empty", "data-testid": "ops-stuck-empty" }, "No stuck saga.")));

    dlChart.replaceChildren(chartOf("Dead letters not replayed", [{ name: "new dead letters", cls: "bad", values: series("dlNew") }], count));
    const services = [...new Set([...data.outboxes.map((o) => o.service), ...Object.keys(data.deadLettered)])].sort();
    outboxTable.tbody.replaceChildren(...services.map((svc) => {
      const o = data.outboxes.find((x) => x.service === svc) || { rows: 0, oldestSeconds: 0 };
      return h("tr", { "data-testid": "ops-outbox-row", "data-service": svc },
        h("td", null, svc), h("td", { class: "num" }, String(Math.round(o.rows))), h("td", { class: "num" }, o.rows ? seconds(o.oldestSeconds) : "–"),
        h("td", { class: "num" }, String(Math.round(data.deadLettered[svc] || 0))));
    }));
    if (!services.length) outboxTable.tbody.append(h("tr", null, h("td", { colspan: 4, class: "empty" }, "No figures.")));
  }

  let busy = false;
  let reads = 0;
  async function load() {
    if (busy) return;
    busy = true;
    try {
      const data = await api("/api/admin/operations", { signal: ctx.signal });
      recordSample(data);
      draw(data);
      reads += 1;
      updated.dataset.state = "live";
      updated.dataset.reads = String(reads);
      updated.textContent = `Updated ${clock(new Date(data.at * 1000).toISOString())}`;
    } catch (err) {
      if (err.name === "AbortError" || err.handled || ctx.left) return;
      if (err.status === 403) {
        box.show("This page is for administrators. Sign in with an admin account to use it.");
        figures.hidden = true;
        view.querySelector(".charts").hidden = true;
        stop = true;
        return;
      }
      updated.dataset.state = "offline";
      updated.textContent = "Figures paused; retrying…";
      box.show(`Could not read the figures: ${explain(err)}`);
    } finally {
      busy = false;
    }
  }
  let stop = false;
  await load();
  ctx.every(OPS_EVERY_MS, () => {
    if (!stop) load();
  });
}

// ---- pages: the saga map (the admin) --------------------------------------------------------------

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

async function pageSagaDefinition(view, _params, ctx) {
  heading(view, "The saga");
  if (!requireSignIn()) return;
  view.append(h("p", { class: "muted" }, "Every step, compensation and branch of the saga, as the code declares it. Open an order to see where it is."));
  const input = h("input", { type: "text", name: "orderId", autocomplete: "off", spellcheck: "false", required: true, "data-testid": "map-order-id", placeholder: "e.g. 6f1c2a1e-…" });
  const box = messageBox("map-order-error");
  const form = h("form", { class: "card inline-form", "data-testid": "map-order-form", novalidate: true },
    field("map-order-id", "Order id", input), box, h("button", { type: "submit", "data-testid": "map-order-submit" }, "Show its saga"));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const v = input.value.trim();
    if (!UUID_RE.test(v)) {
      input.setAttribute("aria-invalid", "true");
      box.show("An order id looks like 6f1c2a1e-0000-4000-8000-000000000000.");
      return;
    }
    navigate(`/admin/orders/${enc(v.toLowerCase())}`);
  });
  view.append(form);
  const def = await sagaDefinition();
  if (ctx.left) return;
  const { wrap, tbody } = table("saga-steps-table", ["Step", "Participant", "Kind", "Triggered by", "Publishes", "Compensated by", "Order status after"], "The steps of the saga");
  tbody.append(...def.steps.map((s) => h("tr", { "data-testid": "saga-step-row", "data-step": s.name },
    h("td", null, h("code", { class: "short" }, s.name)), h("td", null, s.participant), h("td", null, s.kind),
    h("td", null, s.triggers.join(", ")), h("td", null, s.outcomes.join(", ") || "–"),
    h("td", null, s.compensation || "–"), h("td", null, s.leadsTo || "–"))));
  view.append(h("section", { class: "saga-map", "aria-labelledby": "declared-h" }, h("h2", { id: "declared-h" }, "As declared"),
    h("div", { class: "map-wrap", "data-testid": "saga-map-drawing" }, drawSagaMap(def, null))),
  h("h2", null, "The steps"), wrap);
}

async function pageAdminOrderMap(view, [orderId], ctx) {
  heading(view, `Saga of order ${shortId(orderId)}`);
  if (!requireSignIn()) return;
  const facts = h("dl", { class: "facts", "data-testid": "map-order-facts" });
  const mapView = sagaMapView(ctx, `/api/admin/orders/${enc(orderId)}/saga`, {
    onMap(m) {
      facts.replaceChildren(
        h("dt", null, "Order"), h("dd", null, h("code", null, m.orderId)),
        h("dt", null, "Status"), h("dd", null, h("span", { class: "pill", "data-status": m.orderStatus, "data-testid": "map-order-status" }, statusText(m.orderStatus)),
          m.failReason ? ` ${m.failReason}` : "", m.refundStatus ? ` · refund ${m.refundStatus}` : ""),
        h("dt", null, "Waiting for"), h("dd", null, m.current.length ? m.current.join(", ") : "nothing: no step is under way"));
    },
  });
  view.append(
    h("p", { class: "row" }, h("a", { href: "/admin/saga" }, "The saga as declared"), h("a", { href: "/admin#adm-sagas" }, "Recent sagas"), h("a", { href: "/admin/operations" }, "Operations")),
    facts, mapView.el);
  mapView.follow();
}

async function pageNotFound(view) {
  heading(view, "Page not found");
  view.append(h("p", null, "There is nothing here. ", h("a", { href: "/" }, "Go to the shop"), "."));
}

// ---- start ---------------------------------------------------------------------------------------

await loadSession();
render();
