"""Model text -> exactly one SQL statement, and the read-only allow-list check.

Two stages of the question's road live here:

* :func:`extract` reduces whatever a model wrote (markdown fences, prose before
  or after, several statements, trailing semicolons) to one statement, using
  sqlglot's tokenizer and parser rather than regular expressions over SQL, and
  says which clean-ups it needed (``Extraction.fixes``). Text that cannot be
  reduced raises :class:`~slimsql.errors.NoSQLError` with the reason.
* :func:`check_read_only` is the first safety layer in front of any database:
  the statement must parse as exactly one query (SELECT, set operation, or WITH
  ... SELECT) with no writing, DDL, transaction, pragma, attach or
  extension-loading node anywhere in its tree, and none of the functions (or
  statements) the engine's rules deny (``slimsql.db.base.EngineRules``). The
  database layer adds its own independent layers (see ``slimsql.db.sqlite``).
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import ParseError, TokenError
from sqlglot.tokens import TokenType

from .db import EngineRules, rules_for
from .errors import NoSQLError, UnsafeSQLError

# sqlglot warns on stderr when it falls back to a generic Command; we report
# such statements ourselves.
logging.getLogger("sqlglot").setLevel(logging.ERROR)

#: Clean-ups :func:`extract` may apply, in the order they are checked.
FIXES = ("fence", "prose_before", "prose_after", "extra_statements", "semicolon")

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n?(.*?)(?:```|\Z)", re.DOTALL)
_START = re.compile(r"\b(SELECT|WITH)\b", re.IGNORECASE)
# A dropped line that starts like this is the rest of the query, not prose.
_CONTINUATION = re.compile(
    r"^\s*([(),*=<>+\-/|]|(AND|OR|NOT|FROM|WHERE|JOIN|INNER|LEFT|RIGHT|FULL|CROSS|OUTER|ON|USING|"
    r"GROUP|ORDER|HAVING|LIMIT|OFFSET|UNION|INTERSECT|EXCEPT|SELECT|AS|BY|CASE|WHEN|THEN|ELSE|"
    r"END|IN|IS|LIKE|BETWEEN|ASC|DESC|WINDOW|OVER|VALUES|NULL)\b)",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Extraction:
    """One statement taken from model text, and the clean-ups that took."""

    sql: str
    fixes: tuple[str, ...] = ()

    @property
    def strict(self) -> bool:
        """True when the raw text was exactly one statement (a final ';' allowed)."""
        return not (set(self.fixes) - {"semicolon"})


class ExtractionStats:
    """Counts how often model output needed each clean-up, or was rejected."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def record(self, extraction: Extraction | None) -> None:
        self.counts["total"] += 1
        if extraction is None:
            self.counts["rejected"] += 1
            return
        self.counts["strict" if extraction.strict else "cleaned"] += 1
        self.counts.update(extraction.fixes)

    def as_dict(self) -> dict[str, int]:
        return dict(self.counts)


def _split_statements(text: str, dialect: str) -> list[str]:
    """Split on top-level semicolons using sqlglot's tokenizer (strings and
    comments are respected). Raises TokenError on text that cannot be lexed."""
    tokens = Dialect.get_or_raise(dialect).tokenize(text)
    pieces, start = [], 0
    for token in tokens:
        if token.token_type == TokenType.SEMICOLON:
            pieces.append(text[start : token.start])
            start = token.end + 1
    pieces.append(text[start:])
    return [p.strip() for p in pieces if p.strip()]


def _parses(sql: str, dialect: str) -> bool:
    try:
        return sqlglot.parse_one(sql, read=dialect) is not None
    except (ParseError, TokenError, ValueError, RecursionError):
        return False


def _first_statement(body: str, dialect: str) -> tuple[str, str] | None:
    """Longest prefix of ``body`` (by whole lines) whose first statement parses.

    Returns (statement, dropped_text). Lines are only dropped when the first
    dropped line does not read as a continuation of the query, so a broken
    WHERE clause is never silently cut off.
    """
    lines = body.splitlines()
    for end in range(len(lines), 0, -1):
        dropped = "\n".join(lines[end:])
        if dropped.strip() and _CONTINUATION.match(dropped.strip().splitlines()[0]):
            continue
        chunk = "\n".join(lines[:end])
        try:
            statements = _split_statements(chunk, dialect)
        except TokenError:
            continue
        if statements and _parses(statements[0], dialect):
            head = statements[0]
            rest = chunk[chunk.index(head) + len(head) :]
            return head, (rest + "\n" + dropped)
    return None


