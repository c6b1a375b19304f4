//! The `Catalogue` contract: products that page stably and patch field by field, and stock
//! reserved all lines or none, never oversold however many reserve at once.

use chrono::TimeDelta;
use order_service::domain::{Cents, Id, NewProduct, Product, ProductPatch};
use order_service::error::{BackendError, Shortage};
use order_service::store::{ReserveOutcome, Stores};

use super::{hold, line, now, page, product, product_at, stock};

async fn products_round_trip_and_page_stably(stores: Stores) {
    let start = now();
    let mut ids = vec![];
    for i in 0..5 {
        let at = start + TimeDelta::seconds(i);
        let p = product_at(&stores, &format!("p{i}"), i, at).await;
        assert_eq!(
            (p.name.as_str(), p.stock, p.created_at, p.updated_at),
            (format!("p{i}").as_str(), i, at, at)
        );
        assert_eq!(
            stores.catalogue.find_product(p.id).await.unwrap(),
            Some(p.clone())
        );
        ids.push(p.id);
    }
    // Created in the same instant: the id decides, so pages never overlap or skip.
    let same = start + TimeDelta::seconds(10);
    for i in 5..8 {
        ids.push(product_at(&stores, &format!("p{i}"), 1, same).await.id);
    }

    let (first, total) = stores.catalogue.list_products(page(1, 3)).await.unwrap();
    assert_eq!(total, 8);
    assert_eq!(first.iter().map(|p| p.id).collect::<Vec<_>>(), ids[0..3]);
    let (second, _) = stores.catalogue.list_products(page(2, 3)).await.unwrap();
    assert_eq!(second.iter().map(|p| p.id).collect::<Vec<_>>(), ids[3..6]);
    let (third, total) = stores.catalogue.list_products(page(3, 3)).await.unwrap();
    assert_eq!(third.iter().map(|p| p.id).collect::<Vec<_>>(), ids[6..8]);
    assert_eq!(total, 8);
    let (beyond, total) = stores.catalogue.list_products(page(4, 3)).await.unwrap();
    assert!(beyond.is_empty());
    assert_eq!(total, 8);
    assert_eq!(
        second[0],
        stores
            .catalogue
            .find_product(ids[3])
            .await
            .unwrap()
            .unwrap()
    );

    assert!(matches!(
        stores
            .catalogue
            .insert_product(
                &NewProduct {
                    name: "again".into(),
                    description: String::new(),
                    price: Cents::ZERO,
                    stock: 0,
                },
                ids[0],
                start,
            )
            .await,
        Err(BackendError::Duplicate)
    ));
}

async fn product_updates_patch_only_given_fields(stores: Stores) {
    let p = product(&stores, "lamp", 10).await;
    let later = p.updated_at + TimeDelta::seconds(1);
    let patch = ProductPatch {
        stock: Some(3),
        price: Some(Cents::price(999).unwrap()),
        ..ProductPatch::default()
    };
    let updated = stores
        .catalogue
        .update_product(p.id, &patch, later)
        .await
        .unwrap()
        .unwrap();
    let expected = Product {
        stock: 3,
        price: Cents::price(999).unwrap(),
        updated_at: later,
        ..p.clone()
    };
    assert_eq!(updated, expected);
    assert_eq!(
        stores.catalogue.find_product(p.id).await.unwrap(),
        Some(expected.clone())
    );

    let renamed = ProductPatch {
        name: Some("desk lamp".into()),
        description: Some("bright".into()),
        ..ProductPatch::default()
    };
    let even_later = later + TimeDelta::seconds(1);
    let updated = stores
        .catalogue
        .update_product(p.id, &renamed, even_later)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            updated.name.as_str(),
            updated.description.as_str(),
            updated.stock,
            updated.updated_at
        ),
        ("desk lamp", "bright", 3, even_later)
    );

    let unchanged = stores
        .catalogue
        .update_product(
            p.id,
            &ProductPatch::default(),
            even_later + TimeDelta::days(1),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        unchanged, updated,
        "an empty patch changes nothing, not even the date"
    );
    assert!(stores
        .catalogue
        .update_product(Id::new(), &patch, later)
        .await
        .unwrap()
        .is_none());
}

async fn reservations_take_every_line(stores: Stores) {
    let a = product(&stores, "a", 5).await;
    let b = product(&stores, "b", 3).await;
    let outcome = stores
        .catalogue
        .reserve_stock(&[line(a.id, 2), line(b.id, 3)], &hold())
        .await
        .unwrap();
    let ReserveOutcome::Reserved(reserved) = outcome else {
        panic!("expected a reservation, got {outcome:?}")
    };
    // Each line with its product as it was before the reservation took from it.
    assert_eq!(
        reserved,
        vec![(a.clone(), line(a.id, 2)), (b.clone(), line(b.id, 3))]
    );
    assert_eq!(
        (stock(&stores, a.id).await, stock(&stores, b.id).await),
        (3, 0)
    );

    // The same product on two lines is checked against the sum.
    let outcome = stores
        .catalogue
        .reserve_stock(&[line(a.id, 2), line(a.id, 2)], &hold())
        .await
        .unwrap();
    match outcome {
        ReserveOutcome::Insufficient(shortages) => assert_eq!(
            shortages,
            vec![Shortage {
                product_id: a.id,
                product_name: "a".into(),
                requested: 4,
                available: 3,
            }]
        ),
        other => panic!("expected a shortage, got {other:?}"),
    }
    assert_eq!(stock(&stores, a.id).await, 3);
    let outcome = stores
        .catalogue
        .reserve_stock(&[line(a.id, 1), line(a.id, 2)], &hold())
        .await
        .unwrap();
    assert!(
        matches!(outcome, ReserveOutcome::Reserved(ref r) if r.len() == 2),
        "{outcome:?}"
    );
    assert_eq!(stock(&stores, a.id).await, 0);
}

