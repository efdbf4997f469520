//! Engine tests of paged-out bodies: they are read by the store's loader,
//! never under a queue's lock nor by the connection, so while a read is
//! slow other queues and other links keep flowing, and a link's deliveries
//! keep their order. The store's reads are held at a gate the test opens.

use std::sync::{Condvar, Mutex};

use fe2o3_amqp::types::messaging::Rejected;

use super::*;
use crate::core::Persistence;
use crate::store::{
    Journal, JournalOptions, MemoryStore, Record, Store, StoreError, StoredMessage,
};

/// A store whose reads wait until the gate is open.
#[derive(Debug, Default)]
struct GatedStore {
    /// What it holds.
    inner: MemoryStore,
    /// Open or not, and reads waiting.
    gate: Mutex<(bool, usize)>,
    /// Signals the gate opening and reads arriving.
    moved: Condvar,
}

impl GatedStore {
    /// Waits until `n` reads are waiting at the gate.
    fn wait_for_readers(&self, n: usize) {
        let mut gate = self.gate.lock().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while gate.1 < n {
            assert!(Instant::now() < deadline, "no read reached the store");
            gate = self
                .moved
                .wait_timeout(gate, Duration::from_millis(10))
                .unwrap()
                .0;
        }
    }

    /// Opens the gate for good.
    fn open(&self) {
        self.gate.lock().unwrap().0 = true;
        self.moved.notify_all();
    }
}

impl Store for GatedStore {
    fn write(&self, batch: &[Record]) -> Result<(), StoreError> {
        self.inner.write(batch)
    }
    fn sync(&self) -> Result<(), StoreError> {
        self.inner.sync()
    }
    fn flush(&self) -> Result<(), StoreError> {
        self.inner.flush()
    }
    fn queues(&self) -> Result<Vec<(u64, Bytes)>, StoreError> {
        self.inner.queues()
    }
    fn messages(&self, queue: u64, visit: &mut dyn FnMut(StoredMessage)) -> Result<(), StoreError> {
        self.inner.messages(queue, visit)
    }
    fn read(&self, queue: u64, seq: u64) -> Result<Option<Bytes>, StoreError> {
        let mut gate = self.gate.lock().unwrap();
        gate.1 += 1;
        self.moved.notify_all();
        while !gate.0 {
            gate = self.moved.wait(gate).unwrap();
        }
        drop(gate);
        self.inner.read(queue, seq)
    }
    fn duplicates(&self, queue: u64) -> Result<Vec<(Bytes, u64)>, StoreError> {
        self.inner.duplicates(queue)
    }
}

/// A broker whose durable messages all page out, over `store`.
fn paging_broker(store: &Arc<GatedStore>) -> Arc<Broker> {
    let journal = Journal::start(
        Arc::clone(store) as Arc<dyn Store>,
        JournalOptions::default(),
    );
    Broker::open(BrokerOptions {
        persistence: Some(Persistence::new(journal, 1)),
        ..BrokerOptions::default()
    })
    .expect("open")
    .0
}

/// A peer on `broker`.
fn peer_on(broker: &Arc<Broker>) -> Peer {
    let now = Instant::now();
    let conn = Connection::new(Arc::new(EngineConfig::default()), Arc::clone(broker), now);
    Peer {
        conn,
        broker: Arc::clone(broker),
        now,
    }
}

/// A durable message with `text` as its body.
fn durable(text: &str) -> Vec<u8> {
    let header = serde_amqp::to_vec(&Header {
        durable: true,
        ..Default::default()
    })
    .unwrap();
    [header, message(text)].concat()
}

/// Pumps until `n` deliveries came (the loader works on its own threads).
fn deliveries_within(peer: &mut Peer, n: usize) -> Vec<(u32, Bytes)> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = Vec::new();
    while got.len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} deliveries",
            got.len()
        );
        peer.conn.pump(peer.now);
        got.extend(deliveries(&peer.recv()));
        std::thread::sleep(Duration::from_millis(5));
    }
    got
}

/// The body text of a delivered payload (its amqp-value string).
fn text_of(payload: &Bytes) -> String {
    let at = payload
        .windows(3)
        .rposition(|w| w == [0x00, 0x53, 0x77])
        .expect("an amqp-value section");
    let value: AmqpValue<String> = serde_amqp::from_slice(&payload[at..]).unwrap();
    value.0
}

