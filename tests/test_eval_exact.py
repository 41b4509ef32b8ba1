"""Golden tests for Spider exact set match and hardness."""

import json

import pytest

from slimsql.eval.exact import exact_match, hardness, key_map_from_schema
from slimsql.schema import Column, ForeignKey, Schema, Table

from .conftest import SPIDER

SCHEMA = Schema(tables=(
    Table("singer", (Column("singer_id", primary_key=True), Column("name"), Column("age"), Column("country"))),
    Table("concert", (Column("concert_id", primary_key=True), Column("year"), Column("stadium_id"))),
    Table("singer_in_concert", (Column("concert_id"), Column("singer_id")),
          foreign_keys=(ForeignKey(("singer_id",), "singer", ("singer_id",)),
                        ForeignKey(("concert_id",), "concert", ("concert_id",)))),
))

EQUIVALENT = [
    ("SELECT count(*) FROM singer", "select COUNT(*) from SINGER"),
    ("SELECT name, age FROM singer", "SELECT age, name FROM singer"),                   # select is a set
    ("SELECT T1.name FROM singer AS T1", "SELECT name FROM singer"),                    # aliases resolved
    ("SELECT name FROM singer WHERE age > 20", "SELECT name FROM singer WHERE age > 35"),  # values masked
    ("SELECT name FROM singer WHERE country = 'France'", "SELECT name FROM singer WHERE country = \"USA\""),
    ("SELECT name FROM singer ORDER BY age DESC LIMIT 1", "SELECT name FROM singer ORDER BY age DESC LIMIT 3"),
    ("SELECT T2.name FROM singer_in_concert AS T1 JOIN singer AS T2 ON T1.singer_id = T2.singer_id",
     "SELECT singer.name FROM singer JOIN singer_in_concert ON singer.singer_id = singer_in_concert.singer_id"),
    ("SELECT DISTINCT country FROM singer", "SELECT country FROM singer"),              # as Spider: not compared
    ("SELECT name FROM singer WHERE age > (SELECT avg(age) FROM singer)",
     "SELECT name FROM singer WHERE age > (SELECT AVG(age) FROM singer)"),
    ("SELECT name FROM singer WHERE age > 1 AND country = 'x'",
     "SELECT name FROM singer WHERE country = 'y' AND age > 3"),                          # conditions as a set
    ("SELECT country, count(*) FROM singer GROUP BY country HAVING count(*) > 1",
     "SELECT count(*), country FROM singer GROUP BY country HAVING COUNT(*) > 5"),
    ("SELECT name FROM singer UNION SELECT name FROM singer WHERE age > 1",
     "SELECT name FROM singer UNION SELECT name FROM singer WHERE age > 9"),
]

DIFFERENT = [
    ("SELECT count(*) FROM singer", "SELECT count(*) FROM concert"),
    ("SELECT name FROM singer", "SELECT name, age FROM singer"),
    ("SELECT max(age) FROM singer", "SELECT min(age) FROM singer"),
    ("SELECT count(DISTINCT country) FROM singer", "SELECT count(country) FROM singer"),
    ("SELECT name FROM singer WHERE age > 20", "SELECT name FROM singer WHERE age < 20"),
    ("SELECT name FROM singer WHERE age > 20", "SELECT name FROM singer WHERE NOT age > 20"),
    ("SELECT name FROM singer WHERE age > 1 AND country = 'x'", "SELECT name FROM singer WHERE age > 1 OR country = 'x'"),
    ("SELECT name FROM singer ORDER BY age DESC", "SELECT name FROM singer ORDER BY age ASC"),
    ("SELECT name FROM singer ORDER BY age DESC LIMIT 1", "SELECT name FROM singer ORDER BY age DESC"),
    ("SELECT country FROM singer GROUP BY country", "SELECT country FROM singer"),
    ("SELECT country FROM singer GROUP BY country HAVING count(*) > 1", "SELECT country FROM singer GROUP BY country"),
    ("SELECT name FROM singer UNION SELECT name FROM singer", "SELECT name FROM singer INTERSECT SELECT name FROM singer"),
    ("SELECT name FROM singer WHERE age IN (SELECT age FROM singer WHERE country = 'x')",
     "SELECT name FROM singer WHERE age IN (SELECT singer_id FROM singer WHERE country = 'x')"),
    ("SELECT name FROM singer WHERE name LIKE '%a%'", "SELECT name FROM singer WHERE name = 'a'"),
    ("SELECT name FROM singer", "this is not sql"),
]


@pytest.mark.parametrize("gold,pred", EQUIVALENT)
def test_equivalent_pairs_match(gold, pred):
    assert exact_match(pred, gold, SCHEMA)
    assert exact_match(gold, pred, SCHEMA)


@pytest.mark.parametrize("gold,pred", DIFFERENT)
def test_different_pairs_do_not_match(gold, pred):
    assert not exact_match(pred, gold, SCHEMA)


def test_foreign_key_columns_count_as_one():
    keys = key_map_from_schema(SCHEMA)
    assert keys["singer_in_concert.singer_id"] == keys.get("singer.singer_id", "singer.singer_id")
    gold = "SELECT count(*) FROM singer AS T1 JOIN singer_in_concert AS T2 ON T1.singer_id = T2.singer_id GROUP BY T1.singer_id"
    pred = "SELECT count(*) FROM singer AS T1 JOIN singer_in_concert AS T2 ON T1.singer_id = T2.singer_id GROUP BY T2.singer_id"
    assert exact_match(pred, gold, SCHEMA)


@pytest.mark.parametrize("sql,level", [
    ("SELECT count(*) FROM singer", "easy"),
    ("SELECT name FROM singer WHERE age > 20", "easy"),
    ("SELECT name, country, age FROM singer ORDER BY age DESC", "medium"),
    ("SELECT T2.name FROM singer_in_concert AS T1 JOIN singer AS T2 ON T1.singer_id = T2.singer_id GROUP BY T2.name", "medium"),
    ("SELECT name FROM singer WHERE age > (SELECT avg(age) FROM singer)", "hard"),
    ("SELECT name FROM singer WHERE age > 1 EXCEPT SELECT name FROM singer WHERE country = 'x'", "hard"),
    ("SELECT name FROM singer WHERE age > 1 AND country = 'y' EXCEPT SELECT name FROM singer WHERE country = 'x'",
     "extra"),
    ("SELECT T2.name, count(*) FROM singer_in_concert AS T1 JOIN singer AS T2 ON T1.singer_id = T2.singer_id "
     "WHERE T2.age > 1 GROUP BY T2.name ORDER BY count(*) DESC LIMIT 1", "extra"),
])
def test_hardness_levels(sql, level):
    assert hardness(sql, SCHEMA) == level


spider = pytest.mark.skipif(not (SPIDER / "dev.json").exists(), reason="Spider not in ../shared/benchmarks")


@spider
def test_hardness_reproduces_the_published_spider_dev_breakdown():
    from collections import Counter

    dev = json.loads((SPIDER / "dev.json").read_text())
    assert Counter(hardness(ex["query"]) for ex in dev) == {"easy": 248, "medium": 446, "hard": 174, "extra": 166}


@spider
def test_every_spider_dev_gold_matches_itself():
    dev = json.loads((SPIDER / "dev.json").read_text())
    for ex in dev:
        assert exact_match(ex["query"], ex["query"]), ex["query"]
