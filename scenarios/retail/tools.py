"""Retail tools over the platform's shared store (``ctx.store``), seeded from seed.json at agent start.

Collections: ``customers`` (by customer id), ``customer_emails`` (an index: email digest -> customer
id), ``orders`` (by order id) and ``returns`` (by order id, so an order has at most one return: the
create is atomic across replicas). Every replica of every agent sees the same documents.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from switchboard.agents import Owns, ToolContext, ToolError, ToolRegistry
from switchboard.state import InvalidId, ToolStore, token_for

registry = ToolRegistry()
RETURN_WINDOW_DAYS = 30
_SEED = Path(__file__).with_name("seed.json")


class Customer(BaseModel):
    id: str
    name: str
    email: str
    pin: str
    balance: float
    last_invoice: str


class EmailIndex(BaseModel):
    customer_id: str


class Order(BaseModel):
    id: str
    customer_id: str
    item: str
    total: float
    days_since_delivery: int
    status: str


class Return(BaseModel):
    return_id: str
    order_id: str
    refund: float
    idempotency_key: str = ""
    """The platform's key of the tool call that opened it."""


class Seed(BaseModel):
    customers: list[Customer]
    orders: list[Order]


@registry.seed
async def seed(store: ToolStore) -> None:
    """Create the example customers and orders that are absent (never overwrites live data)."""
    data = Seed.model_validate_json(_SEED.read_text())
    await store.collection("customers", Customer).seed({c.id: c for c in data.customers})
    await store.collection("customer_emails", EmailIndex).seed(
        {token_for(c.email): EmailIndex(customer_id=c.id) for c in data.customers}
    )
    await store.collection("orders", Order).seed({o.id: o for o in data.orders})


async def _own_order(order_id: str, ctx: ToolContext) -> Order:
    try:
        order = await ctx.store.collection("orders", Order).get(order_id.upper())
    except InvalidId:
        order = None
    if order is None or order.customer_id != ctx.caller.customer_id:
        raise ToolError(f"no order {order_id} on this customer's account")
    return order


@registry.tool(identity=True)
async def verify_customer(email: str, pin: str, ctx: ToolContext) -> dict[str, Any]:
    """Verify the caller with the email on their account and their 4-digit PIN."""
    index = await ctx.store.collection("customer_emails", EmailIndex).get(token_for(email))
    customer = await ctx.store.collection("customers", Customer).get(index.customer_id) if index else None
    if customer is None or customer.pin != pin:
        return {"verified": False}
    ctx.verify_caller(customer.id)
    return {"verified": True, "name": customer.name}


OWN_ORDER = Owns("order_id", "orders", upper=True)
"""The platform checks, before either order tool runs, that the order is the verified caller's."""


@registry.tool(owns=OWN_ORDER)
async def lookup_order(order_id: str, ctx: ToolContext) -> dict[str, Any]:
    """Look up one of the verified caller's orders and whether it can still be returned."""
    order = await _own_order(order_id, ctx)
    returned = await ctx.store.collection("returns", Return).get(order.id)
    eligible = returned is None and order.days_since_delivery <= RETURN_WINDOW_DAYS
    reason = "already returned" if returned else f"delivered more than {RETURN_WINDOW_DAYS} days ago"
    return {"order_id": order.id, "item": order.item, "total": order.total, "eligible": eligible,
            "reason": "" if eligible else reason}  # fmt: skip


@registry.tool(owns=OWN_ORDER, side_effect=True)
async def create_return(order_id: str, ctx: ToolContext) -> dict[str, Any]:
    """Open a return for an eligible order and refund its total to the original payment method."""
    order = await _own_order(order_id, ctx)
    returns = ctx.store.collection("returns", Return)
    existing = await returns.get(order.id)
    if existing is None and order.days_since_delivery > RETURN_WINDOW_DAYS:
        raise ToolError(f"order {order.id} is outside the {RETURN_WINDOW_DAYS}-day return window")
    # one return per order, whichever replica gets there first: asking twice does not refund twice
    fresh = Return(return_id=f"R-{uuid.uuid4().hex[:6].upper()}", order_id=order.id, refund=order.total,
                   idempotency_key=ctx.idempotency_key)  # fmt: skip
    ret = existing or (await returns.get_or_create(order.id, fresh))[0].value
    return {"return_id": ret.return_id, "order_id": ret.order_id, "refund": ret.refund}


@registry.tool(requires_auth=True)
async def get_balance(ctx: ToolContext) -> dict[str, Any]:
    """The verified caller's account balance and latest invoice."""
    customer_id = ctx.caller.customer_id
    customer = await ctx.store.collection("customers", Customer).get(customer_id) if customer_id else None
    if customer is None:
        raise ToolError("no account for this caller")
    return {"balance": customer.balance, "last_invoice": customer.last_invoice}
