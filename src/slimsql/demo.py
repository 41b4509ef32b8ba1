"""The demo database: a small shop, built deterministically by this code.

Same seed, same rows, same bytes. It has foreign keys, dates, NULLs (online
orders have no employee, unshipped orders no ship date, the CEO no manager,
some customers no phone), a self-referencing key, and a few thousand rows,
so demo questions have answers worth reading.
"""

from __future__ import annotations

import os
import random
import sqlite3
import tempfile
from datetime import date, timedelta
from pathlib import Path

from .errors import InputError

#: Questions the README and ``make demo`` ask of the demo database.
DEMO_QUESTIONS = (
    "How many products are there?",
    "Which 5 customers spent the most in 2024?",
    "How many orders were cancelled?",
    "What is the total revenue per product category?",
    "Which employees have no manager?",
)

DDL = """
CREATE TABLE categories (
  category_id INTEGER PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  parent_id INTEGER REFERENCES categories(category_id)
);
CREATE TABLE suppliers (
  supplier_id INTEGER PRIMARY KEY,
  name TEXT NOT NULL,
  country TEXT NOT NULL
);
CREATE TABLE products (
  product_id INTEGER PRIMARY KEY,
  name TEXT NOT NULL,
  category_id INTEGER NOT NULL REFERENCES categories(category_id),
  supplier_id INTEGER REFERENCES suppliers(supplier_id),
  price REAL NOT NULL,
  cost REAL NOT NULL,
  stock INTEGER NOT NULL,
  discontinued INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE customers (
  customer_id INTEGER PRIMARY KEY,
  first_name TEXT NOT NULL,
  last_name TEXT NOT NULL,
  email TEXT NOT NULL UNIQUE,
  phone TEXT,
  city TEXT NOT NULL,
  country TEXT NOT NULL,
  signup_date TEXT NOT NULL,
  loyalty_tier TEXT
);
CREATE TABLE employees (
  employee_id INTEGER PRIMARY KEY,
  first_name TEXT NOT NULL,
  last_name TEXT NOT NULL,
  title TEXT NOT NULL,
  hire_date TEXT NOT NULL,
  salary REAL NOT NULL,
  manager_id INTEGER REFERENCES employees(employee_id)
);
CREATE TABLE orders (
  order_id INTEGER PRIMARY KEY,
  customer_id INTEGER NOT NULL REFERENCES customers(customer_id),
  employee_id INTEGER REFERENCES employees(employee_id),
  order_date TEXT NOT NULL,
  status TEXT NOT NULL CHECK (status IN ('pending', 'shipped', 'delivered', 'cancelled', 'returned')),
  channel TEXT NOT NULL CHECK (channel IN ('online', 'store')),
  shipped_date TEXT
);
CREATE TABLE order_items (
  order_id INTEGER NOT NULL REFERENCES orders(order_id),
  product_id INTEGER NOT NULL REFERENCES products(product_id),
  quantity INTEGER NOT NULL,
  unit_price REAL NOT NULL,
  discount REAL NOT NULL DEFAULT 0,
  PRIMARY KEY (order_id, product_id)
);
CREATE TABLE payments (
  payment_id INTEGER PRIMARY KEY,
  order_id INTEGER NOT NULL REFERENCES orders(order_id),
  method TEXT NOT NULL,
  amount REAL NOT NULL,
  paid_at TEXT NOT NULL
);
"""

_FIRST = ["Ava", "Liam", "Mia", "Noah", "Emma", "Lucas", "Sofia", "Mateo", "Zoe", "Hugo", "Lena", "Omar",
          "Chloe", "Ivan", "Nora", "Yuki", "Ines", "Arjun", "Freya", "Diego", "Amara", "Felix", "Leila", "Jonas"]
_LAST = ["Smith", "Garcia", "Muller", "Rossi", "Kim", "Dubois", "Silva", "Novak", "Tanaka", "Okafor",
         "Jensen", "Cohen", "Patel", "Larsen", "Moreau", "Costa", "Weber", "Khan", "Nguyen", "Brown"]
_CITIES = [("Lisbon", "Portugal"), ("Porto", "Portugal"), ("Madrid", "Spain"), ("Berlin", "Germany"),
           ("Munich", "Germany"), ("Paris", "France"), ("Lyon", "France"), ("Milan", "Italy"),
           ("Amsterdam", "Netherlands"), ("Vienna", "Austria"), ("Dublin", "Ireland"), ("London", "UK")]
_CATEGORIES = [("Electronics", None), ("Laptops", 1), ("Phones", 1), ("Audio", 1), ("Home", None),
               ("Kitchen", 5), ("Furniture", 5), ("Books", None), ("Sports", None), ("Toys", None)]
