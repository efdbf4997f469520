//! `ordo queues`, `ordo groups`, `ordo consumers`, `ordo connections`,
//! `ordo topics`, `ordo purge`, `ordo move`, `ordo set-queue`,
//! `ordo rebalance`, `ordo release`, `ordo close-connection`: the admin API
//! from the command line, as tables for people or JSON (`--json`) for
//! scripts.

use clap::Args;
use serde_json::Value;

/// Where the admin API is and who asks.
#[derive(Debug, Args, Clone)]
pub struct AdminArgs {
    /// The admin listener's URL.
    #[arg(long, default_value = "http://127.0.0.1:8672")]
    pub admin: String,
    /// Log in as this user (HTTP Basic); anonymous when left out.
    #[arg(long)]
    pub user: Option<String>,
    /// The user's password.
    #[arg(long)]
    pub password: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The API could not be reached.
    #[error("cannot reach the admin API at {url}: {reason}")]
    Unreachable {
        /// The URL asked.
        url: String,
        /// What failed.
        reason: String,
    },
    /// The API answered with an error.
    #[error("{status}: {message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The API's error text.
        message: String,
    },
}

/// Calls `method path` and returns the JSON answer.
fn call(args: &AdminArgs, method: &str, path: &str) -> Result<Value, AdminError> {
    call_with(args, method, path, None, &[])
}

/// Calls `method path` with an optional JSON body and extra headers.
fn call_with(
    args: &AdminArgs,
    method: &str,
    path: &str,
    body: Option<&Value>,
    headers: &[(&str, &str)],
) -> Result<Value, AdminError> {
    let url = format!("{}{path}", args.admin.trim_end_matches('/'));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .allow_non_standard_methods(true)
        .build()
        .into();
    let auth = args.user.as_ref().map(|user| {
        use base64::Engine;
        let pair = format!("{user}:{}", args.password.as_deref().unwrap_or(""));
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    });
    let mut request = ureq::http::Request::builder().method(method).uri(&url);
    if let Some(auth) = &auth {
        request = request.header("Authorization", auth);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let unreachable = |reason: String| AdminError::Unreachable {
        url: url.clone(),
        reason,
    };
    let response = match body {
        Some(body) => {
            let request = request
                .header("Content-Type", "application/json")
                .body(body.to_string())
                .map_err(|e| unreachable(e.to_string()))?;
            agent.run(request)
        }
        None => {
            let request = request.body(()).map_err(|e| unreachable(e.to_string()))?;
            agent.run(request)
        }
    };
    let mut response = response.map_err(|e| unreachable(e.to_string()))?;
    let status = response.status().as_u16();
    let body: Value = response.body_mut().read_json().unwrap_or(Value::Null);
    if status >= 400 {
        return Err(AdminError::Refused {
            status,
            message: body["error"].as_str().unwrap_or("error").to_owned(),
        });
    }
    Ok(body)
}

/// An action: calls `method path` with `body` and `headers`; with `--json`
/// prints the answer and returns None, else returns it for a summary.
fn act_with(
    args: &AdminArgs,
    method: &str,
    path: &str,
    body: Option<&Value>,
    headers: &[(&str, &str)],
) -> Result<Option<Value>, AdminError> {
    let value = call_with(args, method, path, body, headers)?;
    if args.json {
        println!("{value}");
        return Ok(None);
    }
    Ok(Some(value))
}

/// Path-segment encoding of a queue or group name.
fn segment(name: &str) -> String {
    let mut out = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Formats rows under headers with aligned columns.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        text.trim_end().to_owned() + "\n"
    };
    let mut out = line(headers.iter().map(|h| h.to_string()).collect());
    for row in rows {
        out.push_str(&line(row.clone()));
    }
    out
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn print(args: &AdminArgs, value: &Value, headers: &[&str], keys: &[&str]) {
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        );
        return;
    }
    let rows: Vec<Vec<String>> = value
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|item| keys.iter().map(|k| cell(&item[*k])).collect())
                .collect()
        })
        .unwrap_or_default();
    print!("{}", table(headers, &rows));
}

