//! The embedded mailer: each email becomes an RFC 5322 `.eml` file in a directory of its day
//! under `MAIL_DIR` (`MAIL_DIR/2026-12-03/order-<id>-completed.eml`, the UTC date of the send;
//! open it with any mail client), plus a log line. Day directories older than
//! `MAIL_RETENTION_DAYS` are deleted by the retention sweep ([`purge_days`]), so the directory
//! does not grow without bound. The file name is the email's stable reference. A reader never
//! sees half an email, and sending the same email twice on one day leaves one file:
//!
//! - On Linux the email is written to an unnamed file (`O_TMPFILE`) that is then given its name
//!   (`linkat`): one directory operation per email. Under load the file writes were 15–30 % of
//!   the service's CPU, most of it in directory updates.
//! - Elsewhere, or where the file system has no unnamed files, it is written under a temporary
//!   name, linked in under its name and the temporary name removed: three directory operations.
//!
//! Either way a name that exists already is left alone: the same email was written before, and
//! the first copy stays.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use chrono::NaiveDate;
use lettre::message::{header::ContentType, Mailbox, MultiPart, SinglePart};
use lettre::Message;

use super::{Mailer, OutgoingEmail};
use crate::error::BackendError;

const BACKEND: &str = "mailer";

pub struct FileMailer {
    dir: PathBuf,
    from: Mailbox,
}

impl FileMailer {
    pub fn new(dir: PathBuf, from: Mailbox) -> Result<Self, BackendError> {
        std::fs::create_dir_all(&dir)
            .map_err(|e| BackendError::unavailable(BACKEND, format!("{}: {e}", dir.display())))?;
        Ok(FileMailer { dir, from })
    }
}

/// The directory name of one day's emails.
fn day_name(day: NaiveDate) -> String {
    day.format("%Y-%m-%d").to_string()
}

/// Deletes the day directories of `dir` older than `keep_days` days before `today` (0 keeps
/// everything); other entries are left alone. Returns how many went.
pub fn purge_days(dir: &Path, keep_days: u32, today: NaiveDate) -> std::io::Result<usize> {
    if keep_days == 0 {
        return Ok(0);
    }
    let oldest_kept = today - chrono::Days::new(u64::from(keep_days - 1));
    let mut purged = 0;
    let entries = match std::fs::read_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        other => other?,
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let day = name
            .to_str()
            .and_then(|n| NaiveDate::parse_from_str(n, "%Y-%m-%d").ok());
        if day.is_some_and(|d| d < oldest_kept) && entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(entry.path())?;
            purged += 1;
        }
    }
    Ok(purged)
}

/// Writes `bytes` as `dir/name`, whole or not at all; keeps `dir/name` if it exists.
fn write_email_file(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    match unnamed::write_then_link(dir, name, bytes) {
        Err(e) if unnamed::unsupported(&e) => {}
        done => return done,
    }
    write_temp_then_link(dir, name, bytes)
}

/// The portable way: a temporary file, hard-linked in under its name, then removed.
fn write_temp_then_link(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let tmp_path = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp_path, bytes)?;
    let linked = std::fs::hard_link(&tmp_path, dir.join(name));
    std::fs::remove_file(&tmp_path)?;
    already_there_is_fine(linked)
}

/// A link refused because the name exists means the email was written before.
fn already_there_is_fine(linked: std::io::Result<()>) -> std::io::Result<()> {
    match linked {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        other => other,
    }
}

#[cfg(target_os = "linux")]
mod unnamed {
    use std::ffi::CString;
    use std::fs::OpenOptions;
    use std::io::{Error, Write};
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::OpenOptionsExt;
    use std::os::unix::io::AsRawFd;
    use std::path::Path;

    /// Writes an unnamed file in `dir`, then links it in as `name`. If `name` exists already,
    /// the same email was written before: the first one stays.
    pub fn write_then_link(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_TMPFILE)
            .open(dir)?;
        file.write_all(bytes)?;
        // Naming an unnamed file goes through its /proc link; linkat on the descriptor itself
        // (AT_EMPTY_PATH) needs a capability the service should not have.
        let from = CString::new(format!("/proc/self/fd/{}", file.as_raw_fd()))?;
        let to = CString::new(dir.join(name).as_os_str().as_bytes())?;
        // SAFETY: both paths are NUL-terminated strings that outlive the call.
        let rc = unsafe {
            libc::linkat(
                libc::AT_FDCWD,
                from.as_ptr(),
                libc::AT_FDCWD,
                to.as_ptr(),
                libc::AT_SYMLINK_FOLLOW,
            )
        };
        super::already_there_is_fine(if rc == 0 {
            Ok(())
        } else {
            Err(Error::last_os_error())
        })
    }

    /// The file system (or the kernel) has no unnamed files, or /proc is not mounted: use the
    /// portable way instead.
    pub fn unsupported(e: &Error) -> bool {
        matches!(
            e.raw_os_error(),
            Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL | libc::ENOENT)
        )
    }
}

