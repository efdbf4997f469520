//! Black-box harness: starts the real `ordo` binary on a free loopback port
//! with a config fixture and its own data directory, and stops it on drop.

#![allow(dead_code)]

pub mod admin;
pub mod client;
pub mod raw;

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
    /// Where it listens for amqps, when TLS is on.
    pub tls_addr: Option<SocketAddr>,
    /// Where its admin API listens, when `[admin] enabled`.
    pub admin_addr: Option<SocketAddr>,
    /// Its data directory and files (removed on drop).
    pub dir: tempfile::TempDir,
    /// Everything it logged so far (every run, for a restarted broker).
    pub log: Arc<Mutex<String>>,
    /// The config file it runs with (None: the built-in default).
    config: Option<PathBuf>,
    /// Its data directory (`dir/data` unless the test chose one).
    data_dir: PathBuf,
}

/// Runs `ordo run` on a free loopback port with its data in `data_dir`
/// and its port files in `dir`, appending its log to `log`; returns once it
/// wrote its port file.
fn spawn(
    dir: &Path,
    data_dir: &Path,
    config: Option<&Path>,
    log: &Arc<Mutex<String>>,
) -> (Child, SocketAddr, Option<SocketAddr>) {
    let port_file = dir.join("port");
    let _ = std::fs::remove_file(&port_file);
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
        .arg(data_dir)
        .arg("--admin-port-file")
        .arg(dir.join("admin-port"))
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
    let stderr = child.stderr.take().expect("stderr");
    let sink = Arc::clone(log);
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let mut log = sink.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
    let started = Instant::now();
    let (addr, tls_addr) = loop {
        if let Ok(text) = std::fs::read_to_string(&port_file) {
            let mut lines = text.lines();
            if let Some(Ok(addr)) = lines.next().map(str::parse) {
                break (addr, lines.next().and_then(|l| l.parse().ok()));
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("ordo exited with {status}: {}", log.lock().unwrap());
        }
        assert!(started.elapsed() < DEADLINE, "ordo did not start");
        std::thread::sleep(Duration::from_millis(10));
    };
    (child, addr, tls_addr)
}

/// The admin address the broker wrote (written before the main port file).
fn read_admin_addr(dir: &Path) -> Option<SocketAddr> {
    std::fs::read_to_string(dir.join("admin-port"))
        .ok()
        .and_then(|t| t.trim().parse().ok())
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
        Self::start_with_data_dir(config, None)
    }

    /// Starts the broker with a config file and its data in `data_dir`
    /// (None: a directory of its own, removed with it).
    pub fn start_with_data_dir(config: Option<&Path>, data_dir: Option<&Path>) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let data_dir = data_dir.map_or_else(|| dir.path().join("data"), Path::to_path_buf);
        let log = Arc::new(Mutex::new(String::new()));
        let (child, addr, tls_addr) = spawn(dir.path(), &data_dir, config, &log);
        Self {
            child,
            addr,
            tls_addr,
            admin_addr: read_admin_addr(dir.path()),
            dir,
            log,
            config: config.map(Path::to_path_buf),
            data_dir,
        }
    }

    /// Kills the process with SIGKILL (no shutdown of any kind) and waits
    /// for it to be gone.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the broker again on the same data directory and config (after
    /// [`Self::kill9`] or [`Self::terminate`]), on a new free port.
    pub fn restart(&mut self) {
        self.kill9();
        self.log.lock().unwrap().push_str("---- restart ----\n");
        let (child, addr, tls_addr) = spawn(
            self.dir.path(),
            &self.data_dir,
            self.config.as_deref(),
            &self.log,
        );
        self.tls_addr = tls_addr;
        self.admin_addr = read_admin_addr(self.dir.path());
        self.child = child;
        self.addr = addr;
    }

    /// `amqp://` URL of the broker, optionally with credentials.
    pub fn url(&self) -> String {
        format!("amqp://{}", self.addr)
    }

    /// URL with user and password.
    pub fn url_as(&self, user: &str, password: &str) -> String {
        format!("amqp://{user}:{password}@{}", self.addr)
    }

    /// The broker's resident memory (VmRSS), in bytes.
    pub fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("the broker's /proc status");
        let line = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .expect("VmRSS");
        let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        kib * 1024
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

    /// Sends SIGHUP (reload the configuration) and waits until the log
    /// shows `expect` once more than before.
    pub fn hangup(&self, expect: &str) {
        let before = self.log().matches(expect).count();
        let _ = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status();
        let started = Instant::now();
        while self.log().matches(expect).count() <= before {
            assert!(
                started.elapsed() < DEADLINE,
                "no '{expect}' after SIGHUP: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