#[test]
fn a_slow_read_holds_up_neither_other_queues_nor_other_links() {
    let store = Arc::new(GatedStore::default());
    let broker = paging_broker(&store);
    let mut peer = peer_on(&broker);
    peer.setup("paged", 65536, 10_000);
    for (id, text) in ["first", "second", "third"].into_iter().enumerate() {
        peer.publish(id as u32, &durable(text));
    }
    peer.recv();
    // The consumer of `paged` asks for everything: its bodies are paged out,
    // and the reads wait at the gate.
    peer.send(0, &credit(1, 0, 10, false));
    store.wait_for_readers(1);
    assert!(
        deliveries(&peer.recv()).is_empty(),
        "nothing before its body"
    );
    // Meanwhile, on the same connection, another queue flows...
    peer.send(0, &attach("other-in", 2, Role::Sender, "other"));
    peer.send(0, &attach("other-out", 3, Role::Receiver, "other"));
    peer.recv();
    peer.send_with_payload(0, &transfer(2, Some(3), false), &message("meanwhile"));
    peer.send(0, &credit(3, 0, 10, false));
    let got = deliveries(&peer.recv());
    assert_eq!(got.len(), 1);
    assert_eq!(text_of(&got[0].1), "meanwhile");
    // ...and so does `paged` itself for its producers: its lock is free
    // (a durable message is accepted once the journal has it).
    peer.publish(4, &durable("fourth"));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        peer.conn.pump(peer.now);
        let accepted = peer.recv().into_iter().any(|f| {
            matches!(&f.body, FrameBody::Disposition(d)
                if d.first == 4 && matches!(d.state, Some(DeliveryState::Accepted(_))))
        });
        if accepted {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the fourth message was not taken"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // Once the store answers, the link gets its messages in their order.
    store.open();
    let got = deliveries_within(&mut peer, 4);
    let texts: Vec<String> = got.iter().map(|(_, p)| text_of(p)).collect();
    assert_eq!(texts, ["first", "second", "third", "fourth"]);
    assert_eq!(peer.conn.loads_pending(), 0);
}

#[test]
fn a_rejected_paged_out_message_reaches_the_dead_letter_queue_whole() {
    let store = Arc::new(GatedStore::default());
    store.open();
    let broker = paging_broker(&store);
    let mut peer = peer_on(&broker);
    peer.setup("reject-paged", 65536, 10_000);
    peer.publish(0, &durable("keep my body"));
    peer.recv();
    peer.send(0, &credit(1, 0, 1, false));
    let (id, _) = deliveries_within(&mut peer, 1)[0].clone();
    peer.send(
        0,
        &settle(id, id, DeliveryState::Rejected(Rejected { error: None })),
    );
    peer.recv();
    peer.send(0, &attach("dlq", 2, Role::Receiver, "DLQ"));
    peer.send(0, &credit(2, 0, 1, false));
    let got = deliveries_within(&mut peer, 1);
    assert_eq!(text_of(&got[0].1), "keep my body");
    let raw = String::from_utf8_lossy(&got[0].1).into_owned();
    assert!(raw.contains("x-opt-dead-letter-reason"), "{raw}");
}

#[test]
fn a_presettled_consumer_gets_paged_out_bodies_and_they_leave_the_store_after() {
    let store = Arc::new(GatedStore::default());
    let broker = paging_broker(&store);
    let mut peer = peer_on(&broker);
    peer.open(65536);
    peer.begin(0, 10_000);
    peer.send(0, &attach("in", 0, Role::Sender, "presettled"));
    peer.recv();
    for (id, text) in ["a", "b"].into_iter().enumerate() {
        peer.publish(id as u32, &durable(text));
    }
    let mut out = attach("out", 1, Role::Receiver, "presettled");
    out.snd_settle_mode = SenderSettleMode::Settled;
    peer.send(0, &out);
    peer.send(0, &credit(1, 0, 10, false));
    store.wait_for_readers(1);
    // Read, not yet removed: the removal waits for the read.
    let stored = |store: &GatedStore| {
        let mut n = 0;
        for (queue, _) in store.queues().unwrap() {
            store.messages(queue, &mut |_| n += 1).unwrap();
        }
        n
    };
    assert_eq!(stored(&store), 2);
    store.open();
    let got = deliveries_within(&mut peer, 2);
    let texts: Vec<String> = got.iter().map(|(_, p)| text_of(p)).collect();
    assert_eq!(texts, ["a", "b"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while stored(&store) > 0 {
        assert!(
            Instant::now() < deadline,
            "the delivered messages stay stored"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}
