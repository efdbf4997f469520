//! A first throughput figure: one producer and one consumer, each on its own
//! connection, 1 KiB messages through one queue, pre-settled and unsettled.
//! Start a broker first (`cargo run --release`), then:
//!
//! ```text
//! cargo run --release --example throughput -- [URL] [COUNT]
//! ```
//!
//! This is a smoke figure with fe2o3-amqp's client, which costs more CPU per
//! message than the broker; the benchmark harness of a later issue measures
//! properly against references.

use std::time::Instant;

use fe2o3_amqp::link::receiver::CreditMode;
use fe2o3_amqp::types::definitions::SenderSettleMode;
use fe2o3_amqp::types::messaging::{Data, Message};
use fe2o3_amqp::types::primitives::Binary;
use fe2o3_amqp::{Connection, Receiver, Sender, Session};

async fn run(url: &str, count: u32, presettled: bool) -> Result<f64, Box<dyn std::error::Error>> {
    let mode = if presettled {
        SenderSettleMode::Settled
    } else {
        SenderSettleMode::Unsettled
    };
    let queue = format!(
        "throughput-{}",
        if presettled {
            "presettled"
        } else {
            "unsettled"
        }
    );
    let mut rc = Connection::open("throughput-receiver", url).await?;
    let mut rs = Session::begin(&mut rc).await?;
    let mut receiver = Receiver::builder()
        .name("receiver")
        .source(queue.as_str())
        .sender_settle_mode(mode.clone())
        .credit_mode(CreditMode::Manual)
        .attach(&mut rs)
        .await?;
    let consumer = tokio::spawn(async move {
        for i in 0..count {
            // fe2o3's automatic credit refills only on dispositions, which a
            // pre-settled link never sends: keep credit up by hand.
            if i % 500 == 0 {
                receiver.set_credit(1000).await?;
            }
            let d = receiver.recv::<Data>().await?;
            if !presettled {
                receiver.accept(&d).await?;
            }
        }
        receiver.close().await?;
        rs.end().await?;
        rc.close().await?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    });
    let mut sc = Connection::open("throughput-sender", url).await?;
    let mut ss = Session::begin(&mut sc).await?;
    let mut sender = Sender::builder()
        .name("sender")
        .target(queue.as_str())
        .sender_settle_mode(mode)
        .attach(&mut ss)
        .await?;
    let body = Binary::from(vec![0x5a; 1024]);
    let started = Instant::now();
    let mut in_flight = Vec::with_capacity(256);
    for _ in 0..count {
        let msg = Message::builder().data(body.clone()).build();
        if presettled {
            sender.send(msg).await?;
        } else {
            in_flight.push(sender.send_batchable(msg).await?);
            if in_flight.len() == 256 {
                for f in in_flight.drain(..) {
                    f.await?;
                }
            }
        }
    }
    for f in in_flight.drain(..) {
        f.await?;
    }
    consumer.await?.map_err(|e| e.to_string())?;
    let rate = f64::from(count) / started.elapsed().as_secs_f64();
    sender.close().await?;
    ss.end().await?;
    sc.close().await?;
    Ok(rate)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "amqp://127.0.0.1:5672".into());
    let count: u32 = args
        .next()
        .map(|c| c.parse())
        .transpose()?
        .unwrap_or(100_000);
    for presettled in [true, false] {
        let rate = run(&url, count, presettled).await?;
        let mode = if presettled {
            "pre-settled"
        } else {
            "unsettled"
        };
        println!("{mode}: {count} x 1 KiB in one queue, 1 producer / 1 consumer: {rate:.0} msg/s");
    }
    Ok(())
}
