"""Schemathesis hooks for `tests/api/fuzz.rs`: only what the OpenAPI document can not say.

Lines of an order that name the same product are merged, and the merged quantity is bounded
like one line's (1 to 1000). JSON Schema can not state a bound on a sum across array items, so
a generated order may name one product in several lines whose quantities add up to more: valid
by the document, refused by the service (400), and reported as "valid data rejected". This hook
gives such a line another product id (still 24 hex digits), so the generated bodies stay inside
the rule; lines of one product that fit stay as they are, so merging is still exercised. It
never changes whether a body is valid by the document: an id stays a valid id.
"""

import re

import schemathesis

MAX_QUANTITY = 1000
ID = re.compile(r"[0-9a-fA-F]{24}\Z")


def _quantity(value):
    """The quantity the service reads, or None for one it refuses anyway."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not value.is_integer():
        return None
    return int(value)


@schemathesis.hook.apply_to(method="POST", path="/api/orders")
def map_body(context, body):
    if not isinstance(body, dict) or not isinstance(body.get("items"), list):
        return body
    items = [item for item in body["items"] if isinstance(item, dict)]
    taken = {item["productId"].lower() for item in items if isinstance(item.get("productId"), str)}
    totals = {}
    fresh = 0
    for item in items:
        product_id, quantity = item.get("productId"), _quantity(item.get("quantity"))
        if not isinstance(product_id, str) or not ID.match(product_id) or quantity is None:
            continue
        key = product_id.lower()
        if totals.get(key, 0) + quantity > MAX_QUANTITY and key in totals:
            while f"{fresh:024x}" in taken:
                fresh += 1
            key = f"{fresh:024x}"
            taken.add(key)
            item["productId"] = key
        totals[key] = totals.get(key, 0) + quantity
    return body
