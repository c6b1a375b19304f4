//! The retention sweep: every `RETENTION_SWEEP_INTERVAL`, each process deletes what is past
//! its use: expired sessions and old email records (the store, see `store::retention`), old
//! dead letters (the embedded queue; SQS keeps its own retention period) and `MAIL_DIR` day
//! directories past `MAIL_RETENTION_DAYS` (the embedded mailer). Every delete is idempotent,
//! so processes sharing the data may sweep at once. A failed sweep is logged and tried again
//! at the next one.

use std::path::PathBuf;

use crate::backends::Backends;
use crate::config::RetentionSettings;

/// What one process sweeps.
pub struct Sweep {
    pub backends: Backends,
    pub settings: RetentionSettings,
    /// `MAIL_DIR`, when the embedded mailer writes there.
    pub mail_dir: Option<PathBuf>,
}

fn ago(d: std::time::Duration) -> chrono::DateTime<chrono::Utc> {
    crate::domain::now() - chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

impl Sweep {
    /// Sweeps now, then every interval, on the current (actix) runtime.
    pub fn start(self) {
        actix_web::rt::spawn(async move {
            let mut every = tokio::time::interval(self.settings.sweep_interval);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                self.once().await;
            }
        });
    }

    /// One sweep of everything.
    pub async fn once(&self) {
        let now = crate::domain::now();
        match self
            .backends
            .stores
            .retention
            .purge_expired(now, ago(self.settings.expired_sessions))
            .await
        {
            Ok(p) if p.sessions + p.notifications > 0 => {
                tracing::info!(
                    sessions = p.sessions,
                    email_records = p.notifications,
                    "retention: deleted expired records"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "retention: could not purge the store"),
        }
        match self
            .backends
            .queue
            .purge_dead_letters(ago(self.settings.dead_letters))
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(dead_letters = n, "retention: deleted old dead letters"),
            Err(e) => tracing::warn!(error = %e, "retention: could not purge dead letters"),
        }
        if let Some(dir) = self.mail_dir.clone() {
            let keep = self.settings.mail_days;
            let today = now.date_naive();
            let purged = tokio::task::spawn_blocking(move || {
                crate::mail::file::purge_days(&dir, keep, today)
            })
            .await;
            match purged {
                Ok(Ok(0)) => {}
                Ok(Ok(n)) => tracing::info!(days = n, "retention: deleted old mail directories"),
                Ok(Err(e)) => tracing::warn!(error = %e, "retention: could not purge MAIL_DIR"),
                Err(e) => tracing::warn!(error = %e, "retention: MAIL_DIR purge failed"),
            }
        }
    }
}