async fn unknown_products_are_all_named_and_nothing_is_taken(stores: Stores) {
    let a = product(&stores, "a", 5).await;
    let b = product(&stores, "b", 5).await;
    let (ghost1, ghost2) = (Id::new(), Id::new());
    let outcome = stores
        .catalogue
        .reserve_stock(
            &[
                line(a.id, 2),
                line(ghost1, 1),
                line(b.id, 1),
                line(ghost2, 3),
            ],
            &hold(),
        )
        .await
        .unwrap();
    match outcome {
        ReserveOutcome::UnknownProducts(ids) => assert_eq!(ids, vec![ghost1, ghost2]),
        other => panic!("expected unknown products, got {other:?}"),
    }
    assert_eq!(
        (stock(&stores, a.id).await, stock(&stores, b.id).await),
        (5, 5)
    );
}

async fn every_short_line_is_reported_and_nothing_is_taken(stores: Stores) {
    let a = product(&stores, "a", 5).await;
    let b = product(&stores, "b", 1).await;
    let c = product(&stores, "c", 0).await;
    let d = product(&stores, "d", 9).await;
    let outcome = stores
        .catalogue
        .reserve_stock(
            &[line(a.id, 3), line(b.id, 2), line(d.id, 9), line(c.id, 1)],
            &hold(),
        )
        .await
        .unwrap();
    match outcome {
        ReserveOutcome::Insufficient(shortages) => assert_eq!(
            shortages,
            vec![
                Shortage {
                    product_id: b.id,
                    product_name: "b".into(),
                    requested: 2,
                    available: 1,
                },
                Shortage {
                    product_id: c.id,
                    product_name: "c".into(),
                    requested: 1,
                    available: 0,
                },
            ]
        ),
        other => panic!("expected shortages, got {other:?}"),
    }
    for (p, expected) in [(&a, 5), (&b, 1), (&c, 0), (&d, 9)] {
        assert_eq!(
            stock(&stores, p.id).await,
            expected,
            "{} was touched",
            p.name
        );
    }
}

async fn concurrent_reservations_never_oversell(stores: Stores) {
    let p = product(&stores, "hot", 25).await;
    let tasks: Vec<_> = (0..40)
        .map(|_| {
            let stores = stores.clone();
            tokio::spawn(async move {
                stores
                    .catalogue
                    .reserve_stock(&[line(p.id, 1)], &hold())
                    .await
                    .unwrap()
            })
        })
        .collect();
    let (mut reserved, mut refused) = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            ReserveOutcome::Reserved(_) => reserved += 1,
            ReserveOutcome::Insufficient(s) => {
                assert_eq!((s.len(), s[0].available), (1, 0), "{s:?}");
                refused += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((reserved, refused), (25, 15));
    assert_eq!(stock(&stores, p.id).await, 0);
}

async fn concurrent_multi_line_reservations_stay_consistent(stores: Stores) {
    // Opposite line orders make reservations hold stock the others want, forcing the
    // give-back path on stores without transactions.
    let a = product(&stores, "a", 10).await;
    let b = product(&stores, "b", 10).await;
    let tasks: Vec<_> = (0..30)
        .map(|i| {
            let stores = stores.clone();
            let lines = if i % 2 == 0 {
                [line(a.id, 1), line(b.id, 1)]
            } else {
                [line(b.id, 1), line(a.id, 1)]
            };
            tokio::spawn(async move {
                stores
                    .catalogue
                    .reserve_stock(&lines, &hold())
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut reserved = 0;
    for task in tasks {
        match task.await.unwrap() {
            ReserveOutcome::Reserved(_) => reserved += 1,
            ReserveOutcome::Insufficient(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    let (left_a, left_b) = (stock(&stores, a.id).await, stock(&stores, b.id).await);
    assert_eq!(
        (left_a, left_b),
        (10 - reserved, 10 - reserved),
        "every unit taken belongs to a reservation that succeeded"
    );
    assert_eq!(reserved, 10, "all stock was there to be had");
}

async fn released_stock_comes_back(stores: Stores) {
    let a = product(&stores, "a", 4).await;
    let b = product(&stores, "b", 2).await;
    let lines = [line(a.id, 3), line(b.id, 2)];
    let held = hold();
    assert!(matches!(
        stores.catalogue.reserve_stock(&lines, &held).await.unwrap(),
        ReserveOutcome::Reserved(_)
    ));
    assert_eq!(
        (stock(&stores, a.id).await, stock(&stores, b.id).await),
        (1, 0)
    );
    stores.catalogue.release_stock(&lines, &held).await.unwrap();
    assert_eq!(
        (stock(&stores, a.id).await, stock(&stores, b.id).await),
        (4, 2)
    );
}

contract_tests! {
    products_round_trip_and_page_stably,
    product_updates_patch_only_given_fields,
    reservations_take_every_line,
    unknown_products_are_all_named_and_nothing_is_taken,
    every_short_line_is_reported_and_nothing_is_taken,
    concurrent_reservations_never_oversell,
    concurrent_multi_line_reservations_stay_consistent,
    released_stock_comes_back,
}
