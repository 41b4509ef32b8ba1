"""Schema-constrained decoding: a llama.cpp grammar (GBNF) built from the live schema.

The grammar is *lexical*, not a full SQL grammar: a statement is any sequence of
SQL keywords, function calls, numbers, string literals, operators and names, but
the names are restricted to what the database has:

* a bare name is a table or a column of the schema (or a keyword);
* a qualified name ``q.c`` needs a column ``c`` of the schema; its qualifier ``q``
  is a table or any short name of up to four characters (a table alias may be
  declared after its first use, as in ``SELECT T1.name FROM singer AS T1``, so the
  grammar cannot know it yet; allowing any name there would let a made-up name
  in through the back door, as ``IndependenceYear`` followed by a forced ``.*``);
* a new name may only be declared: after ``AS`` (a column or table alias) or
  right after a table name (``FROM singer s``);
* quoted names (``"x"``, ```x```, ``[x]``) must be schema names too, except that
  ``"..."`` is also SQLite's fallback string literal.

So the model can still write wrong SQL, but never a table or column that does
not exist. What it cannot express: a bare reference to an output alias
(``ORDER BY total`` after ``count(*) AS total``; it must repeat the expression),
and a table alias longer than four characters used as a qualifier. It does not
know which table holds a column: a real column in the wrong table (the small
model's commonest mistake) is left to the identifier repair.
Names are matched without regard to ASCII case, as SQLite does. Names are
emitted as character tries (shared prefixes written once), which keeps the
number of grammar stacks, and so the cost of each sampling step, small.
"""

from __future__ import annotations

import re

from ..errors import InputError
from ..schema import Schema

#: SQLite's keywords (https://sqlite.org/lang_keywords.html) and type names; bare words the model may write.
KEYWORDS = """
ABORT ACTION ADD AFTER ALL ALTER ALWAYS ANALYZE AND AS ASC ATTACH AUTOINCREMENT BEFORE BEGIN BETWEEN BY
CASCADE CASE CAST CHECK COLLATE COLUMN COMMIT CONFLICT CONSTRAINT CREATE CROSS CURRENT CURRENT_DATE
CURRENT_TIME CURRENT_TIMESTAMP DATABASE DEFAULT DEFERRABLE DEFERRED DELETE DESC DETACH DISTINCT DO DROP
EACH ELSE END ESCAPE EXCEPT EXCLUDE EXCLUSIVE EXISTS EXPLAIN FAIL FILTER FIRST FOLLOWING FOR FOREIGN FROM
FULL GENERATED GLOB GROUP GROUPS HAVING IF IGNORE IMMEDIATE IN INDEX INDEXED INITIALLY INNER INSERT INSTEAD
INTERSECT INTO IS ISNULL JOIN KEY LAST LEFT LIKE LIMIT MATCH MATERIALIZED NATURAL NO NOT NOTHING NOTNULL
NULL NULLS OF OFFSET ON OR ORDER OTHERS OUTER OVER PARTITION PLAN PRAGMA PRECEDING PRIMARY QUERY RAISE
RANGE RECURSIVE REFERENCES REGEXP REINDEX RELEASE RENAME REPLACE RESTRICT RETURNING RIGHT ROLLBACK ROW ROWS
SAVEPOINT SELECT SET TABLE TEMP TEMPORARY THEN TIES TO TRANSACTION TRIGGER UNBOUNDED UNION UNIQUE UPDATE
USING VACUUM VALUES VIEW VIRTUAL WHEN WHERE WINDOW WITH WITHOUT
TRUE FALSE ROWID INTEGER INT REAL TEXT BLOB NUMERIC FLOAT DOUBLE VARCHAR CHAR DATE DATETIME BOOLEAN NOCASE
""".split()

#: SQLite's core, aggregate, date/time, math, JSON and window functions; written as ``name(``.
FUNCTIONS = """
abs changes char coalesce concat concat_ws format glob hex ifnull iif instr last_insert_rowid length like
likelihood likely lower ltrim max min nullif octet_length printf quote random randomblob replace round rtrim
sign soundex substr substring total_changes trim typeof unhex unicode unlikely upper zeroblob
avg count group_concat string_agg sum total
date time datetime julianday unixepoch strftime timediff
acos acosh asin asinh atan atan2 atanh ceil ceiling cos cosh degrees exp floor ln log log10 log2 mod pi pow
power radians sin sinh sqrt tan tanh trunc
json json_array json_array_length json_extract json_object json_type json_valid
row_number rank dense_rank percent_rank cume_dist ntile lag lead first_value last_value nth_value
cast exists in not
""".split()

