//! Talking to a test broker's admin listener: HTTP calls as a user, JSON
//! answers, and the `ordo` admin commands pointed at it.

use std::io::Write;
use std::process::Command;

use serde_json::Value;

use super::{Broker, DEADLINE};

/// The credential of the password "secret".
pub const SECRET: &str = "SCRAM-SHA-256$4096:0YvCpnRKUM82jsZMjefHBQ==$/0bJK/CYOZvh/X8u/iWekAjPPAE2UXdppjfN3N5BdXo=:DATuhs9PZ9yQfFoQe94x1uxwyRxZ0QXBLjSzjoY7iSo=";

/// A config with anonymous access off, `users` (name, groups) logging in
/// with the password "secret", and one `[[access]]` rule per (pattern,
/// managers): everyone may send, receive and create there, the managers
/// manage.
pub fn users_config(users: &[(&str, &[&str])], rules: &[(&str, &str)]) -> String {
    let mut text = String::from("[sasl]\nallow-anonymous = false\n");
    for (name, groups) in users {
        let groups: Vec<String> = groups.iter().map(|g| format!("\"{g}\"")).collect();
        text.push_str(&format!(
            "\n[[users]]\nname = \"{name}\"\npassword = \"{SECRET}\"\ngroups = [{}]\n",
            groups.join(", ")
        ));
    }
    for (pattern, managers) in rules {
        text.push_str(&format!(
            "\n[[access]]\npattern = \"{pattern}\"\nsend = [\"*\"]\nreceive = [\"*\"]\ncreate = [\"*\"]\nmanage = [\"{managers}\"]\n"
        ));
    }
    text
}

/// GETs `path` (as `auth`) until `done` holds for its JSON; returns it.
pub async fn wait_for(
    broker: &Broker,
    path: &str,
    auth: Option<&str>,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let started = std::time::Instant::now();
    loop {
        let (status, body) = call(broker, "GET", path, auth);
        let value: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        if status == 200 && done(&value) {
            return value;
        }
        assert!(started.elapsed() < DEADLINE, "GET {path}: {status} {body}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Starts a broker with the admin listener on a free port and `config`
/// appended to its config file (kept alive by the returned file).
pub fn start_admin(config: &str) -> (Broker, tempfile::NamedTempFile) {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    write!(file, "[admin]\nenabled = true\nport = 0\n\n{config}").unwrap();
    let broker = Broker::start_with(Some(file.path()));
    assert!(
        broker.admin_addr.is_some(),
        "the admin port file is written"
    );
    (broker, file)
}

/// The admin URL of `path`.
pub fn url(broker: &Broker, path: &str) -> String {
    format!("http://{}{path}", broker.admin_addr.unwrap())
}

/// `method path` as `auth` (user:password) with an optional JSON body and
/// extra headers; returns the status and body.
pub fn request(
    broker: &Broker,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: Option<&Value>,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .allow_non_standard_methods(true)
        .build()
        .into();
    let mut builder = ureq::http::Request::builder()
        .method(method)
        .uri(url(broker, path));
    if let Some(a) = auth {
        use base64::Engine;
        let encoded = base64::engine::general_purpose::STANDARD.encode(a);
        builder = builder.header("Authorization", format!("Basic {encoded}"));
    }
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let response = match body {
        Some(body) => agent.run(
            builder
                .header("Content-Type", "application/json")
                .body(body.to_string())
                .unwrap(),
        ),
        None => agent.run(builder.body(()).unwrap()),
    };
    let mut response = response.expect("the admin API answers");
    let status = response.status().as_u16();
    (status, response.body_mut().read_to_string().unwrap())
}

/// GET or POST `path` (as `auth` = user:password), returning status and body.
pub fn call(broker: &Broker, method: &str, path: &str, auth: Option<&str>) -> (u16, String) {
    request(broker, method, path, auth, None, &[])
}

/// `method path` anonymously, expecting 200 and JSON.
pub fn json(broker: &Broker, method: &str, path: &str) -> Value {
    let (status, body) = call(broker, method, path, None);
    assert_eq!(status, 200, "{method} {path}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// Runs `ordo ARGS --admin URL`; returns success and stdout + stderr.
pub fn ordo(broker: &Broker, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ordo"))
        .args(args)
        .args(["--admin", &format!("http://{}", broker.admin_addr.unwrap())])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}
