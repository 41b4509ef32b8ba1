"""The web page in a real headless browser: what a person does, checked against the database.

Debian's Chromium (``/usr/bin/chromium``, or ``$SLIMSQL_CHROMIUM``) driven by Playwright's
Python API, against ``slimsql serve``'s app on a scripted backend (no model). Skips without
Playwright or Chromium, unless ``SLIMSQL_REQUIRE_BROWSER=1`` (CI), which makes that a failure.
``SLIMSQL_SCREENSHOTS=DIR`` saves the README's screenshots there.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlsplit

import pytest

from slimsql.prompts import MAX_HISTORY

from .conftest import sha256

CHROMIUM = os.environ.get("SLIMSQL_CHROMIUM", "/usr/bin/chromium")


def _missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install playwright; the browser is Debian's chromium)"
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        return "the server needs fastapi and uvicorn (pip install 'slimsql[serve]')"
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium, or set SLIMSQL_CHROMIUM)"
    return None


_why = _missing()
if _why and os.environ.get("SLIMSQL_REQUIRE_BROWSER") == "1":
    pytest.fail(f"the browser tests are required here: {_why}", pytrace=False)
if not _why:
    import uvicorn
    from playwright.sync_api import Page, expect, sync_playwright

    from slimsql.serve.app import create_app

    expect.set_options(timeout=10_000)

from slimsql.backends.scripted import ScriptedBackend  # noqa: E402
from slimsql.infer import resolve  # noqa: E402
from slimsql.serve.service import Service  # noqa: E402

STATIC = Path(__file__).resolve().parents[1] / "src" / "slimsql" / "serve" / "static"
VIEWPORT = {"width": 1200, "height": 800}
MAX_ROWS = 200  # the server's row cap in these tests (so "every order" is truncated)

# -- what the scripted model answers ------------------------------------------------------

CATEGORY_Q = "What is the total revenue per product category?"
CATEGORY_SQL = """SELECT c.name AS category, ROUND(SUM(oi.quantity * oi.unit_price), 2) AS revenue
FROM order_items AS oi
JOIN products AS p ON p.product_id = oi.product_id
JOIN categories AS c ON c.category_id = p.category_id
GROUP BY c.name
ORDER BY revenue DESC"""
CATEGORY_2024_SQL = """SELECT c.name AS category, ROUND(SUM(oi.quantity * oi.unit_price), 2) AS revenue
FROM order_items AS oi
JOIN orders AS o ON o.order_id = oi.order_id
JOIN products AS p ON p.product_id = oi.product_id
JOIN categories AS c ON c.category_id = p.category_id
WHERE o.order_date LIKE '2024-%' -- the follow-up's filter
GROUP BY c.name
ORDER BY revenue DESC"""
PRODUCTS_Q = "How many products are there?"
PRODUCTS_SQL = "SELECT count(*) AS products FROM products"
ORDERS_2024_SQL = "SELECT count(*) AS orders FROM orders WHERE order_date LIKE '2024-%'"
ALL_ORDERS_SQL = "SELECT order_id, status FROM orders ORDER BY order_id"
MARKUP_SQL = ("SELECT '<img src=x onerror=\"window.__pwned=1\">' AS html, NULL AS missing, "
              "'a,b \"c\"' AS quoted, 'line1\nline2' AS multi, 3.5 AS num, '=HYPERLINK(\"x\")' AS formula, "
              "-2 AS neg, 0.1 + 0.2 AS noisy")
FOLLOWUP_Q = "and only in 2024?"


def scripted_reply(messages, config) -> str:
    """The model's 'answer', from the last user turn; a follow-up sees the earlier SQL as an assistant turn."""
    turn = next(m["content"] for m in reversed(messages) if m["role"] == "user")
    line = turn.strip().splitlines()[-1]  # "-- Question: ..." (the schema, with its sample values, is above)
    last = line.split(": ", 1)[-1].lower()
    previous = [m["content"] for m in messages if m["role"] == "assistant"]
    if "2024" in last:
        if previous and "category" in previous[-1]:
            return CATEGORY_2024_SQL
        return ORDERS_2024_SQL
    if "slow" in last:
        GATE.wait(20)
        return PRODUCTS_SQL
    if "revenue per product category" in last:
        return CATEGORY_SQL
    if "how many products" in last:
        return PRODUCTS_SQL
    if "every order" in last:
        return ALL_ORDERS_SQL
    if "markup" in last:
        return MARKUP_SQL
    if "delete" in last:
        return "DELETE FROM orders"
    return "SELECT 1 AS one"


