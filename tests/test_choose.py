"""Voting and identifier repair: the rules written in slimsql.infer.choose and slimsql.infer.repair."""

import pytest

from slimsql.db import Result
from slimsql.infer import choose
from slimsql.infer.repair import closest, fix_identifiers, repair_messages
from slimsql.infer.trace import Trace, Trial
from slimsql.schema import Column, ForeignKey, Schema, Table


def trial(index, rows=None, ordered=False, logprob=None, tokens=10, error=None):
    t = Trial(index=index, origin="sample", sql=f"SELECT {index}", logprob=logprob, completion_tokens=tokens)
    if rows is None:
        t.error, t.error_kind = error or "no such column: x", "query"
    else:
        t.rows, t.signature = len(rows), choose.signature(Result(columns=("a",), rows=rows), ordered)
    return t


def test_biggest_group_wins_and_failures_get_no_vote():
    trials = [trial(0, [(1,)]), trial(1), trial(2, [(2,)]), trial(3, [(2,)]), trial(4)]
    trace = Trace("vote", trials)
    winner = choose.vote(trace, trials)
    assert winner.index == 2  # the group's earliest member
    assert [t.votes for t in trials] == [1, 0, 2, 2, 0] and trials[2].group == 0 and trials[0].group == 1
    assert trace.note.startswith("vote 2/5 in 2 groups")


def test_ties_go_to_higher_log_probability_then_to_the_earliest():
    trials = [trial(0, [(1,)], logprob=-5.0), trial(1, [(2,)], logprob=-1.0)]
    trace = Trace("vote", trials)
    assert choose.vote(trace, trials).index == 1 and "tie broken" in trace.note
    no_scores = [trial(0, [(1,)]), trial(1, [(2,)])]
    assert choose.vote(Trace("vote", no_scores), no_scores).index == 0  # greedy candidate first
    # equal sums: the order decides, deterministically
    same = [trial(0, [(1,)], logprob=-2.0), trial(1, [(2,)], logprob=-2.0)]
    assert choose.vote(Trace("vote", same), same).index == 0


def test_nothing_ran_means_no_winner():
    trials = [trial(0), trial(1)]
    assert choose.vote(Trace("vote", trials), trials) is None
    assert choose.first(Trace("first", trials), trials) is None


def test_signature_follows_spider_semantics():
    a = Result(columns=("x", "y"), rows=[(1, "a"), (2, "b")])
    b = Result(columns=("p", "q"), rows=[(2, "b"), (1, "a")])
    assert choose.signature(a, False) == choose.signature(b, False)  # a multiset; names do not matter
    assert choose.signature(a, True) != choose.signature(b, True)  # ordered output: order matters
    assert choose.signature(Result(("n",), [(2.0,)]), False) == choose.signature(Result(("n",), [(2,)]), False)
    assert choose.signature(Result(("n",), [(1,)], truncated=True), False) != choose.signature(
        Result(("n",), [(1,)]), False)
    assert choose.orders_rows("SELECT a FROM t ORDER BY a") and not choose.orders_rows(
        "SELECT a FROM (SELECT a FROM t ORDER BY a)")


SHOP = Schema(tables=(
    Table("customers", (Column("customer_id", primary_key=True), Column("first_name"), Column("country"))),
    Table("orders", (Column("order_id", primary_key=True), Column("customer_id"), Column("order_date")),
          (ForeignKey(("customer_id",), "customers"),)),
    Table("order_items", (Column("order_id"), Column("product_id"), Column("quantity"), Column("unit_price"))),
    Table("products", (Column("product_id", primary_key=True), Column("name"), Column("price"))),
))


