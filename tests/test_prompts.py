import pytest

from slimsql.errors import InputError
from slimsql.prompts import STYLES, get_style
from slimsql.schema import Column, Schema, Table

SCHEMA = Schema(tables=(Table("t", (Column("id", "INTEGER", primary_key=True), Column("name", "TEXT"))),))


def test_strict_chatml_reference_wording():
    messages = get_style("strict-chatml").messages(SCHEMA, "  How many rows? ")
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[0]["content"].startswith("You are a SQL translation engine. Return ONLY raw SQL. Schema: CREATE TABLE t (")
    assert messages[1]["content"] == "How many rows?"


def test_generate_sql_reference_wording():
    messages = get_style("generate-sql").messages(SCHEMA, "How many rows?")
    assert [m["role"] for m in messages] == ["user"]
    text = messages[0]["content"]
    assert text.startswith("Generate SQL from the given schema and question. Output SQL only.")
    assert text.endswith("Question: How many rows?") and "id INTEGER PRIMARY KEY" in text


@pytest.mark.parametrize("name", sorted(STYLES))
def test_every_style_has_schema_before_question(name):
    messages = get_style(name).messages(SCHEMA, "QUESTION?")
    text = "\n".join(m["content"] for m in messages)
    assert 0 <= text.index("id") < text.index("QUESTION?")
    assert "{" not in text  # no unfilled template fields


def test_schema_text_with_braces_is_not_a_template():
    messages = get_style("strict-chatml").messages("CREATE TABLE t (j TEXT -- e.g. '{a}')", "q")
    assert "'{a}'" in messages[0]["content"]


def test_unknown_style():
    with pytest.raises(InputError, match="unknown prompt style"):
        get_style("nope")