GATE = threading.Event()  # a "slow" question waits for it


# -- the server and the browser -------------------------------------------------------------

class Running:
    def __init__(self, app):
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                                                    access_log=False, lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    def stop(self):
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def site(demo_master, tmp_path_factory):
    """The page's server: the demo shop on a scripted model, plus the same service behind an API key."""
    if _why:
        pytest.skip(_why)
    folder = tmp_path_factory.mktemp("page")
    db = folder / "shop.sqlite"
    shutil.copy(demo_master, db)
    backend = ScriptedBackend(replies=scripted_reply)
    service = Service({"shop": db}, backend, resolve("fast", max_rows=MAX_ROWS), max_queue=1, connections=2)
    open_server = Running(create_app(service))
    keyed = Running(create_app(service, api_key="s3cret-key"))
    try:
        yield SimpleNamespace(url=open_server.url, keyed_url=keyed.url, db=db, backend=backend, service=service)
    finally:
        GATE.set()
        open_server.stop()
        keyed.stop()
        service.close()


@pytest.fixture(scope="module")
def browser():
    if _why:
        pytest.skip(_why)
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM,
                                     args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        try:
            yield chromium
        finally:
            chromium.close()


def only_local(urls: list[str], origin: str) -> list[str]:
    """The URLs that go anywhere but ``origin`` (a blob: URL counts as its origin's)."""
    bad = []
    for url in urls:
        inner = url[len("blob:"):] if url.startswith("blob:") else url
        parts = urlsplit(inner)
        if f"{parts.scheme}://{parts.netloc}" != origin or parts.hostname != "127.0.0.1":
            bad.append(url)
    return bad


def open_page(browser, url: str):
    context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
    page = context.new_page()
    page.requests = []  # every request the page makes: (url, method, headers, body)
    page.on("request", lambda r: page.requests.append((r.url, r.method, r.headers, r.post_data)))
    page.errors = []
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    # an HTTP error status the page handles is logged as "Failed to load resource": not a page error
    page.on("console", lambda m: page.errors.append(m.text)
            if m.type == "error" and not m.text.startswith("Failed to load resource") else None)
    page.goto(url + "/")
    return context, page


@pytest.fixture
def page(browser, site):
    context, page = open_page(browser, site.url)
    expect(page.locator("#db option")).to_have_count(1)
    try:
        yield page
    finally:
        urls = [u for u, *_ in page.requests]
        errors = list(page.errors)
        context.close()
    assert only_local(urls, site.url) == [], "the page reached beyond its server"
    assert errors == [], f"the page logged errors: {errors}"


def screenshot(page: Page, name: str) -> None:
    """Save a README screenshot when $SLIMSQL_SCREENSHOTS names a folder."""
    folder = os.environ.get("SLIMSQL_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=str(Path(folder) / name))


# -- what a person does, and what it should look like ------------------------------------------

def ask(page: Page, question: str) -> None:
    """Type a question, press Enter, wait for its answer."""
    items = page.get_by_test_id("history-item")
    before = items.count()
    page.get_by_test_id("question").fill(question)
    page.get_by_test_id("question").press("Enter")
    expect(items).to_have_count(before + 1)
    expect(page.get_by_test_id("answer-question")).to_have_text(question)
    expect(page.get_by_test_id("ask")).to_be_enabled()


def table(page: Page) -> tuple[list[str], list[list[str]]]:
    head = page.locator("#result-table thead th").all_text_contents()
    rows = page.locator("#result-table tbody tr").evaluate_all(
        "rows => rows.map(r => [...r.cells].map(c => c.textContent))")
    return head, rows


def shown(value) -> str:
    """A database value as the page's table shows it (as JavaScript prints the JSON number)."""
    if value is None:
        return "NULL"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, float):  # at most 15 significant digits: no binary noise
        return repr(float(f"{value:.15g}"))
    return str(value)


