"""A throwaway PostgreSQL cluster with a small shop database, for every PostgreSQL test.

Import the fixtures into a test module (``from .pg_support import pg_cluster, pg_shop``).
Without a PostgreSQL server the tests skip with the reason, but under
``SLIMSQL_REQUIRE_POSTGRES=1`` (as in CI) they fail instead.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest

from slimsql.db.pgcluster import Cluster, unavailable

SHOP = "shop"
READER = "reader"

SHOP_SQL = """
CREATE TABLE customers (
    id serial PRIMARY KEY,
    name text NOT NULL,
    city text
);
COMMENT ON TABLE customers IS 'People who placed at least one order';
COMMENT ON COLUMN customers.city IS 'City of the billing address';
CREATE TABLE orders (
    id integer PRIMARY KEY,
    customer_id integer NOT NULL REFERENCES customers (id),
    status text NOT NULL DEFAULT 'new',
    total numeric(10, 2),
    placed date
);
CREATE TABLE order_lines (
    order_id integer REFERENCES orders (id),
    line_no integer,
    product varchar(40) NOT NULL,
    qty integer NOT NULL,
    PRIMARY KEY (order_id, line_no)
);
CREATE TABLE returns (
    id integer PRIMARY KEY,
    order_id integer,
    line_no integer,
    reason text,
    FOREIGN KEY (order_id, line_no) REFERENCES order_lines (order_id, line_no)
);
CREATE VIEW big_orders AS SELECT id, customer_id, total FROM orders WHERE total > 100;
CREATE MATERIALIZED VIEW city_totals AS
    SELECT c.city, sum(o.total) AS total FROM customers c JOIN orders o ON o.customer_id = c.id GROUP BY c.city;
CREATE SCHEMA sales;
CREATE TABLE sales.regions (code text PRIMARY KEY, label text);
INSERT INTO customers (name, city) VALUES ('Ada', 'Paris'), ('Bo', 'Oslo'), ('Cy', 'Lima');
INSERT INTO orders VALUES (1, 1, 'shipped', 120.50, '2024-01-05'), (2, 1, 'new', 15.00, '2024-02-01'),
                          (3, 2, 'cancelled', 300.00, '2024-02-11'), (4, 3, 'new', NULL, NULL);
INSERT INTO order_lines VALUES (1, 1, 'pen', 2), (1, 2, 'ink', 1), (3, 1, 'desk', 1), (4, 1, 'lamp', 3);
INSERT INTO returns VALUES (1, 1, 2, 'leaked');
INSERT INTO sales.regions VALUES ('eu', 'Europe'), ('sa', 'South America');
REFRESH MATERIALIZED VIEW city_totals;
"""

#: The shop's tables (schema-qualified), for checksums.
TABLES = ("public.customers", "public.orders", "public.order_lines", "public.returns", "sales.regions",
          "public.city_totals")


@dataclass
class Shop:
    cluster: Cluster
    dbname: str
    reader: str

    def url(self, user: str | None = None) -> str:
        return self.cluster.url(self.dbname, user=user)


def require_cluster() -> None:
    """Skip (or, under SLIMSQL_REQUIRE_POSTGRES=1 as in CI, fail) where no cluster can start."""
    reason = unavailable()
    if reason:
        if os.environ.get("SLIMSQL_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PostgreSQL is required here (SLIMSQL_REQUIRE_POSTGRES=1): {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="session")
def pg_cluster():
    """A running throwaway cluster, stopped (and removed) at the end of the session."""
    require_cluster()
    cluster = Cluster().start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def pg_shop(pg_cluster) -> Shop:
    """The shop database and the least-privilege ``reader`` role (its tables must not change)."""
    pg_cluster.create_database(SHOP)
    pg_cluster.sql(SHOP_SQL, dbname=SHOP)
    pg_cluster.create_reader(READER, SHOP)
    return Shop(cluster=pg_cluster, dbname=SHOP, reader=READER)
