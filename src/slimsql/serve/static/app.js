/* slimsql's web page: ask a question, see and edit its SQL, its result, a chart, the history.
 *
 * Plain JavaScript, no framework, nothing fetched but this server's own /v1 API.
 * Every piece of data reaches the page through textContent / createTextNode (never as
 * HTML), so a value or a question cannot become markup.
 */
"use strict";

(function () {
  const KEY_STORE = "slimsql.apiKey";
  const DISPLAY_ROWS = 1000; // rows drawn in the table (the CSV has them all)
  const MAX_BARS = 25;
  // earlier turns sent with a follow-up: as many as the server's prompt shows (/v1/models says how many)
  let maxTurns = 3;
  const SVG = "http://www.w3.org/2000/svg";

  const $ = (id) => document.getElementById(id);

  const state = {
    entries: [], // every answer of this session, oldest first
    conversation: [], // the current conversation's turns: {question, sql, entryId}
    conversationId: 1,
    current: null, // the entry shown
    editing: false,
    busy: false,
    lastError: null, // the last ask error, for "Edit this SQL"
    nextId: 1,
  };

  // -- small helpers -----------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "text") node.textContent = value;
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(typeof child === "string" ? document.createTextNode(child) : child);
    }
    return node;
  }

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function oneLine(text) {
    return String(text).replace(/\s+/g, " ").trim();
  }

  function plural(n, word) {
    return `${n.toLocaleString("en-US")} ${word}${n === 1 ? "" : "s"}`;
  }

  function seconds(value) {
    if (typeof value !== "number" || !isFinite(value)) return "";
    if (value < 0.0005) return "<1 ms";
    return value < 1 ? `${Math.round(value * 1000)} ms` : `${value.toFixed(2)} s`;
  }

  function formatNumber(value) {
    if (!isFinite(value)) return String(value);
    return Number.isInteger(value)
      ? value.toLocaleString("en-US")
      : value.toLocaleString("en-US", { maximumFractionDigits: 2 });
  }

  /** A cell as the table shows it: a float without binary noise (356405.05000000005 -> 356405.05,
   * at most 15 significant digits); the CSV keeps the exact value (cellText). */
  function shownText(value) {
    if (typeof value === "number" && isFinite(value) && !Number.isInteger(value)) {
      return String(Number(value.toPrecision(15)));
    }
    return cellText(value);
  }

  function cellText(value) {
    if (typeof value === "string") return value;
    if (typeof value === "number" || typeof value === "boolean") return String(value);
    return JSON.stringify(value);
  }

  function storedKey() {
    try {
      return sessionStorage.getItem(KEY_STORE) || "";
    } catch (_) {
      return "";
    }
  }

  function storeKey(key) {
    try {
      if (key) sessionStorage.setItem(KEY_STORE, key);
      else sessionStorage.removeItem(KEY_STORE);
    } catch (_) {
      /* storage off: the key lasts until the page is left */
    }
    state.key = key;
  }

  // -- the API ---------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(message, details) {
      super(message);
      Object.assign(this, details);
    }
  }

  async function api(method, path, body) {
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const key = state.key !== undefined ? state.key : storedKey();
    if (key) headers["X-API-Key"] = key;
    let response;
    try {
      response = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        credentials: "same-origin",
        cache: "no-store",
      });
    } catch (err) {
      throw new ApiError("cannot reach the server", { status: 0, code: "network" });
    }
    let data = null;
    try {
      data = await response.json();
    } catch (_) {
      data = null;
    }
    if (!response.ok) {
      const error = (data && data.error) || {};
      throw new ApiError(oneLine(error.message || `the server answered HTTP ${response.status}`), {
        status: response.status,
        code: error.code || `http_${response.status}`,
        sql: typeof error.sql === "string" ? error.sql : null,
        trace: error.trace || null,
        retryAfter: response.headers.get("Retry-After"),
      });
    }
    if (data === null) throw new ApiError("the server's reply is not JSON", { status: response.status, code: "bad_reply" });
    return data;
  }

  // -- SQL highlighting ---------------------------------------------------------------

  const KEYWORDS = new Set(
    ("SELECT FROM WHERE AND OR NOT IN IS NULL AS ON JOIN LEFT RIGHT INNER OUTER FULL CROSS NATURAL USING " +
      "GROUP BY ORDER HAVING LIMIT OFFSET DISTINCT ALL UNION INTERSECT EXCEPT CASE WHEN THEN ELSE END WITH " +
      "RECURSIVE ASC DESC BETWEEN LIKE GLOB REGEXP MATCH ESCAPE EXISTS CAST COLLATE TRUE FALSE INSERT INTO " +
      "VALUES UPDATE SET DELETE CREATE TABLE VIEW INDEX TRIGGER DROP ALTER PRAGMA ATTACH DETACH DATABASE " +
      "REPLACE OVER PARTITION WINDOW ROWS RANGE GROUPS PRECEDING FOLLOWING UNBOUNDED CURRENT ROW FILTER " +
      "NULLS FIRST LAST EXPLAIN QUERY PLAN VACUUM BEGIN COMMIT ROLLBACK TEMP TEMPORARY IF PRIMARY KEY " +
      "REFERENCES DEFAULT UNIQUE CHECK CONSTRAINT FOREIGN INTEGER TEXT REAL BLOB NUMERIC").split(" ")
  );

  // one alternative per token kind, tried in this order at each position
  const TOKEN = new RegExp(
    [
      /(--[^\n]*|\/\*[\s\S]*?(?:\*\/|$))/, // 1 comment (an unclosed one runs to the end)
      /('(?:[^']|'')*'?)/, // 2 string ('' escapes a quote)
      /("(?:[^"]|"")*"?|`(?:[^`]|``)*`?|\[[^\]]*\]?)/, // 3 quoted identifier
      /(0[xX][0-9a-fA-F]+|(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)/, // 4 number
      /([A-Za-z_\u00C0-\uFFFF][\w$\u00C0-\uFFFF]*)/, // 5 word: keyword, function or identifier
      /(\s+)/, // 6 space
      /([\s\S])/, // 7 anything else: operators, punctuation
    ]
      .map((r) => r.source)
      .join("|"),
    "y"
  );

  /** The tokens of ``sql``: [{type, text}], whose texts join back to ``sql`` exactly. */
  function tokenize(sql) {
    const tokens = [];
    TOKEN.lastIndex = 0;
    let match;
    while (TOKEN.lastIndex < sql.length && (match = TOKEN.exec(sql)) !== null) {
      const text = match[0];
      let type;
      if (match[1] !== undefined) type = "comment";
      else if (match[2] !== undefined) type = "string";
      else if (match[3] !== undefined) type = "ident";
      else if (match[4] !== undefined) type = "number";
      else if (match[5] !== undefined) {
        if (KEYWORDS.has(text.toUpperCase())) type = "keyword";
        else if (/^\s*\(/.test(sql.slice(TOKEN.lastIndex, TOKEN.lastIndex + 64))) type = "function";
        else type = "ident";
      } else if (match[6] !== undefined) type = "space";
      else type = "punct";
      tokens.push({ type, text });
    }
    return tokens;
  }

  /** Fill ``container`` with ``sql`` as highlighted spans (text nodes only). */
  function highlight(container, sql) {
    container.replaceChildren();
    for (const token of tokenize(sql || "")) {
      if (token.type === "space") container.append(document.createTextNode(token.text));
      else container.append(el("span", { class: `tok tok-${token.type}`, "data-token": token.type, text: token.text }));
    }
  }

  // -- the result: table, chart, CSV ------------------------------------------------

  function renderTable(table, columns, rows) {
    table.replaceChildren();
    const numeric = columns.map((_, i) => rows.some((r) => typeof r[i] === "number")
      && rows.every((r) => r[i] === null || r[i] === undefined || typeof r[i] === "number"));
    const head = el("tr");
    columns.forEach((name, i) => head.append(el("th", { scope: "col", class: numeric[i] ? "num" : null, text: String(name) })));
    table.append(el("thead", {}, head));
    const body = el("tbody");
    if (!rows.length) {
      body.append(el("tr", {}, el("td", { class: "empty", colspan: Math.max(1, columns.length), text: "no rows" })));
    }
    for (const row of rows.slice(0, DISPLAY_ROWS)) {
      const tr = el("tr");
      for (const value of row) {
        if (value === null || value === undefined) tr.append(el("td", { class: "null", "data-null": true, text: "NULL" }));
        else tr.append(el("td", { class: typeof value === "number" ? "num" : null, text: shownText(value) }));
      }
      body.append(tr);
    }
    table.append(body);
  }

  /** {label, value} column indexes when the result suits a bar chart (a text column and a
   * numeric one, at least two rows), else null. */
  function chartColumns(columns, rows) {
    if (rows.length < 2 || columns.length < 2) return null;
    const kinds = columns.map((_, i) => {
      let text = 0, num = 0, other = 0;
      for (const row of rows) {
        const v = row[i];
        if (v === null || v === undefined) continue;
        if (typeof v === "number" && isFinite(v)) num++;
        else if (typeof v === "string") text++;
        else other++;
      }
      if (other || (text && num)) return "mixed";
      return text ? "text" : num ? "number" : "empty";
    });
    const label = kinds.indexOf("text");
    const value = kinds.lastIndexOf("number"); // aggregates usually come last
    return label < 0 || value < 0 ? null : { label, value };
  }

  function shorten(text, max) {
    return text.length > max ? text.slice(0, max - 1) + "…" : text;
  }

  function renderChart(figure, columns, rows) {
    figure.replaceChildren();
    const pick = chartColumns(columns, rows);
    figure.hidden = !pick;
    if (!pick) return;
    // drawn at the figure's own width (text stays readable on a phone), 360 to 960 units
    const bars = rows.slice(0, MAX_BARS);
    const values = bars.map((r) => (typeof r[pick.value] === "number" ? r[pick.value] : null));
    const known = values.filter((v) => v !== null);
    const max = Math.max(0, ...known), min = Math.min(0, ...known);
    const span = max - min || 1;
    const width = Math.round(Math.max(360, Math.min(960, (figure.clientWidth || 780) - 20)));
    const labelW = Math.round(Math.min(190, width * 0.3)), valueW = 90, rowH = 24, top = 6;
    const barW = width - labelW - valueW - 10;
    const height = top * 2 + bars.length * rowH;
    const zero = labelW + ((0 - min) / span) * barW;
    const chart = svg("svg", {
      viewBox: `0 0 ${width} ${height}`,
      width: "100%",
      role: "img",
      "aria-label": `bar chart of ${columns[pick.value]} by ${columns[pick.label]}`,
      "data-testid": "chart-svg",
    });
    bars.forEach((row, i) => {
      const y = top + i * rowH;
      const raw = row[pick.label];
      const label = raw === null || raw === undefined ? "NULL" : String(raw);
      const value = values[i];
      const g = svg("g", { class: "bar-row", "data-testid": "chart-bar" });
      g.append(svg("title", {}, `${label}: ${value === null ? "NULL" : formatNumber(value)}`));
      g.append(svg("text", { x: labelW - 8, y: y + rowH / 2, class: "bar-label", "text-anchor": "end",
                             "dominant-baseline": "middle" }, shorten(label, Math.floor(labelW / 7))));
      if (value !== null) {
        const w = (Math.abs(value) / span) * barW;
        const x = value >= 0 ? zero : zero - w;
        g.append(svg("rect", { x, y: y + 3, width: Math.max(w, 1), height: rowH - 6, rx: 2, class: "bar" }));
        g.append(svg("text", { x: value >= 0 ? x + w + 6 : zero + 6, y: y + rowH / 2, class: "bar-value",
                               "dominant-baseline": "middle" }, formatNumber(value)));
      } else {
        g.append(svg("text", { x: zero + 6, y: y + rowH / 2, class: "bar-value null",
                               "dominant-baseline": "middle" }, "NULL"));
      }
      chart.append(g);
    });
    chart.append(svg("line", { x1: zero, x2: zero, y1: 0, y2: height, class: "axis" }));
    const more = rows.length > MAX_BARS ? ` (first ${MAX_BARS} of ${rows.length} rows)` : "";
    figure.append(chart, el("figcaption", { text: `${columns[pick.value]} by ${columns[pick.label]}${more}` }));
  }

  function csvField(value) {
    if (value === null || value === undefined) return "";
    let text = cellText(value);
    // a text cell a spreadsheet would run as a formula (=, +, -, @) is written as text (OWASP's advice)
    if (typeof value === "string" && /^[=+\-@\t\r]/.test(text)) text = "'" + text;
    return /[",\r\n]/.test(text) || /^\s|\s$/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
  }

  /** RFC 4180 CSV: a header line, CRLF line ends, quotes where a field needs them, NULL as empty. */
  function toCsv(columns, rows) {
    return [columns, ...rows].map((row) => row.map(csvField).join(",")).join("\r\n") + "\r\n";
  }

  function csvName(entry) {
    const slug = (entry.question || "result").toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-+|-+$/g, "");
    return `${entry.db}-${slug.slice(0, 48).replace(/-+$/, "") || "result"}.csv`;
  }

  function downloadCsv() {
    const entry = state.current;
    if (!entry || !entry.result) return;
    const blob = new Blob([toCsv(entry.result.columns, entry.result.rows)], { type: "text/csv;charset=utf-8" });
    const url = URL.createObjectURL(blob);
    const link = el("a", { href: url, download: csvName(entry), hidden: true });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }

  // -- the trace ---------------------------------------------------------------------

  function renderTrace(details, summary, list, trace, title = "How the answer was chosen") {
    list.replaceChildren();
    const trials = (trace && Array.isArray(trace.trials)) ? trace.trials : [];
    details.hidden = !trials.length;
    if (!trials.length) return;
    const parts = [`${plural(trials.length, "candidate")}`, `strategy ${trace.strategy}`];
    if (trace.note) parts.push(trace.note);
    if (trace.rounds) parts.push(plural(trace.rounds, "repair round"));
    summary.textContent = `${title}: ${parts.join(" · ")}`;
    if (trace.tables) list.append(el("li", { class: "trace-note", text: `tables shown: ${trace.tables.join(", ")}` }));
    if (trace.values && trace.values.length) {
      list.append(el("li", { class: "trace-note", text: `values linked: ${trace.values.join("; ")}` }));
    }
    if (trace.examples && trace.examples.length) {
      list.append(el("li", { class: "trace-note", "data-testid": "trace-examples",
                             text: `taught examples shown: ${trace.examples.join(", ")}` }));
    }
    if (trace.notes && trace.notes.length) {
      list.append(el("li", { class: "trace-note", "data-testid": "trace-notes",
                             text: `taught notes shown: ${trace.notes.join(", ")}` }));
    }
    for (const trial of trials) {
      const chosen = trace.chosen === trial.index;
      const head = [`candidate ${trial.index}`, trial.origin + (trial.round ? ` ${trial.round}` : "")];
      let outcome;
      if (trial.error) outcome = `${trial.error_kind || "error"}: ${oneLine(trial.error)}`;
      else if (trial.rows !== undefined) outcome = `ran: ${plural(trial.rows, "row")}${trial.empty ? " (empty)" : ""}`;
      else outcome = "not run";
      if (trial.votes) outcome += ` · ${plural(trial.votes, "vote")}`;
      const item = el("li", { class: `trial${chosen ? " chosen" : ""}${trial.error ? " failed" : ""}`,
                              "data-testid": "trace-trial" },
        el("div", { class: "trial-head" },
          el("strong", { text: head.join(" ") }),
          chosen ? el("span", { class: "badge", text: "chosen" }) : null,
          el("span", { class: "trial-outcome", text: outcome })));
      const pre = el("pre", { class: "sql" });
      if (trial.sql) highlight(pre, trial.sql);
      else pre.textContent = trial.raw || "(no text)";
      item.append(pre);
      if (trial.repairs && trial.repairs.length) item.append(el("div", { class: "trial-fix", text: `fixed: ${trial.repairs.join(", ")}` }));
      if (trial.fixes && trial.fixes.length) item.append(el("div", { class: "trial-fix", text: `cleaned: ${trial.fixes.join(", ")}` }));
      list.append(item);
    }
  }

  // -- showing an answer --------------------------------------------------------------

  function describeMeta(entry) {
    const result = entry.result;
    const parts = [plural(result.rows.length, "row")];
    if (result.rows.length > DISPLAY_ROWS) parts[0] += ` (the table shows the first ${DISPLAY_ROWS}; the CSV has all)`;
    const t = result.timings || {};
    if (t.generation !== undefined) parts.push(`model ${seconds(t.generation)}`);
    if (t.execution !== undefined) parts.push(`query ${seconds(t.execution)}`);
    if (t.wall !== undefined) parts.push(`total ${seconds(t.wall)}`);
    const tokens = entry.tokens;
    if (tokens && tokens.completion !== undefined) {
      parts.push(tokens.prompt ? `${plural(tokens.prompt, "prompt token")} + ${tokens.completion} generated`
        : plural(tokens.completion, "generated token"));
    }
    if (entry.model) parts.push(entry.model);
    return parts.join(" · ");
  }

  function describeTruncation(result) {
    if (!result.truncated) return "";
    const by = result.truncated_by || "rows";
    const limit = by === "bytes" ? "size limit" : "row limit";
    return `Only the first ${plural(result.rows.length, "row")} came back: the result was cut at the server's ${limit} (truncated by ${by}).`;
  }

  function show(entry) {
    state.current = entry;
    setEditing(false);
    const answer = $("answer");
    answer.hidden = !entry;
    if (!entry) return renderHistory();
    answer.dataset.entryId = entry.id;
    $("answer-question").textContent = entry.question;
    $("answer-followup").hidden = !entry.followupOf;
    $("answer-followup").textContent = entry.followupOf ? `follow-up of: ${entry.followupOf}` : "";
    $("sql-edited").hidden = !entry.edited;
    highlight($("sql-view"), entry.sql);
    const result = entry.result;
    $("download-csv").disabled = !result;
    if (result) {
      $("meta").textContent = describeMeta(entry);
      $("truncated").hidden = !result.truncated;
      $("truncated").textContent = describeTruncation(result);
      renderChart($("chart"), result.columns, result.rows);
      renderTable($("result-table"), result.columns, result.rows);
    } else {
      $("meta").textContent = "not run yet: edit the SQL and press Run";
      $("truncated").hidden = true;
      $("chart").hidden = true;
      $("result-table").replaceChildren();
    }
    renderTrace($("trace"), $("trace-summary"), $("trace-list"), entry.trace);
    $("save-example").disabled = !result;
    $("save-example").textContent = entry.edited ? "Save the correction as example" : "Right: save as example";
    $("taught").hidden = !entry.taught;
    $("taught").textContent = entry.taught || "";
    renderHistory();
  }

  function renderHistory() {
    const list = $("history");
    list.replaceChildren();
    $("history-empty").hidden = state.entries.some((e) => e.result);
    for (const entry of [...state.entries].reverse()) {
      if (!entry.result) continue;
      const current = state.current === entry;
      const button = el("button", { type: "button", class: "history-item", "data-testid": "history-item",
                                    "data-entry-id": entry.id, "aria-current": current ? "true" : null },
        el("span", { class: "history-question", text: entry.question }),
        el("span", { class: "history-meta",
                     text: [entry.db, plural(entry.result.rows.length, "row"), entry.followupOf ? "follow-up" : null,
                            entry.edited ? "edited" : null].filter(Boolean).join(" · ") }));
      button.addEventListener("click", () => {
        clearError();
        show(entry);
      });
      list.append(el("li", { class: entry.followupOf ? "followup-item" : null }, button));
    }
  }

  function renderConversation() {
    const last = state.conversation[state.conversation.length - 1];
    $("followup-label").hidden = !last;
    $("followup-label").textContent = last ? `next question follows up on: ${last.question}` : "";
    $("new-conversation").hidden = !last;
    $("question").placeholder = last ? "Ask a follow-up (e.g. and only in 2024?), or start a new conversation"
      : "Ask a question, e.g. How many orders were cancelled?";
  }

  function newConversation() {
    state.conversation = [];
    state.conversationId += 1;
    renderConversation();
    $("question").focus();
  }

  // -- busy, status, errors -----------------------------------------------------------

  function setBusy(kind) {
    state.busy = Boolean(kind);
    const ask = $("ask"), run = $("run-sql");
    ask.disabled = run.disabled = state.busy || !$("db").value;
    ask.textContent = kind === "ask" ? "Thinking…" : "Ask";
    run.textContent = kind === "sql" ? "Running…" : "Run";
    $("status").textContent = kind === "ask" ? "thinking…" : kind === "sql" ? "running the query…" : "";
    document.body.classList.toggle("busy", state.busy);
    $("answer").setAttribute("aria-busy", state.busy ? "true" : "false");
  }

  function clearError() {
    state.lastError = null;
    $("error").hidden = true;
    $("error-message").textContent = "";
    $("error-sql").hidden = true;
    $("edit-error-sql").hidden = true;
    $("error-trace").hidden = true;
  }

  function showError(err, context) {
    const box = $("error");
    box.hidden = false;
    box.dataset.code = err.code || "";
    let message = oneLine(err.message || String(err));
    if (err.status === 503 && err.retryAfter) message += ` (retry after ${err.retryAfter} s)`;
    if (err.status === 401) {
      message += " — enter the API key above";
      $("key-box").open = true;
    }
    $("error-message").textContent = message;
    const sql = err.sql || null;
    $("error-sql").hidden = !sql;
    if (sql) highlight($("error-sql"), sql);
    state.lastError = sql && context ? { ...context, sql } : null;
    $("edit-error-sql").hidden = !state.lastError;
    renderTrace($("error-trace"), $("error-trace-summary"), $("error-trace-list"), err.trace, "What the model tried");
  }

  // -- actions ------------------------------------------------------------------------

  async function ask(event) {
    if (event) event.preventDefault();
    const question = $("question").value.trim();
    const db = $("db").value;
    if (state.busy || !question || !db) {
      if (!question) $("question").focus();
      return;
    }
    const turns = state.conversation.slice(-maxTurns);
    const followupOf = turns.length ? turns[turns.length - 1].question : null;
    const context = { question, db, followupOf, conversationId: state.conversationId };
    clearError();
    setBusy("ask");
    try {
      const data = await api("POST", "/v1/ask", {
        db,
        question,
        history: turns.map((t) => ({ question: t.question, sql: t.sql })),
      });
      const entry = addEntry(context, data.sql, resultOf(data), { model: data.model, tokens: data.tokens, trace: data.trace });
      $("question").value = "";
      show(entry);
    } catch (err) {
      showError(err, context);
    } finally {
      setBusy(null);
      $("question").focus();
    }
  }

  function resultOf(data) {
    return {
      columns: data.columns || [],
      rows: data.rows || [],
      truncated: Boolean(data.truncated),
      truncated_by: data.truncated_by || "",
      timings: data.timings || {},
    };
  }

  function addEntry(context, sql, result, extra) {
    const entry = { id: state.nextId++, ...context, sql, result, edited: false, ...extra };
    state.entries.push(entry);
    if (result) joinConversation(entry);
    return entry;
  }

  function joinConversation(entry) {
    if (entry.conversationId !== state.conversationId) return;
    const turn = state.conversation.find((t) => t.entryId === entry.id);
    if (turn) turn.sql = entry.sql;
    else state.conversation.push({ question: entry.question, sql: entry.sql, entryId: entry.id });
    renderConversation();
  }

  function setEditing(on) {
    state.editing = on;
    const entry = state.current;
    $("sql-view").hidden = on;
    $("sql-edit").hidden = !on;
    $("edit-sql").hidden = on;
    $("run-sql").hidden = !on;
    $("cancel-edit").hidden = !on || !entry || !entry.result;
    if (on) {
      const area = $("sql-edit");
      area.value = entry ? entry.sql || "" : "";
      area.rows = Math.min(18, Math.max(4, area.value.split("\n").length + 1));
      area.focus();
    }
  }

  async function runSql() {
    const entry = state.current;
    const sql = $("sql-edit").value;
    if (state.busy || !entry || !sql.trim()) return;
    clearError();
    setBusy("sql");
    try {
      const data = await api("POST", "/v1/sql", { db: entry.db, sql });
      entry.sql = data.sql;
      entry.result = resultOf(data);
      entry.edited = true;
      entry.taught = null;
      entry.model = entry.tokens = null; // the model wrote an earlier query, not this one
      joinConversation(entry);
      show(entry);
    } catch (err) {
      showError(err, null);
      $("sql-edit").focus();
    } finally {
      setBusy(null);
    }
  }

  // -- teaching: the database's knowledge file ----------------------------------------

  async function saveExample() {
    const entry = state.current;
    if (state.busy || !entry || !entry.result) return;
    clearError();
    try {
      const data = await api("POST", "/v1/knowledge/examples", { db: entry.db, question: entry.question, sql: entry.sql });
      entry.taught = `saved as example ${data.id}: later questions like this one are shown it`;
      show(entry);
    } catch (err) {
      showError(err, null);
    }
  }

  async function saveNote(event) {
    event.preventDefault();
    const text = $("note").value.trim();
    const entry = state.current;
    if (!text || !entry) return;
    clearError();
    try {
      const data = await api("POST", "/v1/knowledge/notes", { db: entry.db, text });
      $("note").value = "";
      entry.taught = `saved note ${data.id}: every question on ${entry.db} now sees it`;
      show(entry);
    } catch (err) {
      showError(err, null);
    }
  }

  function editErrorSql() {
    const failed = state.lastError;
    if (!failed) return;
    clearError();
    const entry = { id: state.nextId++, question: failed.question, db: failed.db, followupOf: failed.followupOf,
                    conversationId: failed.conversationId, sql: failed.sql, result: null, edited: true, trace: null };
    state.entries.push(entry);
    show(entry);
    setEditing(true);
  }

  // -- start ---------------------------------------------------------------------------

  async function loadDatabases() {
    const select = $("db");
    const previous = select.value;
    try {
      const data = await api("GET", "/v1/databases");
      select.replaceChildren();
      for (const db of data.databases || []) {
        select.append(el("option", { value: db.name, text: `${db.name} (${plural(db.tables, "table")})` }));
      }
      if (previous && [...select.options].some((o) => o.value === previous)) select.value = previous;
      if (!select.options.length) showError({ message: "the server serves no database" });
      else clearError();
    } catch (err) {
      showError(err);
    }
    setBusy(null);
    try {
      const data = await api("GET", "/v1/models");
      const model = (data.models || [])[0];
      if (model && Number.isInteger(model.max_history) && model.max_history > 0) maxTurns = model.max_history;
      if (model) {
        const name = model.backend && model.backend !== model.name ? `${model.name} (${model.backend})` : model.name;
        $("model").textContent = `${name} · ${plural(model.candidates || 1, "candidate")}, ${model.strategy}`;
      }
    } catch (_) {
      $("model").textContent = "";
    }
  }

  function start() {
    state.key = storedKey();
    $("api-key").value = state.key;
    $("ask-form").addEventListener("submit", ask);
    $("new-conversation").addEventListener("click", newConversation);
    $("db").addEventListener("change", () => {
      if (state.conversation.length) newConversation();
    });
    $("edit-sql").addEventListener("click", () => setEditing(true));
    $("cancel-edit").addEventListener("click", () => setEditing(false));
    $("run-sql").addEventListener("click", runSql);
    $("sql-edit").addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        runSql();
      } else if (event.key === "Escape" && state.current && state.current.result) {
        setEditing(false);
      }
    });
    $("download-csv").addEventListener("click", downloadCsv);
    $("save-example").addEventListener("click", saveExample);
    $("note-form").addEventListener("submit", saveNote);
    $("edit-error-sql").addEventListener("click", editErrorSql);
    $("key-form").addEventListener("submit", (event) => {
      event.preventDefault();
      storeKey($("api-key").value.trim());
      $("key-box").open = false;
      loadDatabases();
    });
    renderConversation();
    renderHistory();
    setBusy(null);
    loadDatabases().then(() => $("question").focus());
  }

  // for tests and the curious: the pure pieces
  window.slimsql = { tokenize, toCsv, chartColumns, state };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