def extract(text: str, dialect: str = "sqlite") -> Extraction:
    """Reduce model output to exactly one SQL statement, or raise NoSQLError."""
    if text is None or not text.strip():
        raise NoSQLError("the model returned no text")
    raw = text.strip()
    fixes: list[str] = []

    body = raw
    fence = _FENCE.search(raw)
    if fence:
        fixes.append("fence")
        body = fence.group(2)
        if raw[: fence.start()].strip():
            fixes.append("prose_before")
        if raw[fence.end() :].strip():
            fixes.append("prose_after")

    for match in _START.finditer(body):
        found = _first_statement(body[match.start() :], dialect)
        if found is None:
            continue
        statement, rest = found
        if body[: match.start()].strip() and "prose_before" not in fixes:
            fixes.append("prose_before")
        leftover = rest.strip(" ;\n\t")
        if rest.strip().startswith(";") and not leftover:
            fixes.append("semicolon")
        if leftover:
            try:
                more = [s for s in _split_statements(leftover, dialect) if _parses(s, dialect)]
            except TokenError:
                more = []
            kind = "extra_statements" if more else "prose_after"
            if kind not in fixes:
                fixes.append(kind)
        ordered = tuple(f for f in FIXES if f in fixes)
        return Extraction(sql=statement, fixes=ordered)

    # Not a query, but a recognisable statement (DELETE, DROP...): hand it on so the
    # read-only check refuses it by name instead of calling it "not SQL".
    try:
        statements = _split_statements(body, dialect)
        parsed = sqlglot.parse_one(statements[0], read=dialect) if statements else None
    except (ParseError, TokenError, ValueError, RecursionError):
        parsed = None
    if isinstance(parsed, _FORBIDDEN_NODES) and not isinstance(parsed, exp.Command):
        more = ("extra_statements",) if len(statements) > 1 else ()
        return Extraction(sql=statements[0], fixes=tuple(f for f in FIXES if f in fixes) + more)

    snippet = " ".join(raw.split())[:80]
    raise NoSQLError(f"model output is not SQL (no parsable SELECT/WITH statement): {snippet!r}")


# --- the read-only allow-list -------------------------------------------------

#: SQL text longer than this is refused before it is parsed: parse time grows
#: faster than linearly with some shapes (a 1 MB IN list took 12 s).
MAX_SQL_CHARS = 100_000
_QUERY_ROOTS = (exp.Select, exp.SetOperation, exp.Subquery, exp.Values)


_DDL_OBJECTS = {"TABLE", "VIEW", "INDEX", "TRIGGER", "VIRTUAL", "SCHEMA", "DATABASE"}
_FORBIDDEN_NODES = tuple(
    getattr(exp, name)
    for name in (
        "Insert", "Update", "Delete", "Merge", "Create", "Drop", "Alter", "AlterTable",
        "Command", "Pragma", "Attach", "Detach", "Into", "Transaction", "Commit", "Rollback",
        "Set", "Use", "Copy", "LoadData", "TruncateTable", "Cache", "Uncache", "Analyze",
    )
    if hasattr(exp, name)
)


def _describe(node: exp.Expression) -> str:
    if isinstance(node, exp.Command):
        words = [str(node.this).upper()]
        for word in str(node.expression or "").split()[:3]:  # CREATE TEMP TRIGGER, not just CREATE
            if not word.isalpha():
                break
            words.append(word.upper())
            if word.upper() in _DDL_OBJECTS:
                return " ".join(words)
        return words[0]
    return node.key.upper()


def _forbidden(root: exp.Expression, rules: EngineRules) -> str | None:
    forbidden = _FORBIDDEN_NODES + tuple(getattr(exp, name) for name in sorted(rules.denied_statements))
    for node in root.walk():
        if isinstance(node, forbidden):
            return f"only read-only queries may run, found {_describe(node)}"
        if isinstance(node, exp.Func):
            name = (node.name if isinstance(node, exp.Anonymous) else node.sql_name()).lower()
            if name in rules.denied_functions:
                return f"function {name}() is not allowed"
    return None


def check_read_only(sql: str, dialect: str = "sqlite") -> exp.Expression:
    """Return the parsed statement if ``sql`` is exactly one read-only query.

    ``dialect`` chooses the engine rules (:func:`slimsql.db.rules_for`): how the SQL is
    parsed and which functions and statements are denied on top of the neutral list.
    Raises UnsafeSQLError naming the first reason it may not run.
    """
    if not sql or not sql.strip():
        raise UnsafeSQLError("not run: the SQL is empty")
    if len(sql) > MAX_SQL_CHARS:
        raise UnsafeSQLError(f"not run: the SQL is {len(sql):,} characters long, more than the {MAX_SQL_CHARS:,} "
                             "that are checked")
    try:
        sql.encode("utf-8")
    except UnicodeEncodeError as err:  # e.g. undecodable bytes from the command line
        raise UnsafeSQLError(f"not run: the SQL is not valid UTF-8 text (at character {err.start + 1})") from None
    rules = rules_for(dialect)
    read = rules.check_dialect or rules.dialect
    try:
        statements = [s for s in sqlglot.parse(sql, read=read) if s is not None]
    except RecursionError:
        raise UnsafeSQLError("not run: the SQL is nested too deeply to check") from None
    except (ParseError, TokenError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UnsafeSQLError(f"not run: the SQL could not be parsed ({first})") from None
    for statement in statements:  # name what is forbidden before counting (a trigger body holds ';')
        problem = _forbidden(statement, rules)
        if problem:
            raise UnsafeSQLError(f"not run: {problem}")
    if len(statements) != 1:
        raise UnsafeSQLError(f"not run: exactly one statement may run, found {len(statements)}")
    root = statements[0]
    if not isinstance(root, _QUERY_ROOTS):
        keyword = sql.split(None, 1)[0].upper()  # sqlglot may read e.g. SAVEPOINT as an alias
        raise UnsafeSQLError(f"not run: only SELECT or WITH ... SELECT may run, found {keyword}")
    return root


def transpile(sql: str, read: str, write: str) -> str:
    """Translate one statement between dialects (sqlglot)."""
    return sqlglot.transpile(sql, read=read, write=write)[0]
