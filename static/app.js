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

  let lastSearch = null;        // body of the last search that was sent, or null
  let searchSeq = 0;            // increases on each search; only the newest renders
  let searchesInFlight = 0;
  let lastClickedId = null;
  const pendingClicks = new Set();
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

  class ApiError extends Error {}

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
        throw new ApiError(String(data.error));
      }
      throw new ApiError(`Request failed: HTTP ${response.status}${response.statusText ? " " + response.statusText : ""}.`);
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

  function renderState(state) {
    const categories = Array.isArray(state.categories) ? state.categories : [];
    const brands = Array.isArray(state.brands) ? state.brands : [];
    fillSelect($("category"), categories.map((c) => ({ value: c, label: c })), true);
    fillSelect($("brand"), brands.map((b) => ({ value: b, label: b })), true);

    products = Array.isArray(state.products) ? state.products : [];
    const byId = products.slice().sort((a, b) =>
      String(a.id).localeCompare(String(b.id), undefined, { numeric: true }));
    fillSelect($("refresh-product"), byId.map((p) => ({ value: p.id, label: `${p.id} — ${str(p.name, "(unnamed)")}` })), false);

    if (state.user) renderSession(state.user);
    if (state.index) renderIndex(state.index);
    renderCatalogue(products);
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

    renderAffinities(user.affinities);
    renderRecent(user.recent_clicks);
    markLastClicked();
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
      const fill = el("span", { className: "bar-fill" });
      fill.style.width = Math.max(2, Math.round((Math.abs(value) / max) * 100)) + "%";
      list.append(el("li", { className: "bar-item" }, [
        el("span", { className: "bar-label", text: category }),
        el("span", { className: "bar-track", attrs: { "aria-hidden": "true" } }, [fill]),
        el("span", { className: "bar-value", text: fmtAffinity(value) }),
      ]));
    }
  }

  function renderRecent(recent) {
    const list = $("recent-clicks");
    clear(list);
    const items = Array.isArray(recent) ? recent : [];
    if (!items.length) {
      list.append(el("li", { className: "empty", text: "Nothing clicked yet." }));
      return;
    }
    for (const item of items) {
      const entry = item && typeof item === "object" ? item : { id: item, name: "" };
      list.append(el("li", { title: str(entry.id) }, [
        el("span", { text: str(entry.name, str(entry.id, "?")) }),
        entry.id ? el("span", { className: "muted small", text: ` ${entry.id}` }) : null,
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
      const inStock = isInStock(p);
      const card = el("button", {
        className: "product-card" + (inStock ? "" : " is-oos"),
        dataset: { id: str(p.id) },
        title: `Record a click on ${str(p.name, str(p.id))}`,
        attrs: { type: "button" },
      }, [
        el("span", { className: "card-name", text: str(p.name, "(unnamed)") }),
        el("span", { className: "card-sub", text: `${str(p.brand, "—")} · ${str(p.category, "—")}` }),
        el("span", { className: "card-foot" }, [
          el("span", { className: "card-price", text: fmtPrice(p.price) }),
          el("span", { className: "card-rating", text: fmtRating(p.rating) }),
        ]),
        inStock ? null : stockBadge(),
        el("span", { className: "card-id", text: str(p.id) }),
      ]);
      frag.append(card);
    }
    box.append(frag);
    markLastClicked();
  }

  function markLastClicked() {
    for (const node of document.querySelectorAll(".product-card, .result-row")) {
      node.classList.toggle("is-last", lastClickedId !== null && node.dataset.id === lastClickedId);
    }
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

    for (const part of parts) meta.append(part);
  }

  function renderResults(result) {
    const tbody = $("results").tBodies[0];
    clear(tbody);
    const candidates = Array.isArray(result.candidates) ? result.candidates : [];
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
      ]);

      const scoreCell = el("td", { className: "num cell-score", title: "cosine distance, lower is closer" }, [
        el("span", { className: "distance", text: Number.isNaN(distance) ? "—" : distance.toFixed(4) }),
      ]);
      if (!Number.isNaN(distance) && !Number.isNaN(score) && Math.abs(score - distance) > 1e-9) {
        const delta = distance - score;
        const label = delta >= 0
          ? `affinity −${delta.toFixed(3)}`
          : `affinity +${(-delta).toFixed(3)}`;
        scoreCell.append(el("span", {
          className: "badge badge-affinity",
          text: label,
          title: `Reranked score ${score.toFixed(4)} (vector distance ${distance.toFixed(4)})`,
        }));
      }

      const button = el("button", {
        className: "btn btn-small click-btn",
        text: "Click",
        dataset: { id },
        title: `Record a click on ${str(c.name, id)}`,
        attrs: { type: "button" },
      });

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
        el("td", { className: "cell-action" }, [button]),
      ]);
      if (pendingClicks.has(id)) button.disabled = true;
      frag.append(row);
    });
    tbody.append(frag);
    markLastClicked();
  }

  // ------------------------------------------------------------- actions --

  async function loadState() {
    const state = await api("GET", "/state");
    renderState(state);
    return state;
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

  /** Build the /search body from the form, or throw with a readable message. */
  function readSearchForm() {
    const form = $("search-form");
    for (const input of form.querySelectorAll("input, select")) {
      if (!input.checkValidity()) {
        input.focus();
        throw new ApiError(`${labelFor(input)}: ${input.validationMessage || "invalid value"}`);
      }
    }
    const query = $("query").value.trim();
    if (!query) {
      $("query").focus();
      throw new ApiError("Enter a search query.");
    }
    const minPrice = readNumberField("min-price");
    const maxPrice = readNumberField("max-price");
    if (minPrice !== "" && maxPrice !== "" && minPrice > maxPrice) {
      $("max-price").focus();
      throw new ApiError("Max price must be at least the min price.");
    }
    let k = parseInt($("k").value, 10);
    if (!Number.isFinite(k)) k = 10;
    k = Math.min(100, Math.max(1, k));
    return {
      query,
      category: $("category").value,
      brand: $("brand").value,
      min_price: minPrice,
      max_price: maxPrice,
      min_rating: readNumberField("min-rating"),
      text_match: $("text-match").value.trim(),
      k,
      in_stock_only: $("in-stock-only").checked,
      use_session: $("use-session").checked,
      rerank: $("rerank").checked,
    };
  }

  /**
   * Send a search. `quiet` keeps the current status message (used when a
   * search is re-run after another action, whose message should stay).
   */
  async function runSearch(body, quiet) {
    const seq = ++searchSeq;
    const button = $("search-btn");
    searchesInFlight += 1;
    button.disabled = true;
    $("results").classList.add("loading");
    if (!quiet) info("Searching…");
    try {
      const result = await api("POST", "/search", body);
      if (seq !== searchSeq) return; // a newer search superseded this one
      lastSearch = body;
      renderMeta(result, body);
      renderResults(result);
      if (!quiet) {
        const n = Array.isArray(result.candidates) ? result.candidates.length : 0;
        ok(`Found ${n} candidate${n === 1 ? "" : "s"} in ${fmtMs(result.timing_ms)}.`);
      }
    } catch (err) {
      if (seq === searchSeq) fail(err);
    } finally {
      searchesInFlight -= 1;
      if (searchesInFlight === 0) {
        button.disabled = false;
        $("results").classList.remove("loading");
      }
    }
  }

  function rerunLastSearch() {
    if (lastSearch) return runSearch(lastSearch, true);
    return Promise.resolve();
  }

  async function recordClick(productId, trigger) {
    if (!productId || pendingClicks.has(productId)) return;
    pendingClicks.add(productId);
    const related = Array.from(document.querySelectorAll(".click-btn, .product-card"))
      .filter((node) => node.dataset.id === productId);
    if (trigger && !related.includes(trigger)) related.push(trigger);
    const hadFocus = trigger && document.activeElement === trigger ? trigger : null;
    try {
      await busy(related, async () => {
        const res = await api("POST", "/click", { product_id: productId });
        const name = str(res.name, productId);
        const category = str(res.category, "unknown category");
        ok(`Clicked ${name} — ${category} affinity ${fmtAffinity(res.affinity)}`);
        if (res.user && typeof res.user === "object") renderSession(res.user);
        else await loadState();
      });
    } catch (err) {
      fail(err);
      return;
    } finally {
      pendingClicks.delete(productId);
      // Disabling a focused button drops focus; give it back for keyboard users.
      if (hadFocus && hadFocus.isConnected && document.activeElement !== hadFocus) hadFocus.focus();
    }
    await rerunLastSearch();
  }

  async function resetUser() {
    const button = $("reset-user-btn");
    try {
      await busy(button, async () => {
        await api("POST", "/reset-user", {});
        ok("Session reset: clicks, affinities and session vector cleared.");
        await loadState();
      });
    } catch (err) {
      fail(err);
      return;
    }
    await rerunLastSearch();
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
    await rerunLastSearch();
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
        searchSeq += 1; // ignore any search still in flight
        resetResults("Index was reset. Run a new search.");
        $("refresh-result").textContent = "";
        ok(`Re-seeded ${str(res.seeded, "?")} products`);
        await loadState();
      });
    } catch (err) {
      fail(err);
    }
  }

  // -------------------------------------------------------------- wiring --

  function init() {
    $("search-form").addEventListener("submit", (event) => {
      event.preventDefault();
      if (searchesInFlight > 0) return; // the button is disabled; ignore Enter too
      let body;
      try {
        body = readSearchForm();
      } catch (err) {
        fail(err);
        return;
      }
      runSearch(body, false);
    });

    $("results").addEventListener("click", (event) => {
      const button = event.target.closest(".click-btn");
      if (!button || button.disabled) return;
      recordClick(button.dataset.id, button);
    });

    $("catalogue").addEventListener("click", (event) => {
      const card = event.target.closest(".product-card");
      if (!card || card.disabled) return;
      recordClick(card.dataset.id, card);
    });

    $("reset-user-btn").addEventListener("click", resetUser);
    $("refresh-btn").addEventListener("click", refreshEmbedding);
    $("reset-index-btn").addEventListener("click", resetIndex);

    renderAffinities(null);
    renderRecent(null);
    info("Loading state…");
    loadState()
      .then(() => ok("Ready. Run a search, then click products to build a session."))
      .catch(fail);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
