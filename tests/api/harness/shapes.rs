//! The documented shapes of users, products and orders, and the request bodies the suites send.

use serde_json::{json, Value};

use super::response::{assert_id, assert_time, keys, object_keys};

pub fn assert_user(u: &Value) {
    assert_eq!(
        object_keys(u),
        keys(&["id", "email", "name", "role", "createdAt"]),
        "user fields: {u}"
    );
    assert_id(&u["id"], "user.id");
    assert_time(&u["createdAt"], "user.createdAt");
    assert!(u["email"].is_string() && u["name"].is_string(), "user: {u}");
    assert!(
        u["role"] == json!("user") || u["role"] == json!("admin"),
        "user.role: {u}"
    );
}

pub fn assert_product(p: &Value) {
    assert_eq!(
        object_keys(p),
        keys(&[
            "id",
            "name",
            "description",
            "price",
            "stock",
            "createdAt",
            "updatedAt"
        ]),
        "product fields: {p}"
    );
    assert_id(&p["id"], "product.id");
    assert!(p["name"].is_string(), "product.name: {p}");
    assert!(p["description"].is_string(), "product.description: {p}");
    assert!(
        p["price"].as_i64().is_some_and(|n| n >= 0),
        "product.price must be integer cents >= 0: {p}"
    );
    assert!(
        p["stock"].as_i64().is_some_and(|n| n >= 0),
        "product.stock must be an integer >= 0: {p}"
    );
    let c = assert_time(&p["createdAt"], "product.createdAt");
    let u = assert_time(&p["updatedAt"], "product.updatedAt");
    assert!(u >= c, "updatedAt before createdAt: {p}");
}

pub fn assert_order(o: &Value) {
    let mut want = keys(&[
        "id",
        "userId",
        "items",
        "shippingAddress",
        "paymentMethod",
        "status",
        "totalAmount",
        "createdAt",
        "updatedAt",
    ]);
    if o["status"] == json!("failed") {
        want.insert("failureReason".into());
    }
    assert_eq!(object_keys(o), want, "order fields: {o}");
    assert_id(&o["id"], "order.id");
    assert_id(&o["userId"], "order.userId");
    assert_time(&o["createdAt"], "order.createdAt");
    assert_time(&o["updatedAt"], "order.updatedAt");
    assert_eq!(
        object_keys(&o["shippingAddress"]),
        keys(&["street", "city", "state", "zipCode", "country"]),
        "order.shippingAddress: {o}"
    );
    let items = o["items"].as_array().expect("order.items");
    assert!(!items.is_empty(), "order without items: {o}");
    let mut total = 0;
    for it in items {
        assert_eq!(
            object_keys(it),
            keys(&[
                "productId",
                "productName",
                "unitPrice",
                "quantity",
                "lineTotal"
            ]),
            "order item fields: {it}"
        );
        assert_id(&it["productId"], "item.productId");
        let unit = it["unitPrice"].as_i64().expect("unitPrice integer");
        let qty = it["quantity"].as_i64().expect("quantity integer");
        assert_eq!(
            it["lineTotal"].as_i64(),
            Some(unit * qty),
            "lineTotal = unitPrice * quantity: {it}"
        );
        total += unit * qty;
    }
    assert_eq!(
        o["totalAmount"].as_i64(),
        Some(total),
        "totalAmount = sum of line totals: {o}"
    );
    assert!(
        ["pending", "processing", "completed", "failed", "cancelled"]
            .contains(&o["status"].as_str().unwrap_or("")),
        "order.status: {o}"
    );
}

pub fn default_address() -> Value {
    json!({"street": "1 Main St", "city": "Springfield", "state": "IL", "zipCode": "62701", "country": "US"})
}

pub fn order_body(lines: &[(&str, i64)]) -> Value {
    json!({
        "items": lines.iter().map(|(id, q)| json!({"productId": id, "quantity": q})).collect::<Vec<_>>(),
        "shippingAddress": default_address(),
        "paymentMethod": "credit_card",
    })
}

pub fn str_of(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("not a string: {v}"))
        .to_string()
}