_PRODUCTS = {
    2: ["Aero 13 Laptop", "Aero 15 Laptop", "Forge Gaming Laptop", "Slate Chromebook"],
    3: ["Nimbus Phone", "Nimbus Phone Pro", "Pebble Mini Phone", "Orbit Phone Case", "FastCharge Cable"],
    4: ["Echo Earbuds", "Studio Headphones", "Boom Speaker", "Vinyl Turntable", "Soundbar 2.1"],
    6: ["Chef Knife", "Cast Iron Pan", "Espresso Maker", "Kettle", "Blender Pro", "Toaster", "Rice Cooker"],
    7: ["Oak Desk", "Ergo Chair", "Bookshelf", "Floor Lamp", "Sofa Bed", "Coffee Table"],
    8: ["SQL for Humans", "The Data Cookbook", "Night Train (novel)", "Atlas of Rivers", "Kids Science Book",
        "Learning Python", "Mystery at Dawn", "Garden Handbook"],
    9: ["Yoga Mat", "Running Shoes", "Tennis Racket", "Bike Helmet", "Dumbbell Set", "Water Bottle"],
    10: ["Puzzle 1000", "Wooden Train", "Robot Kit", "Board Game Night", "Plush Bear"],
}
_PRICE = {2: (600, 1800), 3: (15, 1100), 4: (40, 450), 6: (20, 250), 7: (40, 700), 8: (9, 45), 9: (10, 160),
          10: (12, 90)}
_SUPPLIERS = [("Northwind Traders", "Germany"), ("Iberia Supply", "Spain"), ("Lumen Electronics", "Taiwan"),
              ("Casa Goods", "Portugal"), ("Paper & Ink", "UK"), ("Alpine Sports", "Austria"),
              ("Toyland Imports", "China"), ("Nordic Home", "Sweden")]
_TITLES = ["Sales Associate", "Sales Associate", "Sales Associate", "Senior Sales Associate", "Store Manager"]
_STATUS = ["delivered"] * 70 + ["shipped"] * 8 + ["pending"] * 6 + ["cancelled"] * 10 + ["returned"] * 6
_START, _END = date(2023, 1, 1), date(2025, 6, 30)


def _day(rng: random.Random, start: date, end: date) -> date:
    return start + timedelta(days=rng.randrange((end - start).days + 1))


def _rows(seed: int) -> dict[str, list[tuple]]:
    rng = random.Random(seed)
    rows: dict[str, list[tuple]] = {name: [] for name in
                                     ("categories", "suppliers", "products", "customers", "employees",
                                      "orders", "order_items", "payments")}
    rows["categories"] = [(i, name, parent) for i, (name, parent) in enumerate(_CATEGORIES, 1)]
    rows["suppliers"] = [(i, name, country) for i, (name, country) in enumerate(_SUPPLIERS, 1)]
    pid = 0
    for category, names in _PRODUCTS.items():
        low, high = _PRICE[category]
        for name in names:
            pid += 1
            price = round(rng.uniform(low, high), 2)
            rows["products"].append((pid, name, category, rng.choice([None, *range(1, len(_SUPPLIERS) + 1)]),
                                     price, round(price * rng.uniform(0.45, 0.8), 2), rng.randrange(0, 400),
                                     1 if rng.random() < 0.08 else 0))
    emails = set()
    for cid in range(1, 401):
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        email = f"{first}.{last}{cid}@example.com".lower()
        emails.add(email)
        city, country = rng.choice(_CITIES)
        phone = None if rng.random() < 0.25 else f"+{rng.randrange(30, 49)} {rng.randrange(100, 999)} {rng.randrange(1000, 9999)}"
        tier = rng.choice([None, None, "bronze", "silver", "gold"])
        rows["customers"].append((cid, first, last, email, phone, city, country,
                                  _day(rng, date(2021, 1, 1), date(2025, 3, 31)).isoformat(), tier))
    rows["employees"].append((1, "Grace", "Hopper", "CEO", "2015-03-01", 185000.0, None))
    for eid in range(2, 26):
        title = "Regional Manager" if eid <= 4 else rng.choice(_TITLES)
        manager = 1 if eid <= 4 else rng.randrange(2, 5)
        salary = {"Regional Manager": 98000, "Store Manager": 72000, "Senior Sales Associate": 51000}.get(title, 39000)
        rows["employees"].append((eid, rng.choice(_FIRST), rng.choice(_LAST), title,
                                  _day(rng, date(2016, 1, 1), date(2024, 12, 31)).isoformat(),
                                  float(salary + rng.randrange(0, 9000)), manager))
    prices = {p[0]: p[4] for p in rows["products"]}
    pay_id = 0
    for oid in range(1, 2501):
        customer = rng.randrange(1, 401) if rng.random() < 0.6 else rng.randrange(1, 61)  # some loyal buyers
        ordered = _day(rng, _START, _END)
        status = rng.choice(_STATUS)
        channel = "online" if rng.random() < 0.55 else "store"
        employee = rng.randrange(5, 26) if channel == "store" else None
        shipped = (ordered + timedelta(days=rng.randrange(1, 6))).isoformat() \
            if status in ("shipped", "delivered", "returned") else None
        rows["orders"].append((oid, customer, employee, ordered.isoformat(), status, channel, shipped))
        total = 0.0
        for product in rng.sample(sorted(prices), rng.choice([1, 1, 2, 2, 3, 4])):
            quantity = rng.choice([1, 1, 1, 2, 3])
            discount = rng.choice([0, 0, 0, 0.05, 0.1, 0.2])
            rows["order_items"].append((oid, product, quantity, prices[product], discount))
            total += quantity * prices[product] * (1 - discount)
        if status != "cancelled":
            pay_id += 1
            rows["payments"].append((pay_id, oid, rng.choice(["card", "card", "paypal", "cash", "voucher"]),
                                     round(total, 2), ordered.isoformat() + f" {rng.randrange(8, 21):02d}:{rng.randrange(60):02d}:00"))
    return rows


