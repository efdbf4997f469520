//! Black-box harness: starts the real `ordo` binary on a free loopback port
//! with a config fixture and its own data directory, and stops it on drop.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long any awaited event may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// A running broker process.
pub struct Broker {
    /// The process.
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its data directory and files (removed on drop).
    pub dir: tempfile::TempDir,
    /// Everything it logged so far.
    pub log: Arc<Mutex<String>>,
}

/// A config fixture from tests/configs/.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/configs")
        .join(name)
}

impl Broker {
    /// Starts the broker with the built-in default configuration.
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// Starts the broker with a config file (None: the built-in default).
    pub fn start_with(config: Option<&Path>) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let port_file = dir.path().join("port");
        let mut command = Command::new(env!("CARGO_BIN_EXE_ordo"));
        for (name, _) in std::env::vars() {
            if name.starts_with("ORDO_") {
                command.env_remove(name);
            }
        }
        command
            .arg("run")
            .args(["--listen", "127.0.0.1:0", "--port-file"])
            .arg(&port_file)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .env(
                "RUST_LOG",
                std::env::var("ORDO_TEST_LOG").unwrap_or("info".into()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(config) = config {
            command.arg("--config").arg(config);
        }
        let mut child = command.spawn().expect("start ordo");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let started = Instant::now();
        let addr = loop {
            if let Ok(text) = std::fs::read_to_string(&port_file) {
                if let Ok(addr) = text.trim().parse() {
                    break addr;
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("ordo exited with {status}: {}", log.lock().unwrap());
            }
            assert!(started.elapsed() < DEADLINE, "ordo did not start");
            std::thread::sleep(Duration::from_millis(10));
        };
        Self {
            child,
            addr,
            dir,
            log,
        }
    }

    /// `amqp://` URL of the broker, optionally with credentials.
    pub fn url(&self) -> String {
        format!("amqp://{}", self.addr)
    }

    /// URL with user and password.
    pub fn url_as(&self, user: &str, password: &str) -> String {
        format!("amqp://{user}:{password}@{}", self.addr)
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(started.elapsed() < DEADLINE, "ordo did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether the process is still running (it never exits on bad input).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The log so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
