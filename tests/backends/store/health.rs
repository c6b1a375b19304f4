//! The `StoreHealth` contract: a store answers, and knows whether it is empty.

use order_service::store::Stores;

use super::user;

async fn ping_and_emptiness(stores: Stores) {
    stores.health.ping().await.expect("ping");
    assert!(
        stores.health.is_empty().await.unwrap(),
        "a fresh store has no user"
    );
    stores
        .accounts
        .insert_user(&user("ann@example.com"))
        .await
        .unwrap();
    assert!(!stores.health.is_empty().await.unwrap());
}

contract_tests! {
    ping_and_emptiness,
}