def query(db: Path, sql: str) -> tuple[list[str], list[list[str]]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        cursor = con.execute(sql)
        return [d[0] for d in cursor.description], [[shown(v) for v in row] for row in cursor.fetchall()]


def last_call(site):
    messages, _ = site.backend.calls[-1]
    return messages


def sent_history(page: Page) -> list[dict]:
    """The history the page sent with its last question."""
    body = [b for u, m, _, b in page.requests if u.endswith("/v1/ask") and m == "POST"][-1]
    return json.loads(body)["history"]


def error_line(page: Page) -> str:
    expect(page.get_by_test_id("error")).to_be_visible()
    return page.get_by_test_id("error-message").text_content()


# -- tests ------------------------------------------------------------------------------------

def test_the_page_is_self_contained_and_never_writes_markup():
    """No browser needed: the files exist, name nothing off the server, and build the DOM from text."""
    html = (STATIC / "index.html").read_text("utf-8")
    script = (STATIC / "app.js").read_text("utf-8")
    style = (STATIC / "style.css").read_text("utf-8")
    for text in (html, script, style):
        # the SVG namespace is a name, never fetched
        assert re.findall(r"(?:https?:)?//[\w.-]+\.\w+/", text.replace("http://www.w3.org/2000/svg", "")) == []
        assert "@import" not in text and "url(" not in text
    assert re.findall(r'(?:src|href)="([^"]*)"', html) == ["data:,", "/static/style.css", "/static/app.js"]
    assert "Content-Security-Policy" in html and "connect-src 'self'" in html
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in script, sink


def test_ask_shows_highlighted_sql_table_chart_and_trace(page, site):
    assert page.title() == "slimsql"
    expect(page.get_by_test_id("db")).to_have_value("shop")
    expect(page.get_by_test_id("model")).to_have_text("scripted · 1 candidate, first")
    expect(page.get_by_test_id("answer")).to_be_hidden()
    ask(page, CATEGORY_Q)

    expect(page.get_by_test_id("question")).to_be_focused()  # ready for the next question

    # the SQL, exactly, highlighted by kind
    view = page.get_by_test_id("sql-view")
    assert view.text_content() == CATEGORY_SQL
    keywords = view.locator(".tok-keyword").all_text_contents()
    assert {"SELECT", "FROM", "JOIN", "ON", "GROUP", "BY", "ORDER", "DESC", "AS"} <= set(keywords)
    assert view.locator(".tok-function").all_text_contents() == ["ROUND", "SUM"]
    assert "2" in view.locator(".tok-number").all_text_contents()
    assert "category" in view.locator(".tok-ident").all_text_contents()

    # the table is the database's answer, cell for cell
    head, rows = table(page)
    expected_head, expected_rows = query(site.db, CATEGORY_SQL)
    assert head == expected_head == ["category", "revenue"]
    assert rows == expected_rows and len(rows) == 8
    expect(page.get_by_test_id("meta")).to_contain_text("8 rows")
    expect(page.get_by_test_id("meta")).to_contain_text("total")
    expect(page.get_by_test_id("truncated")).to_be_hidden()

    # a bar per row, labelled with the category and its value
    expect(page.get_by_test_id("chart")).to_be_visible()
    bars = page.get_by_test_id("chart-bar")
    expect(bars).to_have_count(8)
    labels = page.locator("#chart .bar-label").all_text_contents()
    values = page.locator("#chart .bar-value").all_text_contents()
    assert labels == [r[0] for r in expected_rows]
    assert [round(float(v.replace(",", "")), 2) for v in values] == [round(float(r[1]), 2) for r in expected_rows]
    widths = [float(w) for w in page.locator("#chart rect.bar").evaluate_all("rs => rs.map(r => r.getAttribute('width'))")]
    assert widths == sorted(widths, reverse=True) and widths[0] > 5 * widths[-1] > 0  # ordered by revenue, to scale
    expect(page.get_by_test_id("chart")).to_contain_text("revenue by category")

    # the trace: one candidate, chosen
    trace = page.get_by_test_id("trace")
    expect(trace).to_be_visible()
    expect(page.get_by_test_id("trace-summary")).to_contain_text("1 candidate")
    page.get_by_test_id("trace-summary").click()
    expect(page.get_by_test_id("trace-trial")).to_have_count(1)
    expect(page.get_by_test_id("trace-trial")).to_contain_text("chosen")
    expect(page.get_by_test_id("trace-trial")).to_contain_text("ran: 8 rows")
    page.get_by_test_id("trace-summary").click()

    # the history has it, the conversation continues from it
    expect(page.get_by_test_id("history-item")).to_have_count(1)
    expect(page.get_by_test_id("followup-label")).to_have_text(f"next question follows up on: {CATEGORY_Q}")
    screenshot(page, "answer-with-chart.png")


def test_single_number_has_no_chart_and_null_is_distinct(page, site):
    ask(page, PRODUCTS_Q)
    head, rows = table(page)
    assert (head, rows) == query(site.db, PRODUCTS_SQL)
    assert len(rows) == 1 and int(rows[0][0]) > 1
    expect(page.get_by_test_id("chart")).to_be_hidden()
    assert page.locator("#chart svg").count() == 0
    expect(page.get_by_test_id("meta")).to_contain_text("1 row")

    ask(page, "Show me the markup test")
    expect(page.get_by_test_id("chart")).to_be_hidden()  # one row: nothing to compare
    head, rows = table(page)
    assert head == ["html", "missing", "quoted", "multi", "num", "formula", "neg", "noisy"]
    assert rows == [['<img src=x onerror="window.__pwned=1">', "NULL", 'a,b "c"', "line1\nline2", "3.5",
                     '=HYPERLINK("x")', "-2", "0.3"]]  # 0.30000000000000004 shown without its noise
    assert page.locator("#result-table img").count() == 0
    assert page.evaluate("window.__pwned") is None
    null = page.locator("#result-table td.null")
    expect(null).to_have_count(1)
    expect(null).to_have_attribute("data-null", "")
    assert page.locator("#sql-view img").count() == 0
    assert page.get_by_test_id("sql-view").text_content() == MARKUP_SQL


def test_markup_in_a_question_stays_text(page, site):
    question = "<b>markup</b> question <script>window.__pwned=2</script>"
    ask(page, question)
    assert page.locator("#answer-question b, #history b, #answer-question script").count() == 0
    expect(page.get_by_test_id("history-item").first).to_contain_text("<b>markup</b>")
    assert page.evaluate("window.__pwned") is None


def test_edit_sql_and_run_replaces_the_result(page, site):
    ask(page, CATEGORY_Q)
    page.get_by_test_id("edit-sql").click()
    editor = page.get_by_test_id("sql-edit")
    expect(editor).to_be_visible()
    expect(editor).to_have_value(CATEGORY_SQL)
    expect(page.get_by_test_id("sql-view")).to_be_hidden()
    edited = "SELECT name, price FROM products\nWHERE discontinued = 0\nORDER BY price DESC\nLIMIT 5"
    editor.fill(edited)
    expect(page.get_by_test_id("run-sql")).to_be_visible()
    calls = len(site.backend.calls)
    page.get_by_test_id("run-sql").click()

    expect(page.get_by_test_id("sql-view")).to_be_visible()
    assert page.get_by_test_id("sql-view").text_content() == edited
    expect(page.get_by_test_id("sql-edited")).to_be_visible()
    head, rows = table(page)
    assert (head, rows) == query(site.db, edited)
    assert head == ["name", "price"] and len(rows) == 5
    expect(page.get_by_test_id("chart-bar")).to_have_count(5)
    expect(page.get_by_test_id("meta")).to_contain_text("5 rows")
    assert len(site.backend.calls) == calls  # running edited SQL asks no model

    # a follow-up now builds on the edited query, not the model's
    ask(page, "and only the cheapest?")
    assert last_call(site)[-2] == {"role": "assistant", "content": edited}

    # Ctrl+Enter runs, Cancel leaves the query as it was
    page.get_by_test_id("edit-sql").click()
    page.get_by_test_id("sql-edit").fill("SELECT 2 AS two")
    page.get_by_test_id("cancel-edit").click()
    assert page.get_by_test_id("sql-view").text_content() == "SELECT 1 AS one"
    page.get_by_test_id("edit-sql").click()
    page.get_by_test_id("sql-edit").fill("SELECT 7 * 6 AS answer")
    page.get_by_test_id("sql-edit").press("Control+Enter")
    expect(page.get_by_test_id("sql-view")).to_have_text("SELECT 7 * 6 AS answer")
    assert table(page) == (["answer"], [["42"]])

    # the screenshot: an edited query with its result
    page.locator("[data-testid=history-item]").nth(1).click()
    expect(page.get_by_test_id("answer-question")).to_have_text(CATEGORY_Q)
    page.get_by_test_id("edit-sql").click()
    page.get_by_test_id("sql-edit").fill(edited.replace("LIMIT 5", "LIMIT 8"))
    page.get_by_test_id("run-sql").click()
    expect(page.get_by_test_id("sql-view")).to_have_text(edited.replace("LIMIT 5", "LIMIT 8"))
    expect(page.get_by_test_id("chart-bar")).to_have_count(8)
    screenshot(page, "edited-sql.png")


def test_follow_up_carries_the_previous_sql(page, site):
    ask(page, CATEGORY_Q)
    first = table(page)
    ask(page, FOLLOWUP_Q)

    messages = last_call(site)
    roles = [m["role"] for m in messages]
    assert roles[-3:] == ["user", "assistant", "user"]
    assert CATEGORY_Q in messages[-3]["content"]
    assert messages[-2]["content"] == CATEGORY_SQL
    assert FOLLOWUP_Q in messages[-1]["content"]

    expect(page.get_by_test_id("answer-followup")).to_have_text(f"follow-up of: {CATEGORY_Q}")
    expect(page.get_by_test_id("followup-label")).to_have_text(f"next question follows up on: {FOLLOWUP_Q}")
    assert page.get_by_test_id("sql-view").text_content() == CATEGORY_2024_SQL
    assert "-- the follow-up's filter" in page.locator("#sql-view .tok-comment").all_text_contents()
    assert "'2024-%'" in page.locator("#sql-view .tok-string").all_text_contents()
    second = table(page)
    assert second == query(site.db, CATEGORY_2024_SQL)
    assert second != first
    expect(page.get_by_test_id("history-item").first).to_contain_text("follow-up")
    screenshot(page, "follow-up.png")

    # a third turn carries both earlier turns, oldest first
    ask(page, "and the top one only in 2024?")
    assistant = [m["content"] for m in last_call(site) if m["role"] == "assistant"]
    assert assistant == [CATEGORY_SQL, CATEGORY_2024_SQL]
    assert sent_history(page) == [{"question": CATEGORY_Q, "sql": CATEGORY_SQL},
                                  {"question": FOLLOWUP_Q, "sql": CATEGORY_2024_SQL}]

    # a long conversation sends no more turns than the server's prompt shows (/v1/models: max_history)
    page.evaluate("""() => { const c = window.slimsql.state.conversation;
                             for (let i = 0; i < 30; i++) c.unshift({question: `old question ${i}`, sql: 'SELECT 1'}); }""")
    ask(page, "and in 2024 again?")
    history = sent_history(page)
    assert len(history) == MAX_HISTORY and history[-1]["question"] == "and the top one only in 2024?"

    # a new conversation forgets them
    page.get_by_test_id("new-conversation").click()
    expect(page.get_by_test_id("followup-label")).to_be_hidden()
    expect(page.get_by_test_id("new-conversation")).to_be_hidden()
    ask(page, FOLLOWUP_Q)
    assert [m["role"] for m in last_call(site)].count("assistant") == 0
    expect(page.get_by_test_id("answer-followup")).to_be_hidden()
    assert table(page) == query(site.db, ORDERS_2024_SQL)


def test_the_page_sends_as_many_turns_as_the_server_says(browser, site):
    """The number of earlier turns sent comes from /v1/models (max_history), not from the page."""
    context, page = open_page(browser, site.url)
    try:
        def models(route):
            response = route.fetch()
            body = response.json()
            body["models"][0]["max_history"] = MAX_HISTORY + 2
            route.fulfill(response=response, json=body)

        context.route("**/v1/models", models)
        page.reload()
        expect(page.locator("#db option")).to_have_count(1)
        ask(page, PRODUCTS_Q)
        page.evaluate("""() => { const c = window.slimsql.state.conversation;
                                 for (let i = 0; i < 30; i++) c.unshift({question: `old question ${i}`, sql: 'SELECT 1'}); }""")
        ask(page, "and in 2024 again?")
        history = sent_history(page)
        assert len(history) == MAX_HISTORY + 2 and history[-1]["question"] == PRODUCTS_Q
    finally:
        context.close()


def test_csv_download(page, site):
    ask(page, "Show me the markup test")
    with page.expect_download() as info:
        page.get_by_test_id("download-csv").click()
    download = info.value
    assert download.suggested_filename == "shop-show-me-the-markup-test.csv"
    content = Path(download.path()).read_bytes().decode("utf-8")
    # a text cell a spreadsheet would run as a formula is written as text; a negative number stays a number
    # the CSV keeps the exact value of a float
    assert content == ('html,missing,quoted,multi,num,formula,neg,noisy\r\n'
                       '"<img src=x onerror=""window.__pwned=1"">",,"a,b ""c""","line1\nline2",3.5,'
                       '"\'=HYPERLINK(""x"")",-2,0.30000000000000004\r\n')
    assert list(csv.reader(io.StringIO(content, newline=""))) == [
        ["html", "missing", "quoted", "multi", "num", "formula", "neg", "noisy"],
        ['<img src=x onerror="window.__pwned=1">', "", 'a,b "c"', "line1\nline2", "3.5", "'=HYPERLINK(\"x\")", "-2",
         "0.30000000000000004"]]

    ask(page, CATEGORY_Q)
    with page.expect_download() as info:
        page.get_by_test_id("download-csv").click()
    rows = list(csv.reader(io.StringIO(Path(info.value.path()).read_text("utf-8"), newline="")))
    head, expected = query(site.db, CATEGORY_SQL)
    assert rows == [head] + expected


def test_history_click_shows_an_earlier_answer(page, site):
    ask(page, PRODUCTS_Q)
    ask(page, CATEGORY_Q)
    items = page.get_by_test_id("history-item")
    expect(items).to_have_count(2)
    expect(items.nth(0)).to_contain_text(CATEGORY_Q)  # newest first
    expect(items.nth(1)).to_contain_text(PRODUCTS_Q)
    expect(items.nth(0)).to_have_attribute("aria-current", "true")
    calls = len(site.backend.calls)

    items.nth(1).click()
    expect(page.get_by_test_id("answer-question")).to_have_text(PRODUCTS_Q)
    assert page.get_by_test_id("sql-view").text_content() == PRODUCTS_SQL
    assert table(page) == query(site.db, PRODUCTS_SQL)
    expect(page.get_by_test_id("chart")).to_be_hidden()
    expect(items.nth(1)).to_have_attribute("aria-current", "true")

    items.nth(0).click()
    expect(page.get_by_test_id("answer-question")).to_have_text(CATEGORY_Q)
    expect(page.get_by_test_id("chart-bar")).to_have_count(8)
    assert len(site.backend.calls) == calls  # shown again, not asked again


def test_unsafe_edit_is_refused_in_one_line_and_the_file_is_untouched(page, site):
    before = sha256(site.db)
    ask(page, PRODUCTS_Q)
    page.get_by_test_id("edit-sql").click()
    page.get_by_test_id("sql-edit").fill("DELETE FROM orders")
    page.get_by_test_id("run-sql").click()
    message = error_line(page)
    assert message and "\n" not in message and len(message) < 300
    expect(page.get_by_test_id("error")).to_have_attribute("data-code", "unsafe_sql")
    expect(page.get_by_test_id("sql-edit")).to_be_visible()  # still editing, to fix it
    expect(page.get_by_test_id("sql-edit")).to_have_value("DELETE FROM orders")
    assert table(page) == query(site.db, PRODUCTS_SQL)  # the earlier result stays
    assert query(site.db, "SELECT count(*) FROM orders")[1] != [["0"]]

    # fixing it clears the error
    page.get_by_test_id("sql-edit").fill("SELECT count(*) AS orders FROM orders")
    page.get_by_test_id("run-sql").click()
    expect(page.get_by_test_id("sql-view")).to_have_text("SELECT count(*) AS orders FROM orders")
    expect(page.get_by_test_id("error")).to_be_hidden()
    assert table(page) == query(site.db, "SELECT count(*) AS orders FROM orders")
    assert sha256(site.db) == before


def test_a_failed_answer_shows_its_sql_and_can_be_fixed(page, site):
    before = sha256(site.db)
    page.get_by_test_id("question").fill("Please delete all the orders")
    page.get_by_test_id("ask").click()
    message = error_line(page)
    assert "\n" not in message
    expect(page.get_by_test_id("error")).to_have_attribute("data-code", "unsafe_sql")
    expect(page.get_by_test_id("error-sql")).to_have_text("DELETE FROM orders")
    expect(page.locator("#error-sql .tok-keyword")).to_have_text(["DELETE", "FROM"])
    expect(page.get_by_test_id("error-trace")).to_be_visible()  # why: every candidate and its fate
    expect(page.locator("#error-trace summary")).to_contain_text("1 candidate")
    page.locator("#error-trace summary").click()
    expect(page.locator("#error-trace [data-testid=trace-trial]")).to_contain_text("unsafe")
    page.locator("#error-trace summary").click()
    expect(page.get_by_test_id("answer")).to_be_hidden()
    expect(page.get_by_test_id("history-item")).to_have_count(0)
    screenshot(page, "error.png")

    page.get_by_test_id("edit-error-sql").click()
    expect(page.get_by_test_id("error")).to_be_hidden()
    expect(page.get_by_test_id("answer-question")).to_have_text("Please delete all the orders")
    expect(page.get_by_test_id("sql-edit")).to_have_value("DELETE FROM orders")
    page.get_by_test_id("sql-edit").fill("SELECT status, count(*) AS orders FROM orders GROUP BY status")
    page.get_by_test_id("run-sql").click()
    expect(page.get_by_test_id("history-item")).to_have_count(1)
    assert table(page) == query(site.db, "SELECT status, count(*) AS orders FROM orders GROUP BY status")
    expect(page.get_by_test_id("chart-bar")).to_have_count(5)
    assert sha256(site.db) == before


def test_truncated_result_says_so(page, site):
    ask(page, "List every order")
    head, rows = table(page)
    assert head == ["order_id", "status"] and len(rows) == MAX_ROWS
    assert rows == query(site.db, ALL_ORDERS_SQL)[1][:MAX_ROWS]
    expect(page.get_by_test_id("truncated")).to_be_visible()
    expect(page.get_by_test_id("truncated")).to_contain_text(f"first {MAX_ROWS} rows")
    expect(page.get_by_test_id("truncated")).to_contain_text("truncated by rows")
    expect(page.get_by_test_id("chart-bar")).to_have_count(25)
    expect(page.get_by_test_id("chart")).to_contain_text(f"first 25 of {MAX_ROWS} rows")


def _post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_busy_state_and_a_full_queue(page, site):
    GATE.clear()
    try:
        # someone else's slow question fills the one place in line
        other: dict = {}
        worker = threading.Thread(target=lambda: other.update(
            zip(("status", "body"), _post(site.url + "/v1/ask", {"db": "shop", "question": "a slow one"}))))
        worker.start()
        deadline = time.monotonic() + 10
        while site.service.gate.admitted < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert site.service.gate.admitted == 1

        page.get_by_test_id("question").fill(PRODUCTS_Q)
        page.get_by_test_id("question").press("Enter")
        message = error_line(page)
        assert "busy" in message and "retry after" in message and "\n" not in message
        expect(page.get_by_test_id("error")).to_have_attribute("data-code", "busy")
        expect(page.get_by_test_id("ask")).to_be_enabled()
        GATE.set()
        worker.join(20)
        assert other["status"] == 200

        # our own slow question: the button waits with it
        GATE.clear()
        page.get_by_test_id("question").fill("another slow one")
        page.get_by_test_id("ask").click()
        expect(page.get_by_test_id("ask")).to_be_disabled()
        expect(page.get_by_test_id("ask")).to_have_text("Thinking…")
        expect(page.get_by_test_id("status")).to_have_text("thinking…")
        expect(page.get_by_test_id("error")).to_be_hidden()
        page.get_by_test_id("question").press("Enter")  # a second submit while busy does nothing
        GATE.set()
        expect(page.get_by_test_id("answer-question")).to_have_text("another slow one")
        expect(page.get_by_test_id("ask")).to_be_enabled()
        expect(page.get_by_test_id("ask")).to_have_text("Ask")
        expect(page.get_by_test_id("status")).to_have_text("")
        expect(page.get_by_test_id("history-item")).to_have_count(1)
    finally:
        GATE.set()


def test_api_key_is_asked_for_and_sent(browser, site):
    context, page = open_page(browser, site.keyed_url)
    try:
        message = error_line(page)
        assert "X-API-Key" in message
        expect(page.get_by_test_id("key-box")).to_have_attribute("open", "")
        page.get_by_test_id("api-key").fill("s3cret-key")
        page.get_by_test_id("save-key").click()
        expect(page.locator("#db option")).to_have_count(1)
        expect(page.get_by_test_id("error")).to_be_hidden()
        ask(page, PRODUCTS_Q)
        assert table(page) == query(site.db, PRODUCTS_SQL)
        asked = [h for u, m, h, _ in page.requests if u.endswith("/v1/ask")]
        assert asked and all(h.get("x-api-key") == "s3cret-key" for h in asked)
        assert page.evaluate("sessionStorage.getItem('slimsql.apiKey')") == "s3cret-key"
        page.reload()  # the key lasts the session
        expect(page.locator("#db option")).to_have_count(1)
        expect(page.get_by_test_id("error")).to_be_hidden()
        assert only_local([u for u, *_ in page.requests], site.keyed_url) == []
    finally:
        context.close()


def test_the_page_reaches_only_its_server(page, site):
    ask(page, CATEGORY_Q)
    with page.expect_download():
        page.get_by_test_id("download-csv").click()
    page.get_by_test_id("edit-sql").click()
    page.get_by_test_id("run-sql").click()
    expect(page.get_by_test_id("sql-edited")).to_be_visible()
    urls = [u for u, *_ in page.requests]
    paths = {urlsplit(u).path for u in urls if not u.startswith("blob:")}
    assert {"/", "/static/app.js", "/static/style.css", "/v1/databases", "/v1/models", "/v1/ask", "/v1/sql"} <= paths
    assert only_local(urls, site.url) == []
    # and nothing on the page points elsewhere
    refs = page.evaluate("""[...document.querySelectorAll('[src],[href]')]
                            .map(e => e.getAttribute('src') || e.getAttribute('href'))""")
    assert all(r.startswith("/") or r.startswith("data:") for r in refs), refs


def test_right_answers_corrections_and_notes_are_taught_from_the_page(page, site):
    from slimsql import knowledge

    path = site.db.with_name(site.db.name + knowledge.SUFFIX)
    before = sha256(site.db)
    ask(page, CATEGORY_Q)
    expect(page.get_by_test_id("save-example")).to_have_text("Right: save as example")
    page.get_by_test_id("save-example").click()
    expect(page.get_by_test_id("taught")).to_contain_text("saved as example e-")
    assert (CATEGORY_Q, CATEGORY_SQL) in [(e.question, e.sql) for e in knowledge.load(path).examples]

    # an edited query, run, is saved as the correction of the same question
    corrected = CATEGORY_SQL.replace("GROUP BY", "WHERE p.discontinued = 0\nGROUP BY")
    page.get_by_test_id("edit-sql").click()
    page.get_by_test_id("sql-edit").fill(corrected)
    page.get_by_test_id("run-sql").click()
    expect(page.get_by_test_id("taught")).to_be_hidden()
    expect(page.get_by_test_id("save-example")).to_have_text("Save the correction as example")
    page.get_by_test_id("save-example").click()
    expect(page.get_by_test_id("taught")).to_contain_text("saved as example e-")
    assert (CATEGORY_Q, corrected) in [(e.question, e.sql) for e in knowledge.load(path).examples]

    page.get_by_test_id("note-box").locator("summary").click()
    page.get_by_test_id("note").fill("revenue counts only orders that were not cancelled")
    page.get_by_test_id("save-note").click()
    expect(page.get_by_test_id("taught")).to_contain_text("saved note n-")
    assert knowledge.load(path).note_lines() == ["revenue counts only orders that were not cancelled"]
    screenshot(page, "taught.png")

    # the next question is shown what was taught, and the trace says so
    ask(page, "What is the total revenue per product category in 2023?")
    asked = last_call(site)  # a follow-up of the first: the notes are with the schema, the examples with it
    assert "-- Notes on this database:\n-- - revenue counts only" in asked[0]["content"] + asked[1]["content"]
    assert "-- Examples of questions on this database and their SQL:" in asked[-1]["content"]
    page.get_by_test_id("trace").locator("summary").click()
    expect(page.get_by_test_id("trace-examples")).to_contain_text("taught examples shown: e-")
    expect(page.get_by_test_id("trace-notes")).to_contain_text("taught notes shown: n-")
    # a refused example is one line, and nothing is stored
    page.get_by_test_id("edit-sql").click()
    page.get_by_test_id("sql-edit").fill("SELECT nope FROM products")
    page.get_by_test_id("run-sql").click()
    expect(page.get_by_test_id("error")).to_be_visible()
    assert len(knowledge.load(path).examples) == 2 and sha256(site.db) == before
