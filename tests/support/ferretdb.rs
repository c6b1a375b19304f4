//! FerretDB 1.x on its SQLite handler: the MongoDB wire protocol with nothing but one Go binary,
//! started per test on a free port with a throwaway data directory.
//!
//! Known gap against MongoDB: FerretDB 1.x applies `update` and `findAndModify` as a read and a
//! separate blind write (FerretDB issue #3040), so single-document conditional updates are not
//! atomic under concurrency. Tests of concurrent behaviour say so and need a real MongoDB.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::{find_binary, free_port, temp_dir, wait_for_port, ServerProcess};

const INSTALL_HINT: &str =
    "install it with `go install github.com/FerretDB/FerretDB/cmd/ferretdb@v1.24.2` \
     (build/version/version.txt must hold v1.24.2) or run scripts/test";

pub struct FerretDb {
    pub process: ServerProcess,
    pub port: u16,
    binary: PathBuf,
    dir: PathBuf,
}

/// Starts FerretDB, or returns `None` (after saying why) when it is not installed.
pub fn start() -> Option<FerretDb> {
    let binary = find_binary("FERRETDB_BIN", "ferretdb", INSTALL_HINT)?;
    let dir = temp_dir("ferretdb");
    let port = free_port();
    let child = spawn(&binary, &dir, port);
    let mut db = FerretDb {
        process: ServerProcess::new(child, Some(&dir)),
        port,
        binary,
        dir,
    };
    db.wait_until_listening();
    Some(db)
}

impl FerretDb {
    /// A connection string for `database` (created on first write).
    pub fn uri(&self, database: &str) -> String {
        format!("mongodb://127.0.0.1:{}/{database}", self.port)
    }

    /// Stops the server abruptly (SIGKILL); its data stays for [`FerretDb::restart`].
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Starts the server again on the same port and data directory, after a kill or not.
    pub fn restart(&mut self) {
        self.process.kill();
        self.process.child = spawn(&self.binary, &self.dir, self.port);
        self.wait_until_listening();
    }

    pub fn log_path(&self) -> PathBuf {
        log_path(&self.dir)
    }

    fn wait_until_listening(&mut self) {
        let port = self.port;
        let waited = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_for_port(port, "ferretdb", &mut self.process.child)
        }));
        if let Err(panic) = waited {
            eprintln!(
                "--- last lines of {} ---\n{}",
                self.log_path().display(),
                log_tail(&self.log_path())
            );
            std::panic::resume_unwind(panic);
        }
    }
}

fn log_path(dir: &Path) -> PathBuf {
    dir.join("ferretdb.log")
}

fn spawn(binary: &Path, dir: &Path, port: u16) -> Child {
    // Appending keeps the log of a run before a restart, which is what explains a fault test.
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path(dir))
        .expect("open the ferretdb log");
    let data = dir.join("data");
    std::fs::create_dir_all(&data).expect("create the ferretdb data dir");
    Command::new(binary)
        .arg("--handler=sqlite")
        // FerretDB wants a directory URI with a trailing slash; one SQLite file per database.
        .arg(format!("--sqlite-url=file:{}/", data.display()))
        .arg(format!("--listen-addr=127.0.0.1:{port}"))
        .arg(format!("--state-dir={}", dir.display()))
        // Its debug HTTP listener defaults to a fixed port, which parallel tests would fight
        // over; "-" turns it off.
        .arg("--debug-addr=-")
        .arg("--telemetry=disable")
        .arg("--log-level=warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone the log handle"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()))
}

/// The end of the server's log, to explain why it died.
fn log_tail(path: &Path) -> String {
    const TAIL: u64 = 4000;
    let Ok(mut file) = File::open(path) else {
        return "(no log)".into();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(TAIL)));
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    text
}
