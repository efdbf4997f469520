//! `ordo send` and `ordo receive`: small tools for users, like qpid-send and
//! qpid-receive.

use std::io::Write;
use std::time::Duration;

use crate::amqp::client::{ClientConfig, ClientError};
use crate::amqp::tool_links::{ToolConsumer, ToolProducer};

/// Sends `count` messages whose data-section body is `body` (with `{n}`
/// replaced by the message number); returns how many were accepted.
pub async fn send(
    url: &str,
    address: &str,
    body: &str,
    count: u64,
    durable: bool,
) -> Result<u64, ClientError> {
    let config = ClientConfig::from_url(url)?;
    let mut producer = ToolProducer::open(&config, address, false).await?;
    let mut n = 0;
    while n < count {
        let text = body.replace("{n}", &n.to_string());
        if producer.try_send(text.as_bytes(), durable, None) {
            n += 1;
            continue;
        }
        producer.flush().await?;
        producer.poll(Duration::from_millis(100)).await?;
    }
    producer.flush().await?;
    while producer.in_flight() > 0 {
        producer.poll(Duration::from_millis(100)).await?;
    }
    let counts = producer.counts;
    producer.close().await?;
    if counts.refused > 0 {
        return Err(ClientError::Refused(format!(
            "{} of {} messages were refused",
            counts.refused, counts.sent
        )));
    }
    Ok(counts.accepted)
}

/// Receives up to `count` messages (0: until `timeout` passes with none),
/// writes each body as a line to `out`, accepts them; returns how many came.
pub async fn receive(
    url: &str,
    address: &str,
    count: u64,
    timeout: Duration,
    out: &mut impl Write,
) -> Result<u64, ClientError> {
    let config = ClientConfig::from_url(url)?;
    let credit = if count > 0 {
        count.min(1000) as u32
    } else {
        1000
    };
    let mut consumer = ToolConsumer::open(&config, address, credit, false).await?;
    let mut received = 0u64;
    loop {
        let mut lines = Vec::new();
        let n = consumer
            .recv_batch(timeout, |body| {
                lines.push(String::from_utf8_lossy(body).into_owned())
            })
            .await?;
        for line in lines {
            writeln!(out, "{line}").map_err(ClientError::Io)?;
        }
        received += n as u64;
        if n == 0 || (count > 0 && received >= count) {
            break;
        }
        if count > 0 {
            consumer.set_window((count - received).min(1000) as u32);
        }
    }
    consumer.close().await?;
    Ok(received)
}
