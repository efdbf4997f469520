//! Sends messages to a queue and waits for each to be accepted.
//!
//! ```text
//! cargo run --example send -- [URL] [ADDRESS] [COUNT]
//! cargo run --example send -- amqp://127.0.0.1:5672 orders 10
//! ```

use fe2o3_amqp::types::messaging::Outcome;
use fe2o3_amqp::{Connection, Sender, Session};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "amqp://127.0.0.1:5672".into());
    let address = args.next().unwrap_or_else(|| "examples".into());
    let count: u32 = args.next().map(|c| c.parse()).transpose()?.unwrap_or(10);

    let mut connection = Connection::open("ordo-example-send", url.as_str()).await?;
    let mut session = Session::begin(&mut connection).await?;
    let mut sender = Sender::attach(&mut session, "example-sender", address.as_str()).await?;
    for i in 0..count {
        match sender.send(format!("message {i}")).await? {
            Outcome::Accepted(_) => println!("sent message {i}"),
            other => println!("message {i} not accepted: {other:?}"),
        }
    }
    sender.close().await?;
    session.end().await?;
    connection.close().await?;
    Ok(())
}