def build_demo(out: str | Path, *, seed: int = 2024, force: bool = False) -> Path:
    """Write the demo database to ``out`` (atomically) and return its path."""
    path = Path(out).expanduser()
    if path.exists() and not force:
        raise InputError(f"{path} already exists; pass --force to replace it")
    if not path.parent.exists():
        raise InputError(f"folder does not exist: {path.parent}")
    fd, tmp = tempfile.mkstemp(prefix=".slimsql-demo-", suffix=".sqlite", dir=path.parent)
    os.close(fd)
    try:
        conn = sqlite3.connect(tmp)
        with conn:
            conn.executescript("PRAGMA foreign_keys = ON;" + DDL)
            for table, values in _rows(seed).items():
                marks = ", ".join("?" * len(values[0]))
                conn.executemany(f"INSERT INTO {table} VALUES ({marks})", values)
        conn.close()
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


#: What the demo ships in its knowledge file (``shop.sqlite.knowledge.yaml``, written by
#: ``slimsql demo``): the shop's conventions that its schema does not show. "What is the total
#: revenue per product category?" is answered right with it and wrong without (``make demo``).
DEMO_NOTES = (
    "revenue and spending are sum(order_items.quantity * order_items.unit_price) over orders whose status "
    "is not 'cancelled'; products.price is today's list price, not what was paid",
    "name customers, employees, products, categories and suppliers by their names, not by their ids",
)
DEMO_EXAMPLES = (
    ("Which 3 customers spent the most?",
     "SELECT c.first_name, c.last_name, round(sum(oi.quantity * oi.unit_price), 2) AS spent\n"
     "FROM customers AS c\nJOIN orders AS o ON o.customer_id = c.customer_id\n"
     "JOIN order_items AS oi ON oi.order_id = o.order_id\nWHERE o.status <> 'cancelled'\n"
     "GROUP BY c.customer_id\nORDER BY spent DESC\nLIMIT 3"),
    ("What is the revenue per supplier?",
     "SELECT s.name, round(sum(oi.quantity * oi.unit_price), 2) AS revenue\n"
     "FROM suppliers AS s\nJOIN products AS p ON p.supplier_id = s.supplier_id\n"
     "JOIN order_items AS oi ON oi.product_id = p.product_id\nJOIN orders AS o ON o.order_id = oi.order_id\n"
     "WHERE o.status <> 'cancelled'\nGROUP BY s.supplier_id\nORDER BY revenue DESC"),
    ("How many orders were placed in 2023?",
     "SELECT count(*) FROM orders WHERE strftime('%Y', order_date) = '2023'"),
)
DEMO_DESCRIPTIONS = (
    ("customers.loyalty_tier", "bronze, silver or gold", ("membership level",)),
    ("orders.status", "pending, shipped, delivered, returned or cancelled", ()),
)
#: The demo question its knowledge file answers (``make demo`` asks it without the file too).
TAUGHT_QUESTION = "What is the total revenue per product category?"


def demo_knowledge():
    """The demo's knowledge (:mod:`slimsql.knowledge`), as ``slimsql demo`` writes it."""
    from . import knowledge as kn

    return kn.Knowledge(
        notes=tuple(kn.Note(kn.entry_id("n", text), text) for text in DEMO_NOTES),
        descriptions=tuple(kn.Description(target, text, synonyms) for target, text, synonyms in DEMO_DESCRIPTIONS),
        examples=tuple(kn.Example(kn.entry_id("e", q, sql), q, sql) for q, sql in DEMO_EXAMPLES))


def write_demo_knowledge(database: str | Path, *, force: bool = False) -> Path | None:
    """Write the demo's knowledge file beside ``database``; None if one is there (and not ``force``)."""
    from . import knowledge as kn

    path = kn.default_path(database)
    if path.exists() and not force:
        return None
    kn.update(path, lambda _: demo_knowledge())
    return path
