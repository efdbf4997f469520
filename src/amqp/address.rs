//! Parsing of node addresses as clients send them: plain names,
//! `queue://` / `topic://` prefixes, RabbitMQ's `/queues/NAME`, full URLs
//! (`amqp[s]://host[:port]/NAME`, as some clients put the broker's URL in
//! the address), source and target capabilities, and ActiveMQ-style
//! `?key=value` options.

use fe2o3_amqp::types::primitives::{Array, Symbol};

pub use crate::core::NodeKind;

/// A parsed address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeAddress {
    /// Queue or topic, if the address or capabilities say (None: decided
    /// by what exists and the configuration).
    pub kind: Option<NodeKind>,
    /// The node's name, without prefix or options.
    pub name: String,
    /// `key=value` options after `?`, in order.
    pub options: Vec<(String, String)>,
}

/// Why an address cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// Nothing names a node.
    #[error("empty address")]
    Empty,
    /// An option without `=`.
    #[error("malformed option '{0}' (expected key=value)")]
    MalformedOption(String),
}

/// Parses an address, with the link's capabilities deciding the kind when
/// the address has no prefix.
pub fn parse(
    address: &str,
    capabilities: Option<&Array<Symbol>>,
) -> Result<NodeAddress, AddressError> {
    let (path, query) = match address.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (address, None),
    };
    let has = |cap: &str| capabilities.is_some_and(|caps| caps.0.iter().any(|c| c.as_str() == cap));
    // A URL names the broker, then the node: only the node matters here.
    let path = match path
        .strip_prefix("amqp://")
        .or_else(|| path.strip_prefix("amqps://"))
    {
        Some(url) => url.split_once('/').map_or("", |(_, node)| node),
        None => path,
    };
    let (kind, name) = if let Some(rest) = path.strip_prefix("queue://") {
        (Some(NodeKind::Queue), rest)
    } else if let Some(rest) = path.strip_prefix("topic://") {
        (Some(NodeKind::Topic), rest)
    } else if let Some(rest) = path.strip_prefix("/queues/") {
        (Some(NodeKind::Queue), rest)
    } else if has("topic") {
        (Some(NodeKind::Topic), path)
    } else if has("queue") {
        (Some(NodeKind::Queue), path)
    } else {
        (None, path)
    };
    if name.is_empty() {
        return Err(AddressError::Empty);
    }
    let mut options = Vec::new();
    for pair in query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .filter(|p| !p.is_empty())
    {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| AddressError::MalformedOption(pair.to_string()))?;
        options.push((k.to_string(), v.to_string()));
    }
    Ok(NodeAddress {
        kind,
        name: name.to_string(),
        options,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_and_capabilities() {
        assert_eq!(parse("orders", None).unwrap().kind, None);
        let q = parse("queue://orders", None).unwrap();
        assert_eq!((q.kind, q.name.as_str()), (Some(NodeKind::Queue), "orders"));
        let t = parse("topic://prices", None).unwrap();
        assert_eq!((t.kind, t.name.as_str()), (Some(NodeKind::Topic), "prices"));
        assert_eq!(parse("/queues/orders", None).unwrap().name, "orders");
        let caps = Array(vec![Symbol::from("topic")]);
        assert_eq!(
            parse("prices", Some(&caps)).unwrap().kind,
            Some(NodeKind::Topic)
        );
        let caps = Array(vec![Symbol::from("queue")]);
        assert_eq!(
            parse("orders", Some(&caps)).unwrap().kind,
            Some(NodeKind::Queue)
        );
    }

    #[test]
    fn urls_name_their_node() {
        for address in [
            "amqp://127.0.0.1:5672/orders",
            "amqps://broker.example.com/orders",
            "amqps://[::1]:5671/orders",
        ] {
            let a = parse(address, None).unwrap();
            assert_eq!((a.kind, a.name.as_str()), (None, "orders"), "{address}");
        }
        let t = parse("amqp://host/topic://prices?x=1", None).unwrap();
        assert_eq!((t.kind, t.name.as_str()), (Some(NodeKind::Topic), "prices"));
        assert_eq!(t.options, vec![("x".to_string(), "1".to_string())]);
    }

    #[test]
    fn options_are_split() {
        let a = parse("orders?consumer.exclusive=true&consumer.priority=5", None).unwrap();
        assert_eq!(a.name, "orders");
        assert_eq!(
            a.options,
            vec![
                ("consumer.exclusive".to_string(), "true".to_string()),
                ("consumer.priority".to_string(), "5".to_string())
            ]
        );
        assert!(parse("orders?oops", None).is_err());
        assert!(parse("amqp://127.0.0.1:5672", None).is_err());
        assert!(parse("queue://", None).is_err());
    }
}