/// `ordo queues`.
pub fn queues(args: &AdminArgs) -> Result<(), AdminError> {
    let value = call(args, "GET", "/api/queues")?;
    print(
        args,
        &value,
        &[
            "QUEUE",
            "MESSAGES",
            "UNSETTLED",
            "CONSUMERS",
            "GROUPS",
            "HELD",
            "ACTIVE",
            "ENQUEUED",
            "ACKED",
        ],
        &[
            "name",
            "messages",
            "unsettled",
            "consumers",
            "groups",
            "held_groups",
            "active_consumer",
            "enqueued",
            "acked",
        ],
    );
    Ok(())
}

/// `ordo groups QUEUE`.
pub fn groups(args: &AdminArgs, queue: &str) -> Result<(), AdminError> {
    let value = call(
        args,
        "GET",
        &format!("/api/queues/{}/groups", segment(queue)),
    )?;
    print(
        args,
        &value,
        &[
            "GROUP",
            "OWNER",
            "QUEUED",
            "UNSETTLED",
            "HELD",
            "HANDING-OVER",
        ],
        &["id", "owner", "queued", "unsettled", "held", "handing_over"],
    );
    Ok(())
}

/// `ordo consumers [QUEUE]`: one queue's consumers, or every queue's.
pub fn consumers(args: &AdminArgs, queue: Option<&str>) -> Result<(), AdminError> {
    let path = match queue {
        Some(queue) => format!("/api/queues/{}/consumers", segment(queue)),
        None => "/api/consumers".to_owned(),
    };
    let value = call(args, "GET", &path)?;
    let mut headers = vec![
        "CONSUMER",
        "PRIORITY",
        "CREDIT",
        "UNSETTLED",
        "GROUPS",
        "EXCLUSIVE",
        "ACTIVE",
        "CONNECTION",
        "SELECTOR",
    ];
    let mut keys = vec![
        "id",
        "priority",
        "credit",
        "unsettled",
        "groups",
        "exclusive",
        "active",
        "connection",
        "selector",
    ];
    if queue.is_none() {
        headers.insert(0, "QUEUE");
        keys.insert(0, "queue");
    }
    print(args, &value, &headers, &keys);
    Ok(())
}

/// `ordo connections`.
pub fn connections(args: &AdminArgs) -> Result<(), AdminError> {
    let value = call(args, "GET", "/api/connections")?;
    print(
        args,
        &value,
        &[
            "CONNECTION",
            "PEER",
            "USER",
            "CONTAINER",
            "TLS",
            "SESSIONS",
            "LINKS",
            "RECEIVED",
            "DELIVERED",
        ],
        &[
            "id",
            "peer",
            "user",
            "container",
            "tls",
            "sessions",
            "links",
            "received",
            "delivered",
        ],
    );
    Ok(())
}

/// `ordo topics`: each topic's subscriptions, one row each.
pub fn topics(args: &AdminArgs) -> Result<(), AdminError> {
    let value = call(args, "GET", "/api/topics")?;
    let rows: Vec<Value> = value
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|topic| {
            let subscriptions = topic["subscriptions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if subscriptions.is_empty() {
                return vec![serde_json::json!({ "topic": topic["name"] })];
            }
            subscriptions
                .into_iter()
                .map(|mut s| {
                    s["topic"] = topic["name"].clone();
                    s
                })
                .collect()
        })
        .collect();
    if args.json {
        print(args, &value, &[], &[]);
        return Ok(());
    }
    print(
        args,
        &Value::Array(rows),
        &[
            "TOPIC",
            "SUBSCRIPTION",
            "MESSAGES",
            "UNSETTLED",
            "CONSUMERS",
            "DURABLE",
            "SELECTOR",
        ],
        &[
            "topic",
            "queue",
            "messages",
            "unsettled",
            "consumers",
            "durable",
            "selector",
        ],
    );
    Ok(())
}

