//! Black-box tests of the `ordo` binary's command line.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ordo::auth::ScramCredential;
use ordo::config::Config;

/// How long any awaited event may take before the test fails; generous, as CI
/// machines are slow, and never slept through when the event comes sooner.
const DEADLINE: Duration = Duration::from_secs(30);

/// The binary, with no ORDO_* or RUST_LOG variables inherited from the test's
/// environment, run from the package root.
fn ordo() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ordo"));
    for (name, _) in std::env::vars() {
        if name.starts_with("ORDO_") || name == "RUST_LOG" {
            command.env_remove(name);
        }
    }
    command.current_dir(env!("CARGO_MANIFEST_DIR"));
    command
}

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

#[test]
fn print_default_config_prints_conf_ordo_toml() {
    let output = ordo().arg("print-default-config").output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let printed = stdout(&output);
    assert_eq!(
        printed,
        std::fs::read_to_string(repo_file("conf/ordo.toml")).unwrap()
    );
    assert_eq!(
        toml::from_str::<Config>(&printed).unwrap(),
        Config::default()
    );
}

#[test]
fn check_config_accepts_the_default_file() {
    let output = ordo()
        .args(["check-config", "conf/ordo.toml"])
        .output()
        .unwrap();
    assert_eq!(stdout(&output), "ok\n", "{}", stderr(&output));
    assert_eq!(output.status.code(), Some(0));
}

#[test]
fn check_config_reports_every_problem_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        r#"
        [listener]
        max-frame-size = 100
        [[users]]
        name = "alice"
        password = "not-a-credential"
        [[queues]]
        pattern = "orders..x"
        "#,
    )
    .unwrap();
    let output = ordo().arg("check-config").arg(&file).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let report = stdout(&output);
    assert!(report.contains("3 problems"), "{report}");
    for expected in [
        "listener.max-frame-size = 100",
        "users[0].password (user `alice`)",
        "queues[0] (pattern \"orders..x\")",
    ] {
        assert!(
            report.contains(expected),
            "{expected:?} missing from:\n{report}"
        );
    }
}

#[test]
fn check_config_reports_unknown_keys_and_environment_problems() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("typo.toml");
    std::fs::write(&file, "[listener]\nprot = 5672\n").unwrap();
    let output = ordo().arg("check-config").arg(&file).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stdout(&output).contains("unknown field `prot`"),
        "{}",
        stdout(&output)
    );

    let output = ordo()
        .args(["check-config", "conf/ordo.toml"])
        .env("ORDO_LISTENER__PROT", "1")
        .env("ORDO_LISTENER__MAX_FRAME_SIZE", "2")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stdout(&output).contains("ORDO_LISTENER__PROT"),
        "{}",
        stdout(&output)
    );

    let output = ordo()
        .args(["check-config", "conf/ordo.toml"])
        .env("ORDO_LISTENER__MAX_FRAME_SIZE", "2")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stdout(&output).contains("max-frame-size = 2"),
        "{}",
        stdout(&output)
    );

    let output = ordo()
        .args(["check-config", "/nonexistent/ordo.toml"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(stdout(&output).contains("cannot read /nonexistent/ordo.toml"));
}

fn hash_password(args: &[&str], input: &str) -> Output {
    let mut child = ordo()
        .arg("hash-password")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The process may exit without reading (a refused flag): a broken pipe then
    // is expected, and its exit status tells the rest.
    let written = child.stdin.take().unwrap().write_all(input.as_bytes());
    if let Err(e) = written {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
    }
    child.wait_with_output().unwrap()
}

#[test]
fn hash_password_prints_a_verifiable_credential() {
    let output = hash_password(&[], "correct horse\n");
    assert!(output.status.success(), "{}", stderr(&output));
    let printed = stdout(&output);
    let line = printed.strip_suffix('\n').unwrap();
    let credential = ScramCredential::parse(line).unwrap();
    assert_eq!(credential.iterations, 4096);
    assert!(credential.verify_password("correct horse"));
    assert!(!credential.verify_password("correct horse\n"));

    let output = hash_password(&["--iterations", "64"], "pw\r\n");
    let credential = ScramCredential::parse(stdout(&output).trim_end()).unwrap();
    assert_eq!(credential.iterations, 64);
    assert!(credential.verify_password("pw"));
}

#[test]
fn hash_password_refuses_an_empty_password() {
    let output = hash_password(&[], "");
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("no password"),
        "{}",
        stderr(&output)
    );
    let output = hash_password(&["--iterations", "0"], "pw\n");
    assert!(!output.status.success());
}

