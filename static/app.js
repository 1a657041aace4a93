/*
 * Browser side of the real-time recommendation demo.
 *
 * Plain ES2020, no dependencies. Every piece of server data is written into
 * the DOM as text (textContent / createElement / option.text), never as HTML.
 * No inline styles or handlers are used, so the page works under a strict CSP.
 */
(function () {
  "use strict";

  const REQUEST_TIMEOUT_MS = 60000;

  // ---------------------------------------------------------------- state --

  const FEED_K = 10;
  // Where the For you list came from (the /recommend "source"), as the page says it.
  const SOURCE_LABELS = { session: "from your session", popular: "trending", rating: "top rated" };
  const MINUS = "\u2212";

  let lastSearch = null;        // body of the last search that was sent, or null
  let similarOf = null;         // {id, name} while the results list shows "More like <name>"
  let resultsSeq = 0;           // increases on each search or "more like this"; only the newest renders
  let resultsInFlight = 0;
  let feedSeq = 0;              // the same for the For you list
  let liveSeq = 0;              // and for GET /state
  let lastClickedId = null;
  let dismissedIds = new Set();
  // Dismissed from the results of the query on show: that query's list leaves them out until
  // another query is searched (the server still finds a dismissed product a new search asks for,
  // marked down, and the page shows it greyed).
  const dismissedHere = new Set();
  const pendingClicks = new Set();
  const pendingDismissals = new Set();
  let products = [];

  // ------------------------------------------------------------- helpers --

  function $(id) {
    return document.getElementById(id);
  }

  /** Create an element. `text` is always set via textContent. */
  function el(tag, opts, children) {
    const node = document.createElement(tag);
    if (opts) {
      if (opts.className) node.className = opts.className;
      if (opts.text !== undefined && opts.text !== null) node.textContent = String(opts.text);
      if (opts.title) node.title = String(opts.title);
      if (opts.dataset) {
        for (const [key, value] of Object.entries(opts.dataset)) node.dataset[key] = String(value);
      }
      if (opts.attrs) {
        for (const [name, value] of Object.entries(opts.attrs)) {
          // Never allow style or event-handler attributes through this helper.
          if (name === "style" || /^on/i.test(name)) continue;
          node.setAttribute(name, String(value));
        }
      }
    }
    if (children) {
      for (const child of children) {
        if (child === null || child === undefined || child === false) continue;
        node.append(typeof child === "string" ? document.createTextNode(child) : child);
      }
    }
    return node;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  function toNumber(value) {
    if (value === null || value === undefined || value === "") return NaN;
    const n = Number(value);
    return Number.isFinite(n) ? n : NaN;
  }

  function fixed(value, digits, fallback) {
    const n = toNumber(value);
    return Number.isNaN(n) ? (fallback === undefined ? "—" : fallback) : n.toFixed(digits);
  }

  function fmtPrice(value) {
    const n = toNumber(value);
    return Number.isNaN(n) ? "$—" : "$" + n.toFixed(2);
  }

  function fmtRating(value) {
    return fixed(value, 1) + "★";
  }

  function fmtMs(value) {
    const n = toNumber(value);
    if (Number.isNaN(n)) return "—";
    return (n < 1 ? n.toFixed(2) : n.toFixed(1)) + " ms";
  }

  /** 2 -> "2.0", 1.25 -> "1.25", 0.33333 -> "0.333" */
  function fmtAffinity(value) {
    const n = toNumber(value);
    if (Number.isNaN(n)) return "—";
    if (Number.isInteger(n)) return n.toFixed(1);
    return String(Number(n.toFixed(3)));
  }

  function str(value, fallback) {
    if (value === null || value === undefined || value === "") return fallback === undefined ? "" : fallback;
    return String(value);
  }

  function isInStock(product) {
    // Treat only an explicit false-ish value as out of stock.
    const v = product.in_stock;
    return !(v === false || v === 0 || v === "0" || v === "false");
  }

  // -------------------------------------------------------------- status --

  let statusTimer = null;

  function setStatus(message, kind) {
    const box = $("status");
    if (statusTimer) {
      clearTimeout(statusTimer);
      statusTimer = null;
    }
    box.textContent = message || "";
    box.className = "status" + (kind ? " " + kind : "") + (message ? " visible" : "");
  }

  function ok(message) {
    setStatus(message, "ok");
  }

  function fail(err) {
    const message = err && err.message ? err.message : String(err);
    setStatus(message, "error");
  }

  function info(message) {
    setStatus(message, "info");
  }

  // ----------------------------------------------------------------- API --

  class ApiError extends Error {
    constructor(message, status) {
      super(message);
      this.status = status || 0;
    }
  }

  /** A fresh idempotency key for one click or dismissal: its retries send the same one, so the
   * server applies it once (crypto.getRandomValues works on plain http too, randomUUID not). */
  function newEventId() {
    const bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  const WRITE_RETRIES = 2;
  const WRITE_RETRY_MS = 1000;

  /** A click or dismissal: sent with its event_id, and sent again with the same id when the
   * server could not say whether it was applied (a 503: Redis slow, restarting, or full). */
  async function sendEvent(path, productId, extra = {}) {
    const body = { ...extra, product_id: productId, event_id: newEventId() };
    for (let attempt = 0; ; attempt++) {
      try {
        return await api("POST", path, body);
      } catch (err) {
        if (!(err instanceof ApiError) || err.status !== 503 || attempt >= WRITE_RETRIES) throw err;
        await new Promise((resolve) => setTimeout(resolve, WRITE_RETRY_MS));
      }
    }
  }

  async function api(method, path, body) {
    const controller = typeof AbortController === "function" ? new AbortController() : null;
    const timer = controller ? setTimeout(() => controller.abort(), REQUEST_TIMEOUT_MS) : null;
    const init = {
      method,
      credentials: "same-origin",
      cache: "no-store",
      headers: { Accept: "application/json" },
    };
    if (controller) init.signal = controller.signal;
    if (method !== "GET") {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body === undefined ? {} : body);
    }

    let response;
    try {
      response = await fetch(path, init);
    } catch (err) {
      if (err && err.name === "AbortError") {
        throw new ApiError(`Request to ${path} timed out after ${REQUEST_TIMEOUT_MS / 1000} s.`);
      }
      throw new ApiError(`Network error: could not reach the server (${path}).`);
    } finally {
      if (timer) clearTimeout(timer);
    }

    let data = null;
    let parseFailed = false;
    try {
      const text = await response.text();
      data = text ? JSON.parse(text) : null;
    } catch (_err) {
      parseFailed = true;
    }

    if (!response.ok) {
      if (data && typeof data === "object" && data.error !== undefined && data.error !== null) {
        throw new ApiError(String(data.error), response.status);
      }
      throw new ApiError(
        `Request failed: HTTP ${response.status}${response.statusText ? " " + response.statusText : ""}.`,
        response.status,
      );
    }
    if (parseFailed || data === null || typeof data !== "object") {
      throw new ApiError(`Unexpected response from ${path} (not JSON).`);
    }
    return data;
  }

  /** Disable `buttons` while `fn` runs. */
  async function busy(buttons, fn) {
    const list = (Array.isArray(buttons) ? buttons : [buttons]).filter(Boolean);
    for (const b of list) {
      b.disabled = true;
      b.setAttribute("aria-busy", "true");
    }
    try {
      return await fn();
    } finally {
      for (const b of list) {
        b.disabled = false;
        b.removeAttribute("aria-busy");
      }
    }
  }

  // ----------------------------------------------------- select helpers --

  /**
   * Refill a <select>, keeping the current value if it still exists.
   * items: array of {value, label}. withAny: prepend an "Any" option (value "").
   */
  function fillSelect(select, items, withAny) {
    const previous = select.value;
    clear(select);
    if (withAny) select.add(new Option("Any", ""));
    const values = new Set();
    for (const item of items) {
      const option = new Option();
      option.value = String(item.value);
      option.text = String(item.label);
      select.add(option);
      values.add(option.value);
    }
    if (values.has(previous) || (withAny && previous === "")) {
      select.value = previous;
    } else {
      select.selectedIndex = select.options.length ? 0 : -1;
    }
  }

  // ---------------------------------------------------------- rendering --

  /** Everything GET /state says: the form's choices, the catalogue and the live panels. */
  function renderState(state, live) {
    const categories = Array.isArray(state.categories) ? state.categories : [];
    const brands = Array.isArray(state.brands) ? state.brands : [];
    fillSelect($("category"), categories.map((c) => ({ value: c, label: c })), true);
    fillSelect($("brand"), brands.map((b) => ({ value: b, label: b })), true);

    products = Array.isArray(state.products) ? state.products : [];
    const byId = products.slice().sort((a, b) =>
      String(a.id).localeCompare(String(b.id), undefined, { numeric: true }));
    fillSelect($("refresh-product"), byId.map((p) => ({ value: p.id, label: `${p.id} — ${str(p.name, "(unnamed)")}` })), false);

    renderCatalogue(products);
    if (live) renderLive(state);
  }

  /** The parts of /state that clicks and dismissals change. */
  function renderLive(state) {
    if (state.user) renderSession(state.user);
    if (state.index) renderIndex(state.index);
    renderTrending(state.popular);
  }

  function renderSession(user) {
    $("session-user").textContent = str(user.user_id, "—");
    $("session-clicks").textContent = str(user.clicks, "0");

    lastClickedId = user.last_clicked_id ? String(user.last_clicked_id) : null;
    const last = $("session-last");
    clear(last);
    if (lastClickedId) {
      last.append(el("code", { text: lastClickedId }));
      if (user.last_clicked_category) {
        last.append(" ", el("span", { className: "muted", text: `(${user.last_clicked_category})` }));
      }
    } else {
      last.textContent = "—";
    }

    const vec = $("session-vec");
    if (user.has_session_vec) {
      const dim = toNumber(user.session_vec_dim);
      vec.textContent = Number.isNaN(dim) ? "vector present" : `${dim}-d vector`;
      vec.className = "yes";
    } else {
      vec.textContent = "none yet";
      vec.className = "muted";
    }
    renderFade(user);

    const dismissed = Array.isArray(user.dismissed) ? user.dismissed : [];
    dismissedIds = new Set(dismissed.map((item) => str(item && typeof item === "object" ? item.id : item)));
    renderAffinities(user.affinities);
    renderRecent($("recent-clicks"), user.recent_clicks, "Nothing clicked yet.");
    renderRecent($("dismissed"), dismissed, "Nothing dismissed.");
    markCards();
  }

  /** How much the session steers the lists now, and how long until it stops (it fades with time). */
  function renderFade(user) {
    const node = $("session-fades");
    const seconds = toNumber(user.session_fades_in_s);
    if (Number.isNaN(seconds)) {
      node.textContent = user.has_session_vec ? "no longer (faded)" : "no session yet";
      node.className = "muted";
      return;
    }
    const weight = toNumber(user.session_weight);
    const minutes = Math.ceil(seconds / 60);
    const fades = seconds < 60 ? "fades in under a minute" : `fades in ${minutes} min`;
    node.textContent = Number.isNaN(weight) ? fades : `${percent(weight)} · ${fades}`;
    node.className = "";
  }

  function renderAffinities(affinities) {
    const list = $("affinities");
    clear(list);
    const entries = affinities && typeof affinities === "object"
      ? Object.entries(affinities)
        .map(([category, value]) => [category, toNumber(value)])
        .filter(([, value]) => !Number.isNaN(value))
        .sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))
      : [];
    if (!entries.length) {
      list.append(el("li", { className: "empty", text: "No clicks yet." }));
      return;
    }
    const max = Math.max(...entries.map(([, v]) => Math.abs(v)), 1e-9);
    for (const [category, value] of entries) {
      // A dismissed category goes below zero: its bar is drawn in the muted colour.
      const fill = el("span", { className: value < 0 ? "bar-fill negative" : "bar-fill" });
      fill.style.width = Math.max(2, Math.round((Math.abs(value) / max) * 100)) + "%";
      list.append(el("li", { className: "bar-item" }, [
        el("span", { className: "bar-label", text: category }),
        el("span", { className: "bar-track", attrs: { "aria-hidden": "true" } }, [fill]),
        el("span", { className: "bar-value", text: fmtAffinity(value) }),
      ]));
    }
  }

  /** GET /report as bars: click-through per list source and arm, over the last day. */
  async function loadReport() {
    // A server that logs no impressions (--no-impressions) answers lists without a rec_id.
    const logged = Boolean($("foryou").dataset.recId || $("results").dataset.recId);
    $("report-panel").hidden = !logged;
    if (!logged) return;
    const list = $("report");
    let report;
    try {
      report = await api("GET", "/report?window=86400");
    } catch (err) {
      fail(err);
      return;
    }
    clear(list);
    const groups = Array.isArray(report.groups) ? report.groups : [];
    if (!groups.length) list.append(el("li", { className: "empty", text: "Nothing shown yet." }));
    for (const g of groups) {
      const ctr = g && g.ctr ? toNumber(g.ctr.rate) : NaN;
      if (Number.isNaN(ctr)) continue;
      const fill = el("span", { className: "bar-fill" });
      fill.style.width = Math.max(2, Math.round(ctr * 100)) + "%";
      const arm = str(g.arm) === "none" ? "" : ` · ${str(g.arm)}`;
      list.append(el("li", { className: "bar-item" }, [
        el("span", { className: "bar-label", text: `${str(g.source)}${arm}` }),
        el("span", { className: "bar-track", attrs: { "aria-hidden": "true" } }, [fill]),
        el("span", { className: "bar-value", text: `${(ctr * 100).toFixed(1)}% of ${str(g.impressions)}` }),
      ]));
    }
    const exp = report.experiment;
    $("report-status").textContent = exp && typeof exp === "object"
      ? `Experiment ${str(exp.name)}: ${str(exp.status)}`
      : "Click-through: share of lists shown that got a click.";
  }

  /** A list of {id, name} products (recent clicks, dismissals). */
  function renderRecent(list, items, emptyText) {
    clear(list);
    const entries = Array.isArray(items) ? items : [];
    if (!entries.length) {
      list.append(el("li", { className: "empty", text: emptyText }));
      return;
    }
    for (const item of entries) {
      const entry = item && typeof item === "object" ? item : { id: item, name: "" };
      list.append(el("li", { title: str(entry.id) }, [
        el("span", { text: str(entry.name, str(entry.id, "?")) }),
        entry.id ? el("span", { className: "muted small", text: ` ${entry.id}` }) : null,
      ]));
    }
  }

  function renderTrending(popular) {
    const list = $("trending");
    clear(list);
    const items = Array.isArray(popular) ? popular.filter((p) => p && typeof p === "object") : [];
    if (!items.length) {
      list.append(el("li", { className: "empty", text: "Nothing yet: clicks make products trend." }));
      return;
    }
    for (const item of items) {
      list.append(el("li", { className: "trend-item", dataset: { id: str(item.id) }, title: str(item.id) }, [
        el("span", { className: "trend-name", text: str(item.name, str(item.id, "?")) }),
        el("span", {
          className: "trend-score",
          text: fixed(item.popularity, 1),
          title: "clicks by everyone, older ones counting for less",
        }),
      ]));
    }
  }

  function renderIndex(index) {
    $("index-name").textContent = str(index.index_name, "—");
    $("index-model").textContent = str(index.model, "—");
    $("index-num-docs").textContent = str(index.num_docs, "—");
    const failures = $("index-failures");
    failures.textContent = str(index.indexing_failures, "—");
    failures.classList.toggle("bad", toNumber(index.indexing_failures) > 0);
    const size = toNumber(index.vector_index_size_mb);
    $("index-size").textContent = Number.isNaN(size) ? "—" : `${size.toFixed(2)} MB`;
  }

  function stockBadge() {
    return el("span", { className: "badge badge-oos", text: "out of stock" });
  }

  /** A cosine distance; float noise can put an identical vector a hair below 0 ("-0.000"). */
  function fmtDistance(value, digits) {
    return Math.max(0, value).toFixed(digits);
  }

  function percent(fraction) {
    return `${Math.round(fraction * 100)}%`;
  }

  /** -0.1 -> "−0.10", 0.1 -> "+0.10" (a real minus sign). */
  function signed(value, digits) {
    return (value < 0 ? MINUS : "+") + Math.abs(value).toFixed(digits);
  }

  /**
   * A candidate's `why` as short badge texts and longer tooltip lines. Absent keys played no
   * part. `showDistance` is false where the distance has a column of its own, or where the list
   * was not made by a vector query (trending and top rated carry a placeholder distance).
   */
  function whyParts(why, showDistance) {
    const parts = [];
    if (!why || typeof why !== "object") return parts;
    const add = (kind, short, long) => parts.push({ kind, short, long });
    const value = (key) => toNumber(why[key]);

    let n = value("vector_distance");
    if (showDistance && !Number.isNaN(n)) add("distance", `distance ${fmtDistance(n, 3)}`, `cosine distance ${fmtDistance(n, 4)}`);
    n = value("affinity_bonus");
    if (!Number.isNaN(n) && n !== 0) {
      add("affinity", `affinity ${signed(-n, 2)}`, `a category you clicked lowered the score by ${n.toFixed(3)}`);
    }
    n = value("affinity_penalty");
    if (!Number.isNaN(n) && n !== 0) {
      add("penalty", `affinity ${signed(n, 2)}`, `a category you dismissed raised the score by ${n.toFixed(3)}`);
    }
    n = value("dismissed_penalty");
    if (!Number.isNaN(n) && n > 0) {
      add("dismissed", "you dismissed this",
        `you said "not interested" to this earlier; your search still asks for it, so it is shown, ` +
        `its score raised by ${n.toFixed(3)} (below the results ranked near it)`);
    }
    n = value("session_weight");
    if (!Number.isNaN(n) && n > 0) add("session", `session ${percent(n)}`, `your clicks made up ${percent(n)} of the query`);
    n = value("negative_weight");
    if (!Number.isNaN(n) && n > 0) {
      add("negative", `dismissed ${MINUS}${percent(n)}`, `the query was pushed away from what you dismissed (${percent(n)})`);
    }
    n = value("category_boost");
    if (!Number.isNaN(n) && n !== 0) {
      add("category", `same category ${signed(-n, 2)}`, `same category as the product: score lowered by ${n.toFixed(3)}`);
    }
    n = value("mmr_penalty");
    if (!Number.isNaN(n) && n > 0) {
      add("diversity", `diversity ${signed(-n, 2)}`, `diversity: ${n.toFixed(3)} charged for resembling products ranked above`);
    }
    n = value("popularity");
    if (!Number.isNaN(n)) add("popularity", `popularity ${n.toFixed(1)}`, `popularity ${n.toFixed(2)} (recent clicks by everyone)`);
    n = value("excluded_count");
    if (!Number.isNaN(n) && n > 0) add("excluded", null, `${n} product${n === 1 ? "" : "s"} you've seen left out of this list`);
    // Which signal put it in "More like this" or the feed: what shoppers bought together, what
    // looks alike, or both (why.reason says it in words, with the product it goes with).
    const signal = str(why.signal);
    const together = value("co_count");
    const times = Number.isNaN(together) ? "" : ` ×${Math.max(1, Math.round(together))}`;
    const reason = str(why.reason, signal);
    if (signal === "co_occurrence") add("signal", `bought together${times}`, reason);
    else if (signal === "blend") add("signal", `bought together${times} + looks alike`, reason);
    else if (signal === "content") add("signal", "looks alike", reason);
    return parts;
  }

  function whyLine(why, showDistance) {
    const parts = whyParts(why, showDistance);
    const shown = parts.filter((p) => p.short);
    if (!shown.length) return null;
    return el("span", { className: "why", title: parts.map((p) => p.long).join("\n") },
      shown.map((p) => el("span", { className: `badge badge-why why-${p.kind}`, text: p.short })));
  }

  function productName(id, fallback) {
    const product = products.find((p) => str(p.id) === id);
    return str(product ? product.name : fallback, id);
  }

  /** One of the buttons every listed product carries: click, more like this, not interested. */
  function actionButton(kind, product) {
    const id = str(product.id);
    const name = str(product.name, id);
    const spec = {
      click: ["btn btn-small click-btn", "Click", `Record a click on ${name}`],
      more: ["btn btn-small more-btn", "More like this", `More like ${name}`],
      dismiss: ["btn btn-small btn-quiet dismiss-btn", "Not interested", `Not interested in ${name}`],
    }[kind];
    const button = el("button", {
      className: spec[0],
      text: spec[1],
      title: spec[2],
      dataset: { id, name },
      attrs: { type: "button", "aria-label": spec[2] },
    });
    if ((kind === "click" && pendingClicks.has(id)) || (kind === "dismiss" && pendingDismissals.has(id))) {
      button.disabled = true;
    }
    return button;
  }

  function categoryLine(p) {
    return el("span", { className: "card-sub" }, [
      `${str(p.brand, "—")} · `,
      el("span", { className: "card-category", text: str(p.category, "—") }),
    ]);
  }

  function renderCatalogue(list) {
    const box = $("catalogue");
    clear(box);
    $("catalogue-count").textContent = list.length ? `(${list.length})` : "";
    if (!list.length) {
      box.append(el("p", { className: "empty", text: "No products loaded." }));
      return;
    }
    const frag = document.createDocumentFragment();
    for (const p of list) {
      const id = str(p.id);
      const inStock = isInStock(p);
      const main = el("button", {
        className: "card-main",
        dataset: { id },
        title: `Record a click on ${str(p.name, id)}`,
        attrs: { type: "button" },
      }, [
        el("span", { className: "card-name", text: str(p.name, "(unnamed)") }),
        categoryLine(p),
        el("span", { className: "card-foot" }, [
          el("span", { className: "card-price", text: fmtPrice(p.price) }),
          el("span", { className: "card-rating", text: fmtRating(p.rating) }),
        ]),
        inStock ? null : stockBadge(),
      ]);
      if (pendingClicks.has(id)) main.disabled = true;
      frag.append(el("div", { className: "product-card" + (inStock ? "" : " is-oos"), dataset: { id } }, [
        main,
        el("div", { className: "card-actions" }, [actionButton("more", p), el("span", { className: "card-id", text: id })]),
      ]));
    }
    box.append(frag);
    markCards();
  }

  /**
   * Highlight the last clicked product everywhere; grey out dismissed ones in the catalogue and
   * in search results (a search still finds a dismissed product it asks for, marked down).
   */
  function markCards() {
    for (const node of document.querySelectorAll(".product-card, .result-row, .feed-card")) {
      node.classList.toggle("is-last", lastClickedId !== null && node.dataset.id === lastClickedId);
    }
    for (const node of document.querySelectorAll(".product-card, .result-row")) {
      node.classList.toggle("is-dismissed", dismissedIds.has(node.dataset.id));
    }
  }

  /** "3 seen left out", "ran out before k": how the server had to bend the list. */
  function listNotes(result) {
    const notes = [];
    const excluded = toNumber(result.excluded_count);
    if (excluded > 0) notes.push(`${excluded} seen left out`);
    if (result.exhausted) notes.push("the filtered catalogue ran out before the list was full");
    return notes;
  }

  function renderFeed(result, tuning) {
    $("foryou").dataset.recId = str(result.rec_id, "");
    const source = str(result.source);
    const known = Object.prototype.hasOwnProperty.call(SOURCE_LABELS, source);
    const badge = $("foryou-source");
    badge.textContent = known ? SOURCE_LABELS[source] : str(source, "—");
    badge.className = "source-badge" + (known ? ` source-${source}` : "");

    const candidates = Array.isArray(result.candidates) ? result.candidates : [];
    const how = {
      session: "close to what you clicked",
      popular: "clicked most by everyone lately; click something to make it yours",
      rating: "the best rated; click something to make it yours",
    }[source] || "";
    const parts = [`${candidates.length} pick${candidates.length === 1 ? "" : "s"}${how ? ", " + how : ""}`];
    parts.push(...listNotes(result));
    if (tuning.diversity > 0) parts.push(`diversity ${tuning.diversity.toFixed(1)}`);
    parts.push(fmtMs(result.timing_ms));
    $("foryou-meta").textContent = parts.join(" · ");

    const box = $("foryou");
    clear(box);
    if (!candidates.length) {
      box.append(el("p", { className: "empty", text: "Nothing left to suggest: you have seen or dismissed it all." }));
      return;
    }
    const showDistance = source === "session";
    const frag = document.createDocumentFragment();
    for (const c of candidates) {
      const inStock = isInStock(c);
      frag.append(el("div", { className: "feed-card" + (inStock ? "" : " is-oos"), dataset: { id: str(c.id) } }, [
        el("span", { className: "card-name", text: str(c.name, "(unnamed)") }),
        categoryLine(c),
        el("span", { className: "card-foot" }, [
          el("span", { className: "card-price", text: fmtPrice(c.price) }),
          el("span", { className: "card-rating", text: fmtRating(c.rating) }),
          inStock ? null : stockBadge(),
        ]),
        whyLine(c.why, showDistance),
        el("div", { className: "card-actions" }, [
          actionButton("click", c),
          actionButton("more", c),
          actionButton("dismiss", c),
        ]),
      ]));
    }
    box.append(frag);
    markCards();
  }

  function setResultsHeading() {
    $("results-heading").textContent = similarOf ? `More like ${similarOf.name}` : "Results";
    const back = $("results-back");
    back.hidden = !similarOf;
    back.textContent = lastSearch ? "← Back to search results" : "← Back";
  }

  function resetResults(message) {
    const tbody = $("results").tBodies[0];
    clear(tbody);
    tbody.append(el("tr", { className: "placeholder-row" }, [
      el("td", { text: message || "No search yet.", attrs: { colspan: "6" } }),
    ]));
    $("search-meta").textContent = "Run a search to see candidates.";
  }

  function renderMeta(result, body) {
    const meta = $("search-meta");
    clear(meta);
    const candidates = Array.isArray(result.candidates) ? result.candidates : [];
    const parts = [];
    parts.push(el("strong", { text: `${candidates.length} candidate${candidates.length === 1 ? "" : "s"}` }));
    parts.push(" · embed " + fmtMs(result.embed_ms));
    if (result.embed_cached) parts.push(" ", el("span", { className: "badge badge-cached", text: "(cached)" }));
    parts.push(" · search " + fmtMs(result.search_ms));
    if (result.rerank_ms !== undefined && result.rerank_ms !== null) parts.push(" · rerank " + fmtMs(result.rerank_ms));
    if (result.timing_ms !== undefined && result.timing_ms !== null) parts.push(" · total " + fmtMs(result.timing_ms));
    for (const note of listNotes(result)) parts.push(" · " + note);
    parts.push(el("br"));
    parts.push("Filter: ");
    parts.push(el("code", { className: "filter", text: str(result.filter_clause, "*") }));
    parts.push(el("br"));

    let sessionText;
    if (result.used_session) sessionText = "session vector blended";
    else if (body && body.use_session) sessionText = "session vector requested but not used";
    else sessionText = "session vector off";
    parts.push(el("span", { className: result.used_session ? "flag on" : "flag", text: sessionText }));
    parts.push(" · ");
    let rerankText;
    if (result.used_rerank) rerankText = "category-affinity rerank applied";
    else if (body && body.rerank) rerankText = "rerank requested but not applied";
    else rerankText = "rerank off";
    parts.push(el("span", { className: result.used_rerank ? "flag on" : "flag", text: rerankText }));
    if (body && body.diversity > 0) parts.push(" · ", el("span", { className: "flag on", text: `diversity ${body.diversity.toFixed(1)}` }));

    for (const part of parts) meta.append(part);
  }

  const FACET_LABELS = {
    brand: "Brand", category: "Category", min_price: "Min price", max_price: "Max price",
    in_stock_only: "In stock", min_rating: "Min rating",
  };

  /**
   * What the engine understood in the query, as chips. Removing one takes its words out of the
   * query and searches again; when its words cannot be found as typed, the search runs again
   * with understanding off, so one click always undoes the chip.
   */
  function renderUnderstood(result, body) {
    const box = $("understood");
    clear(box);
    const understood = result.understood || {};
    const phrases = understood.phrases || {};
    const shown = new Set();
    for (const [facet, label] of Object.entries(FACET_LABELS)) {
      if (!(facet in understood)) continue;
      const phrase = phrases[facet] || "";
      if (phrase && shown.has(phrase)) continue; // "100-200" is one chip for both prices
      shown.add(phrase);
      const value = facet === "in_stock_only" ? "yes" : String(understood[facet]);
      const chip = el("button", {
        className: "chip", text: `${label}: ${value} ×`,
        attrs: { type: "button", "data-facet": facet, "aria-label": `Remove ${label} ${value} and search again` },
      });
      chip.addEventListener("click", () => {
        const query = body.query;
        const at = phrase ? query.toLowerCase().indexOf(phrase.toLowerCase()) : -1;
        const rest = at >= 0 ? (query.slice(0, at) + query.slice(at + phrase.length)).replace(/\s+/g, " ").trim() : "";
        const next = rest ? { ...body, query: rest } : { ...body, understand: false };
        if (rest) $("query").value = rest;
        runSearch(next, false);
      });
      box.append(chip);
    }
    const ignored = Array.isArray(understood.ignored) ? understood.ignored : [];
    for (const item of ignored) {
      box.append(el("span", { className: "chip chip-ignored", text: `ignored “${item.text}”: ${item.reason}` }));
    }
    box.hidden = !box.childElementCount;
  }

  function renderSimilarMeta(result, anchor) {
    const meta = $("search-meta");
    clear(meta);
    const candidates = Array.isArray(result.candidates) ? result.candidates : [];
    const parts = [
      el("strong", { text: `${candidates.length} neighbour${candidates.length === 1 ? "" : "s"}` }),
      " of ",
      el("code", { text: anchor.id }),
      " · total " + fmtMs(result.timing_ms),
    ];
    for (const note of listNotes(result)) parts.push(" · " + note);
    parts.push(el("br"), "Filter: ", el("code", { className: "filter", text: str(result.filter_clause, "*") }));
    for (const part of parts) meta.append(part);
  }

  function renderResults(result) {
    $("results").dataset.recId = str(result.rec_id, "");
    const tbody = $("results").tBodies[0];
    clear(tbody);
    const candidates = (Array.isArray(result.candidates) ? result.candidates : [])
      .filter((c) => !dismissedHere.has(str(c.id)));
    if (!candidates.length) {
      tbody.append(el("tr", { className: "empty-row" }, [
        el("td", { text: "No matches. Try loosening the filters.", attrs: { colspan: "6" } }),
      ]));
      return;
    }
    const frag = document.createDocumentFragment();
    candidates.forEach((c, i) => {
      const id = str(c.id);
      const distance = toNumber(c.vector_distance);
      const score = toNumber(c.score);

      const nameCell = el("td", { className: "cell-name" }, [
        el("span", { className: "name", text: str(c.name, "(unnamed)") }),
        isInStock(c) ? null : stockBadge(),
        c.description ? el("span", { className: "desc", text: String(c.description) }) : null,
        whyLine(c.why, false),
      ]);

      const scoreCell = el("td", { className: "num cell-score", title: "cosine distance, lower is closer" }, [
        el("span", { className: "distance", text: Number.isNaN(distance) ? "—" : fmtDistance(distance, 4) }),
      ]);
      if (!Number.isNaN(distance) && !Number.isNaN(score) && Math.abs(score - distance) > 1e-9) {
        scoreCell.append(el("span", {
          className: "score",
          text: `score ${score.toFixed(4)}`,
          title: "the distance after the rerank terms in the badges",
        }));
      }

      const row = el("tr", { className: "result-row", dataset: { id } }, [
        el("td", { className: "num rank", text: String(i + 1) }),
        el("td", { className: "cell-id" }, [el("code", { text: id })]),
        nameCell,
        el("td", { className: "cell-details" }, [
          `${str(c.brand, "—")} · ${str(c.category, "—")} · `,
          el("span", { className: "price", text: fmtPrice(c.price) }),
          " · ",
          el("span", { className: "rating", text: fmtRating(c.rating) }),
        ]),
        scoreCell,
        el("td", { className: "cell-action" }, [
          el("div", { className: "row-actions" }, [
            actionButton("click", c),
            actionButton("more", c),
            actionButton("dismiss", c),
          ]),
        ]),
      ]);
      frag.append(row);
    });
    tbody.append(frag);
    markCards();
  }

  /**
   * Take a dismissed product off the page at once. The feed leaves it out from now on, and so do
   * the results of the query on show (dismissedHere); a new search that asks for it shows it
   * again, greyed, below its neighbours, saying it was dismissed.
   */
  function removeShown(productId) {
    for (const node of document.querySelectorAll("#results .result-row, #foryou .feed-card")) {
      if (node.dataset.id === productId) node.remove();
    }
  }

  // ------------------------------------------------------------- actions --

  async function loadState() {
    const seq = ++liveSeq;
    const state = await api("GET", "/state");
    // A newer GET /state started meanwhile owns the live panels; the catalogue is this one's.
    renderState(state, seq === liveSeq);
    return state;
  }

  /** Session, trending and index only: what a click or a dismissal changes. */
  async function loadLive() {
    const seq = ++liveSeq;
    const state = await api("GET", "/state");
    if (seq === liveSeq) renderLive(state);
  }

  function readNumberField(id) {
    const raw = $(id).value.trim();
    if (raw === "") return "";
    const n = Number(raw);
    return Number.isFinite(n) ? n : "";
  }

  function labelFor(input) {
    const label = document.querySelector(`label[for="${input.id}"]`);
    return label ? label.textContent.trim() : input.id;
  }

  /** The filter fields of the search form (search and "more like this" share them), or throw. */
  function readFilters() {
    for (const input of $("search-form").querySelectorAll("input, select")) {
      if (input.id === "query") continue; // "more like this" needs no query; readSearchForm checks it
      if (!input.checkValidity()) {
        input.focus();
        throw new ApiError(`${labelFor(input)}: ${input.validationMessage || "invalid value"}`);
      }
    }
    const minPrice = readNumberField("min-price");
    const maxPrice = readNumberField("max-price");
    if (minPrice !== "" && maxPrice !== "" && minPrice > maxPrice) {
      $("max-price").focus();
      throw new ApiError("Max price must be at least the min price.");
    }
    return {
      category: $("category").value,
      brand: $("brand").value,
      min_price: minPrice,
      max_price: maxPrice,
      min_rating: readNumberField("min-rating"),
      text_match: $("text-match").value.trim(),
      in_stock_only: $("in-stock-only").checked,
    };
  }

  function readK() {
    const k = parseInt($("k").value, 10);
    return Number.isFinite(k) ? Math.min(100, Math.max(1, k)) : 10;
  }

  /** The two controls that shape every list: search, For you and "more like this". */
  function readTuning() {
    const diversity = Math.round(Number($("diversity").value) * 10) / 10;
    return {
      exclude_clicked: $("exclude-clicked").checked,
      diversity: Number.isFinite(diversity) ? Math.min(1, Math.max(0, diversity)) : 0,
    };
  }

  /** Build the /search body from the form, or throw with a readable message. */
  function readSearchForm() {
    const queryInput = $("query");
    if (!queryInput.checkValidity() || !queryInput.value.trim()) {
      queryInput.focus();
      throw new ApiError("Enter a search query.");
    }
    return {
      query: queryInput.value.trim(),
      ...readFilters(),
      k: readK(),
      use_session: $("use-session").checked,
      rerank: $("rerank").checked,
      ...readTuning(),
    };
  }

  /**
   * POST a request whose answer fills the results list. Returns the answer, or null when it
   * failed (the status says why) or a newer request superseded it (only the newest renders).
   */
  async function fetchResults(path, body, quiet, busyMessage) {
    const seq = ++resultsSeq;
    resultsInFlight += 1;
    $("search-btn").disabled = true;
    $("results").classList.add("loading");
    if (!quiet) info(busyMessage);
    try {
      const result = await api("POST", path, body);
      return seq === resultsSeq ? result : null;
    } catch (err) {
      if (seq === resultsSeq) fail(err);
      return null;
    } finally {
      resultsInFlight -= 1;
      if (resultsInFlight === 0) {
        $("search-btn").disabled = false;
        $("results").classList.remove("loading");
      }
    }
  }

  function countText(result, noun) {
    const n = Array.isArray(result.candidates) ? result.candidates.length : 0;
    return `${n} ${noun}${n === 1 ? "" : "s"}`;
  }

  /**
   * Send a search. `quiet` keeps the current status message (used when a
   * search is re-run after another action, whose message should stay).
   */
  async function runSearch(body, quiet) {
    const result = await fetchResults("/search", body, quiet, "Searching…");
    if (!result) return;
    if (!lastSearch || lastSearch.query !== body.query) dismissedHere.clear();
    lastSearch = body;
    similarOf = null;
    setResultsHeading();
    renderMeta(result, body);
    renderUnderstood(result, body);
    renderResults(result);
    if (!quiet) ok(`Found ${countText(result, "candidate")} in ${fmtMs(result.timing_ms)}.`);
  }

  /** "More like this": the product's neighbours under the search form's filters and tuning. */
  async function runSimilar(anchor, quiet) {
    let body;
    try {
      body = { product_id: anchor.id, k: readK(), ...readFilters(), ...readTuning() };
    } catch (err) {
      fail(err);
      return false;
    }
    const result = await fetchResults("/similar", body, quiet, `Finding products like ${anchor.name}…`);
    if (!result) return false;
    similarOf = anchor;
    $("understood").hidden = true;
    setResultsHeading();
    renderSimilarMeta(result, anchor);
    renderResults(result);
    if (!quiet) ok(`${countText(result, "product")} like ${anchor.name}.`);
    return true;
  }

  async function showSimilar(productId, fallbackName, trigger) {
    if (!productId) return;
    const anchor = { id: productId, name: productName(productId, fallbackName) };
    const shown = await runSimilar(anchor, false);
    // Opened from the For you panel or the catalogue: bring the list (and keyboard focus) to it.
    if (shown && trigger && !$("results-panel").contains(trigger)) {
      $("results-panel").scrollIntoView({ block: "start" });
      $("results-heading").focus({ preventScroll: true });
    }
  }

  function backToSearch() {
    similarOf = null;
    if (lastSearch) {
      runSearch(lastSearch, false);
      return;
    }
    resultsSeq += 1; // ignore a "more like this" still in flight
    setResultsHeading();
    resetResults();
  }

  /** Re-run whatever the results list shows, so it reflects a click, a dismissal or new tuning. */
  function rerunResults() {
    if (similarOf) return runSimilar(similarOf, true);
    if (lastSearch) return runSearch(lastSearch, true);
    return Promise.resolve();
  }

  async function refreshFeed() {
    const seq = ++feedSeq;
    const tuning = readTuning();
    const box = $("foryou");
    box.classList.add("loading");
    try {
      const result = await api("POST", "/recommend", { k: FEED_K, ...tuning });
      if (seq === feedSeq) renderFeed(result, tuning);
    } catch (err) {
      if (seq === feedSeq) {
        $("foryou-meta").textContent = "Could not load your feed.";
        fail(err);
      }
    } finally {
      if (seq === feedSeq) box.classList.remove("loading");
    }
  }

  const LISTED = ".result-row, .feed-card, .product-card";
  const ITEM_BUTTONS = ["click-btn", "more-btn", "dismiss-btn", "card-main"];

  /** Which listed product's button has keyboard focus, so that focus survives the lists re-rendering. */
  function focusSpot() {
    const node = document.activeElement;
    if (!(node instanceof HTMLElement) || !node.dataset.id) return null;
    const list = node.closest("#results, #foryou, #catalogue");
    const item = node.closest(LISTED);
    const kind = ITEM_BUTTONS.find((name) => node.classList.contains(name));
    if (!list || !item || !kind) return null;
    return { listId: list.id, kind, id: node.dataset.id, index: Array.from(list.querySelectorAll(LISTED)).indexOf(item) };
  }

  /**
   * Put focus back after the lists re-rendered (or the focused product was dismissed): on the same
   * button of the same product, else on that button of the product now in its place.
   */
  function restoreFocus(spot) {
    const active = document.activeElement;
    if (!spot || (active && active !== document.body)) return;
    const buttons = Array.from($(spot.listId).querySelectorAll("." + spot.kind));
    const target = buttons.find((b) => b.dataset.id === spot.id) || buttons[Math.min(spot.index, buttons.length - 1)];
    if (target) target.focus({ preventScroll: true });
  }

  /** After a click, a dismissal or a reset: every list and the side panels catch up. */
  function refreshAfterFeedback() {
    return Promise.all([refreshFeed(), rerunResults(), loadLive().catch(fail), loadReport()]);
  }

  async function recordClick(productId, trigger) {
    if (!productId || pendingClicks.has(productId)) return;
    pendingClicks.add(productId);
    const spot = focusSpot();
    const related = Array.from(document.querySelectorAll(".click-btn, .card-main"))
      .filter((node) => node.dataset.id === productId);
    if (trigger && !related.includes(trigger)) related.push(trigger);
    const hadFocus = trigger && document.activeElement === trigger ? trigger : null;
    try {
      await busy(related, async () => {
        const extra = {};
        const list = trigger ? trigger.closest("#results, #foryou") : null;
        // The list's rec_id attributes the click to what was shown (GET /report counts it).
        if (list && list.dataset.recId) extra.rec_id = list.dataset.recId;
        const res = await sendEvent("/click", productId, extra);
        const name = str(res.name, productId);
        const category = str(res.category, "unknown category");
        ok(`Clicked ${name} — ${category} affinity ${fmtAffinity(res.affinity)}`);
        if (res.user && typeof res.user === "object") renderSession(res.user);
      });
    } catch (err) {
      fail(err);
      return;
    } finally {
      pendingClicks.delete(productId);
      // Disabling a focused button drops focus; give it back for keyboard users.
      if (hadFocus && hadFocus.isConnected && document.activeElement !== hadFocus) hadFocus.focus();
    }
    await refreshAfterFeedback();
    restoreFocus(spot);
  }

  async function dismissProduct(productId) {
    if (!productId || pendingDismissals.has(productId)) return;
    pendingDismissals.add(productId);
    const spot = focusSpot();
    const related = Array.from(document.querySelectorAll(".dismiss-btn"))
      .filter((node) => node.dataset.id === productId);
    try {
      await busy(related, async () => {
        const res = await sendEvent("/dismiss", productId);
        removeShown(productId);
        if (lastSearch) dismissedHere.add(productId);
        const name = str(res.name, productId);
        ok(`Not interested in ${name}: it stays out of your feed until you reset the session; ` +
          "a new search that asks for it shows it marked down.");
        if (res.user && typeof res.user === "object") renderSession(res.user);
      });
    } catch (err) {
      fail(err);
      return;
    } finally {
      pendingDismissals.delete(productId);
    }
    await refreshAfterFeedback();
    restoreFocus(spot);
  }

  function tuningChanged() {
    const tuning = readTuning();
    $("diversity-value").textContent = tuning.diversity.toFixed(1);
    if (lastSearch) lastSearch = { ...lastSearch, ...tuning };
    refreshFeed();
    rerunResults();
  }

  async function resetUser() {
    const button = $("reset-user-btn");
    try {
      await busy(button, async () => {
        await api("POST", "/reset-user", {});
        dismissedHere.clear();
        ok("Session reset: clicks, dismissals, affinities and session vector cleared.");
      });
    } catch (err) {
      fail(err);
      return;
    }
    await refreshAfterFeedback();
  }

  async function refreshEmbedding() {
    const button = $("refresh-btn");
    const productId = $("refresh-product").value;
    const text = $("refresh-text").value.trim();
    const out = $("refresh-result");
    if (!productId) {
      fail(new ApiError("Choose a product to re-embed."));
      return;
    }
    if (!text) {
      $("refresh-text").focus();
      fail(new ApiError("Enter the new description text."));
      return;
    }
    try {
      await busy(button, async () => {
        out.textContent = "";
        const res = await api("POST", "/refresh-embedding", { product_id: productId, text });
        const msg = `Re-embedded ${str(res.product_id, productId)} in ${fmtMs(res.embed_ms)}`;
        out.textContent = msg;
        ok(msg + ".");
      });
    } catch (err) {
      out.textContent = "";
      fail(err);
      return;
    }
    try {
      await loadState();
    } catch (err) {
      fail(err);
    }
    await Promise.all([refreshFeed(), rerunResults()]);
  }

  async function resetIndex() {
    const ok_ = window.confirm(
      "Drop the index and all products, re-seed the catalogue and clear your session?");
    if (!ok_) return;
    const button = $("reset-index-btn");
    try {
      await busy(button, async () => {
        const res = await api("POST", "/reset-index", {});
        lastSearch = null;
        similarOf = null;
        resultsSeq += 1; // ignore any search still in flight
        setResultsHeading();
        resetResults("Index was reset. Run a new search.");
        $("refresh-result").textContent = "";
        ok(`Re-seeded ${str(res.seeded, "?")} products`);
        await loadState();
      });
    } catch (err) {
      fail(err);
      return;
    }
    await refreshFeed();
  }

  // -------------------------------------------------------------- wiring --

  function init() {
    $("search-form").addEventListener("submit", (event) => {
      event.preventDefault();
      if (resultsInFlight > 0) return; // the button is disabled; ignore Enter too
      let body;
      try {
        body = readSearchForm();
      } catch (err) {
        fail(err);
        return;
      }
      runSearch(body, false);
    });

    // Every listed product's buttons, wherever the product is listed.
    document.querySelector("main").addEventListener("click", (event) => {
      const button = event.target instanceof Element ? event.target.closest("button") : null;
      if (!button || button.disabled) return;
      const classes = button.classList;
      if (classes.contains("click-btn") || classes.contains("card-main")) recordClick(button.dataset.id, button);
      else if (classes.contains("more-btn")) showSimilar(button.dataset.id, button.dataset.name, button);
      else if (classes.contains("dismiss-btn")) dismissProduct(button.dataset.id);
    });

    $("diversity").addEventListener("input", () => {
      $("diversity-value").textContent = readTuning().diversity.toFixed(1);
    });
    $("diversity").addEventListener("change", tuningChanged);
    $("exclude-clicked").addEventListener("change", tuningChanged);
    $("results-back").addEventListener("click", backToSearch);
    $("reset-user-btn").addEventListener("click", resetUser);
    $("refresh-btn").addEventListener("click", refreshEmbedding);
    $("reset-index-btn").addEventListener("click", resetIndex);

    renderAffinities(null);
    renderRecent($("recent-clicks"), null, "Nothing clicked yet.");
    renderRecent($("dismissed"), null, "Nothing dismissed.");
    renderTrending(null);
    info("Loading state…");
    loadState()
      .then(() => {
        ok("Ready. Run a search, then click products to build a session.");
        return refreshFeed().then(loadReport);
      })
      .catch(fail);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