/// `ordo close-connection ID [--reason TEXT]`.
pub fn close_connection(args: &AdminArgs, id: u64, reason: Option<&str>) -> Result<(), AdminError> {
    let headers: Vec<(&str, &str)> = reason.map(|r| ("X-Reason", r)).into_iter().collect();
    let path = format!("/api/connections/{id}");
    if act_with(args, "DELETE", &path, None, &headers)?.is_some() {
        println!("closed connection {id}");
    }
    Ok(())
}

/// `ordo move QUEUE [--to ADDRESS] [--limit N]`.
pub fn move_messages(
    args: &AdminArgs,
    queue: &str,
    to: Option<&str>,
    limit: Option<usize>,
) -> Result<(), AdminError> {
    let mut body = serde_json::Map::new();
    if let Some(to) = to {
        body.insert("to".into(), Value::String(to.to_owned()));
    }
    if let Some(limit) = limit {
        body.insert("limit".into(), Value::from(limit));
    }
    let path = format!("/api/queues/{}/move", segment(queue));
    let Some(value) = act_with(args, "POST", &path, Some(&Value::Object(body)), &[])? else {
        return Ok(());
    };
    let whereto = to.map_or("their original addresses".to_owned(), str::to_owned);
    println!(
        "moved {} messages from {queue} to {whereto}; {} left",
        cell(&value["moved"]),
        cell(&value["left"])
    );
    if let Some(why) = value["stopped"].as_str() {
        println!("stopped: {why}");
    }
    Ok(())
}

/// `ordo set-queue QUEUE KEY=VALUE...`.
pub fn set_queue(args: &AdminArgs, queue: &str, settings: &[String]) -> Result<(), AdminError> {
    let mut body = serde_json::Map::new();
    for pair in settings {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(AdminError::Refused {
                status: 400,
                message: format!("{pair}: expected KEY=VALUE"),
            });
        };
        body.insert(
            key.trim().to_owned(),
            Value::String(value.trim().to_owned()),
        );
    }
    let path = format!("/api/queues/{}", segment(queue));
    let Some(value) = act_with(args, "PATCH", &path, Some(&Value::Object(body)), &[])? else {
        return Ok(());
    };
    let rows: Vec<Vec<String>> = value["settings"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| vec![k.clone(), cell(v)])
        .collect();
    print!("{}", table(&["SETTING", "VALUE"], &rows));
    Ok(())
}

/// `ordo purge|rebalance QUEUE` and `ordo release QUEUE GROUP`: prints the
/// API's answer.
pub fn act(
    args: &AdminArgs,
    path: &str,
    done: impl Fn(&Value) -> String,
) -> Result<(), AdminError> {
    if let Some(value) = act_with(args, "POST", path, None, &[])? {
        println!("{}", done(&value));
    }
    Ok(())
}

/// `ordo purge QUEUE`.
pub fn purge(args: &AdminArgs, queue: &str) -> Result<(), AdminError> {
    act(
        args,
        &format!("/api/queues/{}/purge", segment(queue)),
        |v| format!("purged {} messages from {queue}", cell(&v["purged"])),
    )
}

/// `ordo rebalance QUEUE`.
pub fn rebalance(args: &AdminArgs, queue: &str) -> Result<(), AdminError> {
    act(
        args,
        &format!("/api/queues/{}/rebalance", segment(queue)),
        |v| format!("moved {} groups of {queue}", cell(&v["moved"])),
    )
}

/// `ordo release QUEUE GROUP`.
pub fn release(args: &AdminArgs, queue: &str, group: &str) -> Result<(), AdminError> {
    act(
        args,
        &format!(
            "/api/queues/{}/groups/{}/release",
            segment(queue),
            segment(group)
        ),
        |_| format!("released group {group} of {queue}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let t = table(&["A", "LONGER"], &[vec!["xyz".into(), "1".into()]]);
        assert_eq!(t, "A    LONGER\nxyz  1\n");
    }

    #[test]
    fn names_are_encoded_as_path_segments() {
        assert_eq!(segment("orders.eu"), "orders.eu");
        assert_eq!(segment("a/b c"), "a%2Fb%20c");
    }
}