#[test]
fn help_explains_every_command_and_flag() {
    let output = ordo().arg("--help").output().unwrap();
    let help = stdout(&output);
    for command in [
        "run",
        "check-config",
        "print-default-config",
        "hash-password",
    ] {
        assert!(help.contains(command), "{command} missing from:\n{help}");
    }
    let output = ordo().args(["run", "--help"]).output().unwrap();
    let help = stdout(&output);
    for flag in ["--config", "--listen", "--data-dir", "--port-file"] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
}

#[test]
fn run_refuses_a_bad_listen_address() {
    let output = ordo()
        .args(["run", "--listen", "nowhere"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(stderr(&output).contains("HOST:PORT"), "{}", stderr(&output));
}

/// A running broker, killed if a test fails before stopping it.
struct Broker {
    /// The process.
    child: Child,
    /// stderr lines, read by a thread so the pipe never fills up.
    lines: mpsc::Receiver<String>,
}

impl Broker {
    fn start(mut command: Command) -> Broker {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Broker { child, lines }
    }

    /// Waits for a stderr line containing `text`, returning it.
    fn wait_for_line(&self, text: &str) -> String {
        let deadline = Instant::now() + DEADLINE;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(text) => return line,
                Ok(line) => seen.push(line),
                Err(e) => panic!("no line containing {text:?} ({e}); stderr so far: {seen:#?}"),
            }
        }
    }

    /// Sends SIGTERM and waits for the process to exit.
    fn terminate(mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "ordo did not exit after SIGTERM");
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

/// Polls for `path` to exist, as the broker writes it once listening.
fn wait_for_file(path: &Path) -> String {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn run_writes_the_port_file_logs_the_address_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let port_file = dir.path().join("ordo.port");
    let mut command = ordo();
    command
        .args(["run", "--listen", "127.0.0.1:0", "--port-file"])
        .arg(&port_file)
        .arg("--data-dir")
        .arg(dir.path().join("data"));
    let broker = Broker::start(command);

    let text = wait_for_file(&port_file);
    assert!(text.ends_with('\n'), "{text:?}");
    let addr: SocketAddr = text.trim().parse().unwrap();
    assert!(addr.ip().is_loopback() && addr.port() != 0, "{addr}");
    broker.wait_for_line(&format!("listening on {addr}"));
    TcpStream::connect(addr).expect("the broker accepts TCP connections");

    let status = broker.terminate();
    assert_eq!(status.code(), Some(0));
    assert!(
        !port_file.exists(),
        "the port file is removed on a clean exit"
    );
}

#[test]
fn command_line_overrides_replace_file_values_before_validation() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ordo.toml");
    std::fs::write(&file, "[listener]\naddress = \"\"\n[store]\npath = \"\"\n").unwrap();
    let port_file = dir.path().join("port");
    let mut command = ordo();
    command
        .arg("run")
        .arg("--config")
        .arg(&file)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--port-file")
        .arg(&port_file);
    let broker = Broker::start(command);
    wait_for_file(&port_file);
    assert_eq!(broker.terminate().code(), Some(0));
}

#[test]
fn ordo_alone_runs_with_conf_ordo_toml_from_the_working_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("conf")).unwrap();
    std::fs::write(
        dir.path().join("conf/ordo.toml"),
        "[listener]\nport = 0\n[store]\npath = \"store\"\n",
    )
    .unwrap();
    let mut command = ordo();
    command.current_dir(dir.path());
    let broker = Broker::start(command);
    broker.wait_for_line("config=conf/ordo.toml");
    let line = broker.wait_for_line("listening on 127.0.0.1:");
    assert!(!line.contains("127.0.0.1:5672"), "{line}");
    assert_eq!(broker.terminate().code(), Some(0));
}

#[test]
fn run_reports_a_bad_config_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[listener]\nmax-frame-size = 1\n").unwrap();
    let output = ordo()
        .args(["run", "--listen", "127.0.0.1:0", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("max-frame-size"),
        "{}",
        stderr(&output)
    );
}
