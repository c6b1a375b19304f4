//! Which lock documents in the database are this process's own (`write_lock`): what lets it
//! remove one it left behind at once, instead of waiting it out like another process's.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bson::Document;

/// The owners of this process's lock documents that may still be in the database: noted before
/// each lock insert is sent, forgotten once the document is known gone (a release or removal
/// answered, the insert refused). While the process holds no lease, a document under a noted
/// owner is its own, abandoned: an insert whose reply was lost, or a lease whose write was cut
/// and whose release was lost, failed (the database restarting) or never sent. It is removed as
/// soon as it is seen, instead of being waited out for a whole lease while every write of every
/// process fails on `LOCK_PATIENCE`. A plain mutex, never held across an await, so that a lease
/// dropped in flight (`Unreleased`) is noted too.
#[derive(Clone, Default)]
pub(super) struct OwnLeases(Arc<Mutex<VecDeque<String>>>);

impl OwnLeases {
    /// Before an insert under `owner` is sent: if the write is cut with it in flight, or its
    /// lease is never released, the note stays.
    pub(super) fn note(&self, owner: &str) {
        let mut owners = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if !owners.iter().any(|o| o == owner) {
            if owners.len() >= OWN_LEASES_KEPT {
                owners.pop_front();
            }
            owners.push_back(owner.to_string());
        }
    }

    /// The document under `owner` is gone, or never was (its insert was refused).
    pub(super) fn forget(&self, owner: &str) {
        let mut owners = self.0.lock().unwrap_or_else(|e| e.into_inner());
        owners.retain(|o| o != owner);
    }

    /// Whether the lock document seen is this process's own, left behind: a noted owner, or
    /// `current`, the insert just refused as a duplicate (which is its own document if the
    /// driver sent it again after a first try that landed). Only asked while no lease is held.
    pub(super) fn abandoned(&self, seen: &Document, current: &str) -> Option<String> {
        let owner = seen.get_str("owner").ok()?;
        let owners = self.0.lock().unwrap_or_else(|e| e.into_inner());
        (owner == current || owners.iter().any(|o| o == owner)).then(|| owner.to_string())
    }
}

/// How many of its own lock documents a process remembers: a few dozen bytes each, enough for
/// every lock insert of an outage of an hour (a failing one takes seconds). An older one's
/// document, if it landed, is taken over after a lease like any holder's that stopped renewing.
const OWN_LEASES_KEPT: usize = 1024;

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    fn lock_of(owner: &str) -> Document {
        doc! { "_id": "writes", "owner": owner, "renewals": 0_i64 }
    }

    #[test]
    fn a_noted_owner_is_ours_until_forgotten() {
        let own = OwnLeases::default();
        own.note("a");
        assert_eq!(own.abandoned(&lock_of("a"), "b").as_deref(), Some("a"));
        assert_eq!(own.abandoned(&lock_of("c"), "b"), None);
        own.forget("a");
        assert_eq!(own.abandoned(&lock_of("a"), "b"), None);
    }

    #[test]
    fn the_insert_just_refused_is_ours_even_when_forgotten() {
        let own = OwnLeases::default();
        assert_eq!(own.abandoned(&lock_of("b"), "b").as_deref(), Some("b"));
    }

    #[test]
    fn clones_share_the_notes() {
        let own = OwnLeases::default();
        own.clone().note("a");
        assert!(own.abandoned(&lock_of("a"), "x").is_some());
    }

    #[test]
    fn the_oldest_notes_go_first_past_the_bound() {
        let own = OwnLeases::default();
        for i in 0..=OWN_LEASES_KEPT {
            own.note(&i.to_string());
        }
        assert_eq!(own.abandoned(&lock_of("0"), "x"), None);
        assert!(own.abandoned(&lock_of("1"), "x").is_some());
        assert!(own
            .abandoned(&lock_of(&OWN_LEASES_KEPT.to_string()), "x")
            .is_some());
    }
}
