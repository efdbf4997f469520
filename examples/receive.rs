//! Receives messages from a queue and accepts each one.
//!
//! ```text
//! cargo run --example receive -- [URL] [ADDRESS] [COUNT]
//! cargo run --example receive -- amqp://127.0.0.1:5672 orders 10
//! ```

use fe2o3_amqp::{Connection, Receiver, Session};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "amqp://127.0.0.1:5672".into());
    let address = args.next().unwrap_or_else(|| "examples".into());
    let count: u32 = args.next().map(|c| c.parse()).transpose()?.unwrap_or(10);

    let mut connection = Connection::open("ordo-example-receive", url.as_str()).await?;
    let mut session = Session::begin(&mut connection).await?;
    let mut receiver = Receiver::attach(&mut session, "example-receiver", address.as_str()).await?;
    for _ in 0..count {
        let delivery = receiver.recv::<String>().await?;
        println!("received: {}", delivery.body());
        receiver.accept(&delivery).await?;
    }
    receiver.close().await?;
    session.end().await?;
    connection.close().await?;
    Ok(())
}
