//! Checks of a parsed configuration that the types alone cannot express. Every
//! check runs and every problem is reported, each naming its key, so an operator
//! fixes a file in one pass.

use std::collections::HashMap;

use super::{ClientAuth, Config};
use crate::auth::ScramCredential;
use crate::core::settings::pattern_problem;

/// The smallest max-frame-size AMQP 1.0 allows (MIN-MAX-FRAME-SIZE, §2.7.1).
const MIN_MAX_FRAME_SIZE: u32 = 512;

/// Everything wrong with `config`; empty when it is usable.
pub(super) fn problems(config: &Config) -> Vec<String> {
    let mut problems = Vec::new();
    listener(config, &mut problems);
    tls(config, &mut problems);
    users(config, &mut problems);
    limits(config, &mut problems);
    if config.store.path.as_os_str().is_empty() {
        problems.push("store.path must not be empty".to_owned());
    }
    patterns(config, &mut problems);
    if let Err(e) = crate::core::access::AccessRules::new(config.access.clone()) {
        problems.push(e.to_string());
    }
    if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(&config.logging.level) {
        problems.push(format!(
            "logging.level = {:?} is not a valid filter directive: {e}",
            config.logging.level
        ));
    }
    problems
}

fn listener(config: &Config, problems: &mut Vec<String>) {
    let listener = &config.listener;
    if listener.address.trim().is_empty() {
        problems.push("listener.address must not be empty".to_owned());
    }
    if listener.max_frame_size < MIN_MAX_FRAME_SIZE {
        problems.push(format!(
            "listener.max-frame-size = {}: must be at least {MIN_MAX_FRAME_SIZE}, the smallest AMQP allows",
            listener.max_frame_size
        ));
    }
    // Open's idle-time-out is a uint of milliseconds.
    if u32::try_from(listener.idle_timeout.as_millis()).is_err() {
        problems.push(format!(
            "listener.idle-timeout = {:?}: must be at most {} ms, the largest AMQP can announce",
            listener.idle_timeout,
            u32::MAX
        ));
    }
    if listener.handshake_timeout.is_zero() {
        problems.push(
            "listener.handshake-timeout must be more than 0, or idle sockets could hold connection slots forever"
                .to_owned(),
        );
    }
}

fn tls(config: &Config, problems: &mut Vec<String>) {
    let tls = &config.tls;
    if !tls.enabled() {
        if tls.client_auth != ClientAuth::None || !tls.client_ca.is_empty() || tls.required {
            problems.push(
                "tls.client-auth, tls.client-ca and tls.required need tls.cert and tls.key"
                    .to_owned(),
            );
        }
        return;
    }
    if tls.cert.is_empty() || tls.key.is_empty() {
        problems.push("tls.cert and tls.key go together: set both, or neither".to_owned());
    }
    if tls.client_auth != ClientAuth::None && tls.client_ca.is_empty() {
        problems.push(
            "tls.client-auth needs tls.client-ca, the authorities that sign client certificates"
                .to_owned(),
        );
    }
    if tls.client_auth == ClientAuth::None && !tls.client_ca.is_empty() {
        problems.push(
            "tls.client-ca is set but tls.client-auth = \"none\": set it to \"optional\" or \"required\""
                .to_owned(),
        );
    }
    if tls.port != 0 && tls.port == config.listener.port && tls.address.is_empty() {
        problems.push(format!(
            "tls.port = {} is the [listener] port; the amqps listener needs its own",
            tls.port
        ));
    }
}

fn users(config: &Config, problems: &mut Vec<String>) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (index, user) in config.users.iter().enumerate() {
        if user.name.is_empty() {
            problems.push(format!("users[{index}].name must not be empty"));
        } else if let Some(first) = seen.insert(&user.name, index) {
            problems.push(format!(
                "users[{index}]: user `{}` is already defined by users[{first}]",
                user.name
            ));
        }
        if let Err(e) = ScramCredential::parse(&user.password) {
            problems.push(format!(
                "users[{index}].password (user `{}`): {e}; make one with `ordo hash-password`",
                user.name
            ));
        }
    }
    let certificates = config.tls.enabled() && config.tls.client_auth != ClientAuth::None;
    if !config.sasl.allow_anonymous && config.users.is_empty() && !certificates {
        problems.push(
            "sasl.allow-anonymous = false, no [[users]] and no TLS client certificates: no client could ever connect"
                .to_owned(),
        );
    }
}

fn limits(config: &Config, problems: &mut Vec<String>) {
    let limits = &config.limits;
    if limits.max_message_size == 0 {
        problems.push("limits.max-message-size must be at least 1".to_owned());
    }
    if limits.max_links_per_session == 0 {
        problems.push(
            "limits.max-links-per-session must be at least 1, or no client could attach a link"
                .to_owned(),
        );
    }
    if limits.producer_credit == 0 {
        problems.push(
            "limits.producer-credit must be at least 1, or no producer could ever send".to_owned(),
        );
    }
    if limits.max_address_length < 3 {
        problems.push(
            "limits.max-address-length must be at least 3, or the DLQ could not be named"
                .to_owned(),
        );
    }
}

fn patterns(config: &Config, problems: &mut Vec<String>) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (index, queue) in config.queues.iter().enumerate() {
        let at = format!("queues[{index}] (pattern {:?})", queue.pattern);
        if let Some(problem) = pattern_problem(&queue.pattern) {
            problems.push(format!("{at}: {problem}"));
        } else if let Some(first) = seen.insert(&queue.pattern, index) {
            problems.push(format!(
                "{at}: queues[{first}] has the same pattern, so this entry would never be used"
            ));
        }
        for problem in queue.settings.problems() {
            problems.push(format!("{at}: {problem}"));
        }
    }
    for (index, topic) in config.topics.iter().enumerate() {
        if let Some(problem) = pattern_problem(&topic.pattern) {
            problems.push(format!(
                "topics[{index}] (pattern {:?}): {problem}",
                topic.pattern
            ));
        }
    }
}
