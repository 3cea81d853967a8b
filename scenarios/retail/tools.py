"""Retail tools over a small SQLite store (seeded from seed.json), shared by every agent process."""

from __future__ import annotations

import json
import os
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from switchboard.agents import ToolContext, ToolError, ToolRegistry

registry = ToolRegistry()
RETURN_WINDOW_DAYS = 30
_SEED = Path(__file__).with_name("seed.json")


@contextmanager
def _db() -> Iterator[sqlite3.Connection]:
    folder = Path(os.environ.get("SWITCHBOARD_DATA_DIR", "var/data"))
    folder.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(folder / "retail.sqlite", timeout=10)
    conn.row_factory = sqlite3.Row
    try:
        _seed(conn)
        with conn:  # one transaction per tool call
            yield conn
    finally:
        conn.close()


def _seed(conn: sqlite3.Connection) -> None:
    conn.executescript(
        """
        CREATE TABLE IF NOT EXISTS customers (id TEXT PRIMARY KEY, name TEXT, email TEXT UNIQUE, pin TEXT,
                                              balance REAL, last_invoice TEXT);
        CREATE TABLE IF NOT EXISTS orders (id TEXT PRIMARY KEY, customer_id TEXT, item TEXT, total REAL,
                                           days_since_delivery INTEGER, status TEXT);
        CREATE TABLE IF NOT EXISTS returns (id TEXT PRIMARY KEY, order_id TEXT UNIQUE, refund REAL);
        """
    )
    if conn.execute("SELECT COUNT(*) FROM customers").fetchone()[0]:
        return
    seed = json.loads(_SEED.read_text())
    with conn:  # INSERT OR IGNORE: two processes seeding at once is harmless
        conn.executemany("INSERT OR IGNORE INTO customers VALUES (:id, :name, :email, :pin, :balance, :last_invoice)",
                         seed["customers"])  # fmt: skip
        conn.executemany(
            "INSERT OR IGNORE INTO orders VALUES (:id, :customer_id, :item, :total, :days_since_delivery, :status)",
            seed["orders"],
        )


def _own_order(conn: sqlite3.Connection, order_id: str, ctx: ToolContext) -> sqlite3.Row:
    row = conn.execute("SELECT * FROM orders WHERE id = ?", (order_id.upper(),)).fetchone()
    if row is None or row["customer_id"] != ctx.caller.customer_id:
        raise ToolError(f"no order {order_id} on this customer's account")
    return row


@registry.tool(identity=True)
def verify_customer(email: str, pin: str, ctx: ToolContext) -> dict[str, Any]:
    """Verify the caller with the email on their account and their 4-digit PIN."""
    with _db() as conn:
        row = conn.execute("SELECT id, name, pin FROM customers WHERE lower(email) = lower(?)", (email,)).fetchone()
    if row is None or row["pin"] != pin:
        return {"verified": False}
    ctx.verify_caller(row["id"])
    return {"verified": True, "name": row["name"]}


@registry.tool(requires_auth=True)
def lookup_order(order_id: str, ctx: ToolContext) -> dict[str, Any]:
    """Look up one of the verified caller's orders and whether it can still be returned."""
    with _db() as conn:
        row = _own_order(conn, order_id, ctx)
        returned = conn.execute("SELECT id FROM returns WHERE order_id = ?", (row["id"],)).fetchone()
    eligible = returned is None and row["days_since_delivery"] <= RETURN_WINDOW_DAYS
    reason = "already returned" if returned else f"delivered more than {RETURN_WINDOW_DAYS} days ago"
    return {"order_id": row["id"], "item": row["item"], "total": row["total"], "eligible": eligible,
            "reason": "" if eligible else reason}  # fmt: skip


@registry.tool(requires_auth=True, side_effect=True)
def create_return(order_id: str, ctx: ToolContext) -> dict[str, Any]:
    """Open a return for an eligible order and refund its total to the original payment method."""
    with _db() as conn:
        row = _own_order(conn, order_id, ctx)
        existing = conn.execute("SELECT id, refund FROM returns WHERE order_id = ?", (row["id"],)).fetchone()
        if existing is not None:  # idempotent: asking twice does not refund twice
            return {"return_id": existing["id"], "order_id": row["id"], "refund": existing["refund"]}
        if row["days_since_delivery"] > RETURN_WINDOW_DAYS:
            raise ToolError(f"order {row['id']} is outside the {RETURN_WINDOW_DAYS}-day return window")
        return_id = f"R-{uuid.uuid4().hex[:6].upper()}"
        conn.execute("INSERT INTO returns VALUES (?, ?, ?)", (return_id, row["id"], row["total"]))
    return {"return_id": return_id, "order_id": row["id"], "refund": row["total"]}


@registry.tool(requires_auth=True)
def get_balance(ctx: ToolContext) -> dict[str, Any]:
    """The verified caller's account balance and latest invoice."""
    with _db() as conn:
        row = conn.execute("SELECT balance, last_invoice FROM customers WHERE id = ?",
                           (ctx.caller.customer_id,)).fetchone()  # fmt: skip
    if row is None:
        raise ToolError("no account for this caller")
    return {"balance": row["balance"], "last_invoice": row["last_invoice"]}