#: a name SQLite reads without quotes (it treats every non-ASCII character as a letter)
_SIMPLE = re.compile(r"[A-Za-z_\x80-\U0010ffff][A-Za-z0-9_$\x80-\U0010ffff]*\Z")


def _char(c: str) -> str:
    if c.isascii() and c.isalpha():
        return f"[{c.lower()}{c.upper()}]"
    return '"' + c.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _trie(words: set[str]) -> str:
    """One GBNF expression matching exactly ``words`` (ASCII case-insensitive), prefix-factored."""
    tree: dict = {}
    for word in words:
        node = tree
        for c in word:
            c = c.lower() if c.isascii() else c  # SQLite folds ASCII case only
            node = node.setdefault(c, {})
        node[""] = {}

    def emit(node: dict) -> str:
        end = "" in node
        branches = [_char(c) + (" " + emit(child) if child else "") for c, child in sorted(node.items()) if c]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(" + " | ".join(branches) + ")"
        return f"({body})?" if end else body

    return emit(tree)


def _quoted(names: set[str]) -> set[str]:
    """Each name in each SQLite quoting that can hold it (not its own closing quote, no line break)."""
    return {q + n + e for n in names for q, e in (('"', '"'), ("`", "`"), ("[", "]")) if e not in n and "\n" not in n}


def build(schema: Schema) -> str:
    """The GBNF grammar (root rule ``root``) of statements that only name what ``schema`` has.
    Its keywords, functions and quoting are SQLite's, so other dialects are refused."""
    if schema.dialect != "sqlite":
        raise InputError(f"--grammar knows only SQLite's keywords and quoting, not {schema.dialect}'s; leave it off")
    tables = {t.name for t in schema.tables}
    columns = {c.name for t in schema.tables for c in t.columns} | {"rowid"}
    names = tables | columns
    keywords = {k.lower() for k in KEYWORDS}
    bare = {n for n in names if _SIMPLE.match(n)} | keywords
    quoted, quoted_columns = _quoted(names), _quoted(columns)
    simple_tables = {n for n in tables if _SIMPLE.match(n)}
    rules = {
        "root": "ws body ws (\";\" ws)?",
        # words need whitespace between them; punctuation does not
        "body": "word (sp body | punct-seq)? | punct-seq",
        "punct-seq": "punct ws body?",
        "word": "table-alias | as-alias | qualified | bare | number | string",
        "punct": "call | \"(\" | \")\" | \",\" | \"*\" | \"=\" | \"==\" | \"!=\" | \"<>\" | \"<\" | \"<=\" | \">\" "
                 "| \">=\" | \"+\" | \"-\" | \"/\" | \"%\" | \"||\" | \"~\" | quoted-name",
        "call": f"{_trie({f.lower() for f in FUNCTIONS})} ws \"(\"",
        "bare": _trie(bare),
        "quoted-name": _trie(quoted) if quoted else "\"\\\"\" [^\"]* \"\\\"\"",
        "qualified": "(table | short | quoted-any) \".\" (column | \"*\")",
        "table": _trie(simple_tables) if simple_tables else "short",
        "short": "letter (letter | [0-9$])? (letter | [0-9$])? (letter | [0-9$])?",
        "letter": "[A-Za-z_] | [^\\x00-\\x7F]",
        "column": _trie({c for c in columns if _SIMPLE.match(c)} | quoted_columns),
        "table-alias": "(table | quoted-name) sp ident",
        "as-alias": "[aA] [sS] sp (ident | quoted-any)",
        "ident": "([A-Za-z_] | [^\\x00-\\x7F]) ([A-Za-z0-9_$] | [^\\x00-\\x7F])*",
        "quoted-any": "\"\\\"\" [^\"\\n]* \"\\\"\" | \"`\" [^`\\n]* \"`\" | \"[\" [^\\]\\n]* \"]\"",
        "number": "[0-9]+ (\".\" [0-9]+)? ([eE] [-+]? [0-9]+)? | \".\" [0-9]+",
        "string": "\"'\" ([^'] | \"''\")* \"'\" | \"\\\"\" [^\"]* \"\\\"\"",
        "sp": "[ \\t\\n]+",
        "ws": "[ \\t\\n]*",
    }
    return "\n".join(f"{name} ::= {body}" for name, body in rules.items()) + "\n"
