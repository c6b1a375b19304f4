//! The campaign's customers: each places orders (some with an `Idempotency-Key`, retried
//! through faults until answered, and now and then retried once more on purpose), cancels some,
//! and reads orders and products, through whichever API is alive, in turn. Every call is
//! written down — what it was, which API, how it ended, how long it took — for the checker.
//!
//! Each order's street names it (`<tag> Chaos St`): the checker finds in the database every
//! order a request created, including those whose answer was lost, and the orders of each key.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::Method;
use serde_json::{json, Value};

use super::fleet::Fleet;
use crate::harness::*;

/// A product of the campaign and the stock it started with.
#[derive(Clone, Debug)]
pub struct Product {
    pub id: String,
    pub initial: i64,
}

pub struct Shop {
    pub products: Vec<Product>,
    pub customers: Vec<Auth>,
}

/// How a call ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Status(u16),
    /// No HTTP answer: refused, reset, or cut by the client's own limit (`timed_out`).
    NoAnswer {
        timed_out: bool,
        error: String,
    },
}

#[derive(Clone, Debug)]
pub struct Call {
    pub what: &'static str,
    pub api: usize,
    pub started: Instant,
    pub took: Duration,
    pub outcome: Outcome,
    /// For an error answer: its `code`, or why it is not a problem+json body.
    pub problem: Result<String, String>,
    /// The start of the body, to explain an unexpected answer.
    pub body: String,
}

/// An order a request was answered 201 for.
#[derive(Clone, Debug)]
pub struct Placed {
    pub id: String,
    pub customer: usize,
}

#[derive(Default)]
pub struct Ledger {
    pub calls: Vec<Call>,
    /// Every order answered 201, once each (a replay adds nothing).
    pub placed: BTreeMap<String, Placed>,
    /// Per idempotency key, the order ids its 201 answers named (one per answer).
    pub keyed: BTreeMap<String, Vec<String>>,
    /// Orders whose cancellation was answered 200.
    pub cancelled: BTreeSet<String>,
}

/// The client's own limit on a call: far past any bound the checker states, so a hung call is
/// measured (and fails invariant (e)) instead of being mistaken for a refused one.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts at an order with a key before the customer gives up on it.
const KEYED_ATTEMPTS: u32 = 8;

pub struct Load {
    fleet: Arc<Fleet>,
    shop: Arc<Shop>,
    pub ledger: Arc<Mutex<Ledger>>,
    client: reqwest::Client,
    next_api: AtomicUsize,
}

