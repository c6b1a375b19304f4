//! What the backends hold, read directly and not through the service: the orders and the
//! campaign's products in FerretDB (with the MongoDB driver), and the emails moto's SES
//! accepted (`GET /moto-api/data.json`, the only place moto shows them).

use std::collections::BTreeMap;

use bson::{doc, Bson, Document};
use futures_util::TryStreamExt;

use crate::harness::support::moto::Moto;

#[derive(Clone, Debug)]
pub struct StoredOrder {
    pub id: String,
    pub user: String,
    pub status: String,
    pub street: String,
    /// `(product id, quantity)` per line.
    pub items: Vec<(String, i64)>,
}

pub struct Snapshot {
    pub orders: Vec<StoredOrder>,
    /// Current stock of each of the campaign's products.
    pub stock: BTreeMap<String, i64>,
    /// Subjects of every email SES accepted.
    pub subjects: Vec<String>,
}

pub const TERMINAL: [&str; 3] = ["completed", "failed", "cancelled"];

/// Reads the store, and moto when given; a read that fails is retried by the caller's next poll.
pub async fn take(
    db: &mongodb::Database,
    moto: Option<&Moto>,
    products: &[String],
) -> Result<Snapshot, String> {
    let orders: Vec<Document> = db
        .collection::<Document>("orders")
        .find(doc! {})
        .await
        .map_err(|e| format!("find orders: {e}"))?
        .try_collect()
        .await
        .map_err(|e| format!("read orders: {e}"))?;
    let orders = orders
        .iter()
        .map(stored_order)
        .collect::<Result<Vec<_>, _>>()?;
    let ids: Vec<Bson> = products
        .iter()
        .map(|p| bson::oid::ObjectId::parse_str(p).map(Bson::ObjectId))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("product id: {e}"))?;
    let found: Vec<Document> = db
        .collection::<Document>("products")
        .find(doc! {"_id": {"$in": ids}})
        .await
        .map_err(|e| format!("find products: {e}"))?
        .try_collect()
        .await
        .map_err(|e| format!("read products: {e}"))?;
    let mut stock = BTreeMap::new();
    for p in &found {
        let id = p.get_object_id("_id").map_err(|e| e.to_string())?.to_hex();
        stock.insert(id, number(p.get("stock")).ok_or("product without stock")?);
    }
    let subjects = match moto {
        Some(moto) => moto
            .sent_emails()
            .await
            .into_iter()
            .map(|e| e.subject)
            .collect(),
        None => Vec::new(),
    };
    Ok(Snapshot {
        orders,
        stock,
        subjects,
    })
}

fn stored_order(d: &Document) -> Result<StoredOrder, String> {
    let bad = |what: &str| format!("order document without {what}: {d}");
    let items = d
        .get_array("items")
        .map_err(|_| bad("items"))?
        .iter()
        .map(|line| {
            let line = line.as_document().ok_or_else(|| bad("item documents"))?;
            let product = line
                .get_object_id("productId")
                .map_err(|_| bad("items.productId"))?;
            let quantity = number(line.get("quantity")).ok_or_else(|| bad("items.quantity"))?;
            Ok((product.to_hex(), quantity))
        })
        .collect::<Result<_, String>>()?;
    Ok(StoredOrder {
        id: d.get_object_id("_id").map_err(|_| bad("_id"))?.to_hex(),
        user: d
            .get_object_id("userId")
            .map_err(|_| bad("userId"))?
            .to_hex(),
        status: d.get_str("status").map_err(|_| bad("status"))?.to_string(),
        street: d
            .get_document("shippingAddress")
            .and_then(|a| a.get_str("street"))
            .map_err(|_| bad("shippingAddress.street"))?
            .to_string(),
        items,
    })
}

/// An integer however BSON stored it.
fn number(v: Option<&Bson>) -> Option<i64> {
    match v? {
        Bson::Int32(n) => Some(i64::from(*n)),
        Bson::Int64(n) => Some(*n),
        Bson::Double(f) if f.fract() == 0.0 => Some(*f as i64),
        _ => None,
    }
}
