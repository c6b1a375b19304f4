//! Demo data: an admin, a user, a small catalogue with stock and a few past orders. Every
//! record has a fixed id (or a unique email), so seeding twice changes nothing.

use chrono::Duration;

use crate::domain::{
    Cents, Email, Id, NewProduct, Order, OrderItem, OrderStatus, Quantity, Role, ShippingAddress,
    User,
};
use crate::error::BackendError;
use crate::password::hash_password;
use crate::store::Stores;

pub const ADMIN_EMAIL: &str = "admin@example.com";
pub const ADMIN_PASSWORD: &str = "admin123";
pub const USER_EMAIL: &str = "user@example.com";
pub const USER_PASSWORD: &str = "user123";

const CATALOGUE: &[(u32, &str, &str, i64, i64)] = &[
    (
        1,
        "Mechanical keyboard",
        "Tenkeyless, hot-swappable switches, PBT keycaps.",
        8999,
        50,
    ),
    (
        2,
        "Wireless mouse",
        "Ergonomic, 70 days on one charge.",
        3999,
        120,
    ),
    (
        3,
        "27-inch monitor",
        "QHD IPS panel, 144 Hz, height-adjustable stand.",
        29999,
        20,
    ),
    (
        4,
        "USB-C hub",
        "7 ports: HDMI, 3× USB-A, SD, microSD, 100 W passthrough.",
        4599,
        80,
    ),
    (
        5,
        "Noise-cancelling headphones",
        "Over-ear, 30 hours of battery.",
        19999,
        35,
    ),
    (6, "Laptop stand", "Aluminium, folds flat.", 2999, 60),
    (
        7,
        "Webcam",
        "1080p, privacy shutter, dual microphones.",
        5999,
        40,
    ),
    (8, "Desk mat", "90 × 40 cm, stitched edges.", 1999, 200),
];

#[derive(Debug, Default)]
pub struct SeedReport {
    pub users: u32,
    pub products: u32,
    pub orders: u32,
}

impl SeedReport {
    pub fn changed_anything(&self) -> bool {
        self.users + self.products + self.orders > 0
    }
}

pub async fn seed(stores: &Stores) -> Result<SeedReport, BackendError> {
    let mut report = SeedReport::default();
    let now = crate::domain::now();
    let admin_id = Id::fixed(1);
    let user_id = Id::fixed(2);
    for (id, email, password, name, role) in [
        (admin_id, ADMIN_EMAIL, ADMIN_PASSWORD, "Admin", Role::Admin),
        (user_id, USER_EMAIL, USER_PASSWORD, "Demo User", Role::User),
    ] {
        let email = Email::parse(email).expect("seed emails are valid");
        if stores.accounts.find_user_by_email(&email).await?.is_some() {
            continue;
        }
        let password = password.to_string();
        let password_hash = tokio::task::spawn_blocking(move || hash_password(&password))
            .await
            .map_err(|e| BackendError::other("seed", e))?
            .map_err(|e| BackendError::other("seed", e))?;
        let user = User {
            id,
            email,
            name: name.into(),
            role,
            password_hash,
            created_at: now,
        };
        match stores.accounts.insert_user(&user).await {
            Ok(()) => report.users += 1,
            Err(BackendError::Duplicate) => {}
            Err(e) => return Err(e),
        }
    }

    let mut products = vec![];
    for &(n, name, description, price, stock) in CATALOGUE {
        let id = Id::fixed(100 + n);
        let product = match stores.catalogue.find_product(id).await? {
            Some(p) => p,
            None => {
                report.products += 1;
                let new = NewProduct {
                    name: name.into(),
                    description: description.into(),
                    price: Cents::from_stored(price),
                    stock,
                };
                stores.catalogue.insert_product(&new, id, now).await?
            }
        };
        products.push(product);
    }

    // Past orders of the demo user, already finished, so the order list is not empty.
    let address = ShippingAddress {
        street: "1 Demo Street".into(),
        city: "Springfield".into(),
        state: "IL".into(),
        zip_code: "62701".into(),
        country: "US".into(),
    };
    let samples = [
        (1, OrderStatus::Completed, &[(0usize, 1u32), (7, 2)][..], 3),
        (2, OrderStatus::Cancelled, &[(2, 1)][..], 2),
    ];
    for (n, status, lines, days_ago) in samples {
        let id = Id::fixed(200 + n);
        if stores.orders.find_order(id).await?.is_some() {
            continue;
        }
        let items = lines
            .iter()
            .map(|&(i, q)| {
                let p = &products[i];
                OrderItem::new(
                    p.id,
                    p.name.clone(),
                    p.price,
                    Quantity::parse(i64::from(q)).expect("valid seed quantity"),
                )
            })
            .collect();
        let at = now - Duration::days(days_ago);
        let mut order = Order::place(user_id, items, address.clone(), "credit_card".into(), at);
        order.id = id;
        order.status = status;
        match stores.orders.insert_order(&order).await {
            Ok(()) | Err(BackendError::Duplicate) => {}
            Err(e) => return Err(e),
        }
        // Historical orders: never queued, never emailed.
        stores.orders.mark_enqueued(id).await?;
        // Recorded as sent (kept for a year), so no late message and no sweeper emails them.
        stores
            .orders
            .mark_notification_sent(id, status, now, now + Duration::days(365))
            .await?;
        report.orders += 1;
    }
    Ok(report)
}