impl Load {
    pub fn new(fleet: Arc<Fleet>, shop: Arc<Shop>) -> Arc<Load> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(CLIENT_TIMEOUT)
            // Under actix's 5 s keep-alive, as in the harness.
            .pool_idle_timeout(Duration::from_secs(3))
            .build()
            .unwrap();
        Arc::new(Load {
            fleet,
            shop,
            ledger: Arc::default(),
            client,
            next_api: AtomicUsize::new(0),
        })
    }

    /// Every customer at once until `stop` is set; each customer's choices come from `seed`.
    pub async fn run(self: &Arc<Self>, seed: u64, stop: Arc<AtomicBool>) {
        let customers = (0..self.shop.customers.len()).map(|c| {
            let (load, stop) = (self.clone(), stop.clone());
            tokio::spawn(async move { load.customer(c, seed, &stop).await })
        });
        for done in join_all(customers).await {
            done.expect("a customer panicked");
        }
    }

    async fn customer(&self, c: usize, seed: u64, stop: &AtomicBool) {
        let mut rng = StdRng::seed_from_u64(seed.wrapping_add(0x9e37_79b9 * (c as u64 + 1)));
        let mut mine: Vec<String> = Vec::new();
        let mut n = 0;
        while !stop.load(Ordering::SeqCst) {
            n += 1;
            let roll = rng.gen_range(0..100);
            if roll < 45 {
                let tag = format!("c{c}-n{n}");
                let keyed = rng.gen_bool(0.6);
                let body = self.order_body(&mut rng, &tag);
                let placed = if keyed {
                    self.place_keyed(c, &tag, &body, rng.gen_bool(0.25)).await
                } else {
                    self.place_once(c, &body).await
                };
                mine.extend(placed);
            } else if roll < 55 && !mine.is_empty() {
                let id = mine[rng.gen_range(0..mine.len())].clone();
                self.cancel(c, &id).await;
            } else if roll < 75 && !mine.is_empty() {
                let id = &mine[rng.gen_range(0..mine.len())];
                self.read(c, "get_order", &format!("/api/orders/{id}"))
                    .await;
            } else if roll < 85 {
                self.read(c, "list_orders", "/api/orders?page=1&limit=20")
                    .await;
            } else {
                let p = &self.shop.products[rng.gen_range(0..self.shop.products.len())];
                self.read(c, "get_product", &format!("/api/products/{}", p.id))
                    .await;
            }
            // Pacing, not synchronisation: a few calls per second per customer.
            tokio::time::sleep(Duration::from_millis(rng.gen_range(20..150))).await;
        }
    }

    fn order_body(&self, rng: &mut StdRng, tag: &str) -> Value {
        let lines = rng.gen_range(1..=2);
        let mut items = Vec::new();
        let mut used = BTreeSet::new();
        for _ in 0..lines {
            let p = rng.gen_range(0..self.shop.products.len());
            if used.insert(p) {
                let id = &self.shop.products[p].id;
                items.push(json!({"productId": id, "quantity": rng.gen_range(1..=3)}));
            }
        }
        let mut address = default_address();
        address["street"] = json!(format!("{tag} Chaos St"));
        json!({"items": items, "shippingAddress": address, "paymentMethod": "credit_card"})
    }

    async fn place_once(&self, c: usize, body: &Value) -> Option<String> {
        let (status, answer) = self
            .call(c, "place", Method::POST, "/api/orders", Some(body), None)
            .await;
        (status == Some(201)).then(|| self.placed(c, &answer, None))
    }

    /// With a key: retried (same key, same body) through refusals, 503s and lost answers until
    /// some answer is final; after a 201, sometimes once more, which must replay the same order.
    async fn place_keyed(
        &self,
        c: usize,
        key: &str,
        body: &Value,
        retry_anyway: bool,
    ) -> Option<String> {
        for attempt in 1..=KEYED_ATTEMPTS {
            let what = if attempt == 1 {
                "place_keyed"
            } else {
                "place_retry"
            };
            let (status, answer) = self
                .call(c, what, Method::POST, "/api/orders", Some(body), Some(key))
                .await;
            match status {
                Some(201) => {
                    let id = self.placed(c, &answer, Some(key));
                    if retry_anyway {
                        let (status, answer) = self
                            .call(
                                c,
                                "place_replay",
                                Method::POST,
                                "/api/orders",
                                Some(body),
                                Some(key),
                            )
                            .await;
                        if status == Some(201) {
                            self.placed(c, &answer, Some(key));
                        }
                    }
                    return Some(id);
                }
                Some(503) | None => {
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await
                }
                Some(_) => return None,
            }
        }
        None
    }

    fn placed(&self, c: usize, answer: &str, key: Option<&str>) -> String {
        let order: Value = serde_json::from_str(answer).expect("a 201 carries the order");
        let id = str_of(&order["id"]);
        let mut ledger = self.ledger.lock().unwrap();
        ledger.placed.entry(id.clone()).or_insert(Placed {
            id: id.clone(),
            customer: c,
        });
        if let Some(key) = key {
            ledger
                .keyed
                .entry(key.to_string())
                .or_default()
                .push(id.clone());
        }
        id
    }

    async fn cancel(&self, c: usize, id: &str) {
        let path = format!("/api/orders/{id}/cancel");
        for _ in 0..2 {
            let (status, _) = self
                .call(c, "cancel", Method::POST, &path, None, None)
                .await;
            match status {
                Some(200) => {
                    self.ledger.lock().unwrap().cancelled.insert(id.to_string());
                    return;
                }
                // A refused connection changed nothing: the other API gets it.
                None => continue,
                Some(_) => return,
            }
        }
    }

    async fn read(&self, c: usize, what: &'static str, path: &str) {
        for _ in 0..2 {
            if self
                .call(c, what, Method::GET, path, None, None)
                .await
                .0
                .is_some()
            {
                return;
            }
        }
    }

    /// One call to the next live API, recorded; the status (`None`: no answer) and body.
    async fn call(
        &self,
        c: usize,
        what: &'static str,
        method: Method,
        path: &str,
        body: Option<&Value>,
        key: Option<&str>,
    ) -> (Option<u16>, String) {
        let (api, base) = loop {
            let apis = self.fleet.apis();
            if !apis.is_empty() {
                break apis[self.next_api.fetch_add(1, Ordering::Relaxed) % apis.len()].clone();
            }
            // Both APIs between processes (only while healing): try again shortly.
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let mut rb = self
            .client
            .request(method, format!("{base}{path}"))
            .bearer_auth(&self.shop.customers[c].access);
        if let Some(body) = body {
            rb = rb.json(body);
        }
        if let Some(key) = key {
            rb = rb.header("Idempotency-Key", key);
        }
        let started = Instant::now();
        let sent = rb.send().await;
        let (outcome, content_type, text) = match sent {
            Ok(res) => {
                let status = res.status().as_u16();
                let ct = res
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                match res.text().await {
                    Ok(text) => (Outcome::Status(status), ct, text),
                    Err(e) => (no_answer(&e), String::new(), String::new()),
                }
            }
            Err(e) => (no_answer(&e), String::new(), String::new()),
        };
        let took = started.elapsed();
        let status = match outcome {
            Outcome::Status(s) => Some(s),
            Outcome::NoAnswer { .. } => None,
        };
        let problem = match status {
            Some(s) if s >= 400 => problem_code(s, &content_type, &text),
            _ => Ok(String::new()),
        };
        self.ledger.lock().unwrap().calls.push(Call {
            what,
            api,
            started,
            took,
            outcome,
            problem,
            body: text.chars().take(300).collect(),
        });
        (status, text)
    }
}

fn no_answer(e: &reqwest::Error) -> Outcome {
    Outcome::NoAnswer {
        timed_out: e.is_timeout(),
        error: format!("{e:?}").chars().take(200).collect(),
    }
}

/// The `code` of an RFC 9457 problem answer with this status, or what is wrong with it.
fn problem_code(status: u16, content_type: &str, text: &str) -> Result<String, String> {
    if !content_type.starts_with("application/problem+json") {
        return Err(format!("content-type {content_type:?}"));
    }
    let body: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    if body["status"] != json!(status) {
        return Err(format!("status field {} for a {status}", body["status"]));
    }
    body["code"]
        .as_str()
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .ok_or_else(|| "no code".to_string())
}
