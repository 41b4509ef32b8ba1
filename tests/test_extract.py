"""Golden cases: model text -> (one SQL statement, clean-ups), or a rejection."""

import pytest

from slimsql.errors import NoSQLError
from slimsql.sql import Extraction, ExtractionStats, extract

GOLDEN = [
    # (model text, expected SQL, expected fixes)
    ("SELECT count(*) FROM orders", "SELECT count(*) FROM orders", ()),
    ("  SELECT 1\n", "SELECT 1", ()),
    ("SELECT 1;", "SELECT 1", ("semicolon",)),
    ("SELECT 1;;  ", "SELECT 1", ("semicolon",)),
    ("```sql\nSELECT a FROM t;\n```", "SELECT a FROM t", ("fence", "semicolon")),
    ("```\nSELECT a FROM t\n```", "SELECT a FROM t", ("fence",)),
    ("```SQL\nSELECT a\nFROM t\nWHERE b > 1\n```", "SELECT a\nFROM t\nWHERE b > 1", ("fence",)),
    ("```sql\nSELECT a FROM t", "SELECT a FROM t", ("fence",)),  # unterminated fence (max_tokens)
    ("Here is the query:\nSELECT a FROM t", "SELECT a FROM t", ("prose_before",)),
    ("SELECT a FROM t\n\nThis returns every a.", "SELECT a FROM t", ("prose_after",)),
    ("Sure!\n```sql\nSELECT * FROM customers\n```\nHope it helps.", "SELECT * FROM customers",
     ("fence", "prose_before", "prose_after")),
    ("SELECT 1; SELECT 2;", "SELECT 1", ("extra_statements",)),
    ("SELECT 1;\nThe query returns one.", "SELECT 1", ("prose_after",)),
    ("To select the rows, use:\nSELECT name FROM t", "SELECT name FROM t", ("prose_before",)),
    ("With the schema above:\nWITH x AS (SELECT 1 AS a) SELECT a FROM x",
     "WITH x AS (SELECT 1 AS a) SELECT a FROM x", ("prose_before",)),
    ("SELECT name FROM t WHERE name = 'a;b' ;", "SELECT name FROM t WHERE name = 'a;b'", ("semicolon",)),
    ("SELECT 1 -- comment; with semicolon\n", "SELECT 1 -- comment; with semicolon", ()),
    ("select count(*) from orders where status = 'cancelled'\nIt counts cancelled orders.",
     "select count(*) from orders where status = 'cancelled'", ("prose_after",)),
    ("SELECT a FROM t UNION SELECT b FROM u", "SELECT a FROM t UNION SELECT b FROM u", ()),
    ("DELETE FROM t; SELECT 1", "SELECT 1", ("prose_before",)),  # the checker guards what runs
    # Statements that are not queries are passed on, so the checker names them:
    ("DELETE FROM t", "DELETE FROM t", ()),
    ("DROP TABLE t; DELETE FROM u;", "DROP TABLE t", ("extra_statements",)),
]

REJECTED = [
    "",
    "   \n",
    "I don't know the answer.",
    "The table has no such column.",
    # A broken tail must not be silently cut off into a different query:
    "SELECT a\nFROM t\nWHERE b = (",
    "SELECT a FROM t\nWHERE",
]


@pytest.mark.parametrize("text,sql,fixes", GOLDEN)
def test_golden(text, sql, fixes):
    assert extract(text) == Extraction(sql=sql, fixes=fixes)


@pytest.mark.parametrize("text", REJECTED)
def test_rejected_with_reason(text):
    with pytest.raises(NoSQLError) as info:
        extract(text)
    assert "\n" not in str(info.value) and str(info.value)


def test_strict_allows_only_a_final_semicolon():
    assert extract("SELECT 1;").strict
    assert not extract("```sql\nSELECT 1\n```").strict
    assert not extract("SELECT 1; SELECT 2").strict


def test_stats_count_each_clean_up():
    stats = ExtractionStats()
    for text in ["SELECT 1", "```sql\nSELECT 1\n```", "SELECT 1;"]:
        stats.record(extract(text))
    stats.record(None)
    assert stats.as_dict() == {"total": 4, "strict": 2, "cleaned": 1, "rejected": 1, "fence": 1, "semicolon": 1}