@pytest.mark.parametrize("sql,fixed,changes", [
    # a column that exists in exactly one other table of the query gets that table's alias
    ("SELECT sum(o.quantity) FROM orders AS o JOIN order_items AS oi ON o.order_id = oi.order_id",
     "SELECT SUM(oi.quantity) FROM orders AS o JOIN order_items AS oi ON o.order_id = oi.order_id",
     ("o.quantity -> oi.quantity",)),
    # near misses: case, underscores, plural, small edits
    ("SELECT firstname FROM customers", "SELECT first_name FROM customers", ("firstname -> first_name",)),
    ("SELECT count(*) FROM customer", "SELECT COUNT(*) FROM customers", ("customer -> customers",)),
    ("SELECT c.contry FROM customers c", "SELECT c.country FROM customers AS c", ("c.contry -> c.country",)),
    ("SELECT orderdate FROM orders", "SELECT order_date FROM orders", ("orderdate -> order_date",)),
    # a single-table query naming columns only another table has (all of them)
    ("SELECT count(order_id) FROM customers WHERE order_date > '2024'",
     "SELECT COUNT(order_id) FROM orders WHERE order_date > '2024'", ("customers -> orders",)),
    ("SELECT sum(o.quantity) FROM orders o", "SELECT SUM(o.quantity) FROM order_items AS o", ("orders -> order_items",)),
    # the table's own name where the query gave it an alias
    ("SELECT orders.order_date FROM orders AS o", "SELECT o.order_date FROM orders AS o",
     ("orders.order_date -> o.order_date",)),
])
def test_fix_identifiers_repairs_on_the_parse_tree(sql, fixed, changes):
    assert fix_identifiers(sql, SHOP) == (fixed, changes)


@pytest.mark.parametrize("sql", [
    "SELECT first_name FROM customers",  # nothing to fix
    "SELECT nme FROM products",  # too short to guess
    "SELECT x FROM customers",
    "SELECT total FROM orders",  # nothing close
    "SELECT order_id, name FROM orders",  # no single table has both
    # an outer column inside a correlated subquery is not unknown
    "SELECT first_name FROM customers WHERE EXISTS (SELECT 1 FROM orders WHERE orders.customer_id = customer_id)",
    "WITH t AS (SELECT 1 AS v) SELECT v FROM t",
    "not sql at all (",
])
def test_fix_identifiers_leaves_what_it_cannot_know(sql):
    assert fix_identifiers(sql, SHOP) is None


def test_closest_refuses_ties():
    assert closest("name1", ["name2", "name3"]) is None
    assert closest("Price", ["price", "prices"]) == "price"


def test_repair_messages_carry_the_error_and_the_columns_used():
    messages = [{"role": "user", "content": "schema and question"}]
    out = repair_messages(messages, "SELECT total FROM orders", "no such column: total", SHOP)
    assert out[:1] == messages and out[1] == {"role": "assistant", "content": "SELECT total FROM orders"}
    assert "no such column: total" in out[2]["content"]
    assert "orders(order_id, customer_id, order_date)" in out[2]["content"]


def test_empty_results_rank_after_any_value():
    trials = [trial(0, []), trial(1, []), trial(2, [(None,)]), trial(3, [(5,)])]
    for t, empty in zip(trials, (True, True, True, False)):
        t.empty = empty
    trace = Trace("vote", trials)
    assert choose.vote(trace, trials).index == 3  # 1 vote with a value beats 2 empty votes
    assert choose.is_empty(Result(("a",), [(None,), (None,)])) and not choose.is_empty(Result(("a",), [(0,)]))
    only_empty = trials[:2]
    assert choose.vote(Trace("vote", only_empty), only_empty).index == 0


def test_error_hints_say_where_a_name_really_is():
    from slimsql.infer.repair import error_hint

    hint = error_hint("the database refused the query: no such column: o.quantity", SHOP)
    assert hint[0] == "The column quantity is in table order_items."
    hint = error_hint("no such column: name", SHOP)
    assert hint[0] == "The column name is in table products."
    assert error_hint("no such column: firstnam", SHOP) == [
        "No table has a column firstnam. Similar columns: customers.first_name."]
    assert error_hint("no such table: customer", SHOP) == ["There is no table customer. Similar tables: customers."]
    assert "Join keys: orders.customer_id = customers.customer_id." in error_hint("no such column: order_date", SHOP)
    assert error_hint("syntax error", SHOP) == []