/// Builds the RFC 5322 message with a text and an HTML alternative; shared with the SES mailer.
pub fn build_message(from: &Mailbox, email: &OutgoingEmail) -> Result<Message, BackendError> {
    let to = Mailbox::new(
        Some(email.to_name.clone()),
        email
            .to
            .as_str()
            .parse()
            .map_err(|e| BackendError::other(BACKEND, e))?,
    );
    Message::builder()
        .from(from.clone())
        .to(to)
        .subject(email.subject.clone())
        .multipart(
            MultiPart::alternative()
                .singlepart(
                    SinglePart::builder()
                        .header(ContentType::TEXT_PLAIN)
                        .body(email.text.clone()),
                )
                .singlepart(
                    SinglePart::builder()
                        .header(ContentType::TEXT_HTML)
                        .body(email.html.clone()),
                ),
        )
        .map_err(|e| BackendError::other(BACKEND, e))
}

#[async_trait]
impl Mailer for FileMailer {
    async fn ping(&self) -> Result<(), BackendError> {
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || std::fs::metadata(&dir).map(|_| ()))
            .await
            .map_err(|e| BackendError::other(BACKEND, e))?
            .map_err(|e| BackendError::unavailable(BACKEND, e))
    }

    async fn send(&self, email: &OutgoingEmail) -> Result<(), BackendError> {
        let bytes = build_message(&self.from, email)?.formatted();
        let name = format!("{}.eml", email.reference);
        let dir = self.dir.join(day_name(chrono::Utc::now().date_naive()));
        tokio::task::spawn_blocking(move || {
            match std::fs::create_dir(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
                _ => {}
            }
            write_email_file(&dir, &name, &bytes)
        })
        .await
        .map_err(|e| BackendError::other(BACKEND, e))?
        .map_err(|e| BackendError::unavailable(BACKEND, e))?;
        tracing::info!(reference = %email.reference, to = %email.to, subject = %email.subject, "email written");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// Runs one way of writing against the promises of the module comment.
    fn keeps_the_first_copy_and_leaves_nothing_else(
        write: fn(&Path, &str, &[u8]) -> std::io::Result<()>,
    ) {
        let dir = std::env::temp_dir().join(format!("file-mailer-{}", crate::domain::Id::new()));
        std::fs::create_dir_all(&dir).unwrap();
        write(&dir, "order-1-completed.eml", b"first").unwrap();
        write(&dir, "order-1-completed.eml", b"second").unwrap();
        write(&dir, "order-2-completed.eml", b"other").unwrap();
        assert_eq!(
            names(&dir),
            ["order-1-completed.eml", "order-2-completed.eml"]
        );
        assert_eq!(
            std::fs::read(dir.join("order-1-completed.eml")).unwrap(),
            b"first"
        );
        assert_eq!(
            std::fs::read(dir.join("order-2-completed.eml")).unwrap(),
            b"other"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_portable_way_keeps_the_first_copy() {
        keeps_the_first_copy_and_leaves_nothing_else(write_temp_then_link);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn unnamed_files_keep_the_first_copy() {
        keeps_the_first_copy_and_leaves_nothing_else(unnamed::write_then_link);
    }

    #[test]
    fn the_way_in_use_here_keeps_the_first_copy() {
        keeps_the_first_copy_and_leaves_nothing_else(write_email_file);
    }

    #[test]
    fn only_day_directories_past_the_retention_are_deleted() {
        let dir = std::env::temp_dir().join(format!("mail-days-{}", crate::domain::Id::new()));
        for entry in ["2026-11-30", "2026-12-01", "2026-12-03", "not-a-day"] {
            std::fs::create_dir_all(dir.join(entry)).unwrap();
            std::fs::write(dir.join(entry).join("order-1-completed.eml"), b"x").unwrap();
        }
        std::fs::write(dir.join("2020-01-01"), b"a file, not a day directory").unwrap();
        let today = NaiveDate::from_ymd_opt(2026, 12, 3).unwrap();
        assert_eq!(purge_days(&dir, 0, today).unwrap(), 0, "0 keeps everything");
        // Three days kept: today, yesterday and the day before.
        assert_eq!(purge_days(&dir, 3, today).unwrap(), 1);
        assert_eq!(
            names(&dir),
            ["2020-01-01", "2026-12-01", "2026-12-03", "not-a-day"]
        );
        assert_eq!(purge_days(&dir, 1, today).unwrap(), 1);
        assert_eq!(names(&dir), ["2020-01-01", "2026-12-03", "not-a-day"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
