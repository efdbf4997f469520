//! Engine tests of link behaviour: aborts, late settlement, echo, link names.

use super::*;

#[test]
fn aborted_delivery_is_discarded() {
    let mut peer = Peer::new();
    peer.setup("abort", 65536, 10_000);
    let msg = message("never");
    let mut input = BytesMut::new();
    write_frame(&mut input, false, 0, &transfer(0, Some(0), true), &msg[..3]);
    let mut abort = transfer(0, Some(0), false);
    abort.aborted = true;
    write_frame(&mut input, false, 0, &abort, &[]);
    write_frame(
        &mut input,
        false,
        0,
        &transfer(0, Some(1), false),
        &message("kept"),
    );
    peer.conn.handle_input(&mut input, peer.now);
    peer.recv();
    peer.send(0, &credit(1, 0, 10, false));
    let got: Vec<Bytes> = deliveries(&peer.recv()).into_iter().map(|d| d.1).collect();
    assert_eq!(got, vec![message("kept")]);
}

#[test]
fn settled_on_a_later_frame_needs_no_disposition() {
    let mut peer = Peer::new();
    peer.setup("late-settle", 65536, 10_000);
    let msg = message("x");
    let mut input = BytesMut::new();
    write_frame(&mut input, false, 0, &transfer(0, Some(0), true), &msg[..2]);
    let mut last = transfer(0, None, false);
    last.settled = Some(true);
    write_frame(&mut input, false, 0, &last, &msg[2..]);
    peer.conn.handle_input(&mut input, peer.now);
    let frames = peer.recv();
    assert!(
        !frames
            .iter()
            .any(|f| matches!(f.body, FrameBody::Disposition(_))),
        "{frames:?}"
    );
    assert_eq!(
        peer.broker
            .existing_queue("late-settle")
            .unwrap()
            .stats()
            .depth,
        1
    );
}

#[test]
fn echo_on_a_consumer_link_reports_its_state() {
    let mut peer = Peer::new();
    peer.setup("echo", 65536, 10_000);
    peer.publish(0, &message("a"));
    peer.recv();
    let mut f = credit(1, 0, 3, false);
    f.echo = true;
    peer.send(0, &f);
    let frames = peer.recv();
    assert_eq!(deliveries(&frames).len(), 1);
    let flow = frames
        .iter()
        .find_map(|f| match &f.body {
            FrameBody::Flow(fl) if fl.handle == Some(1.into()) => Some(fl.clone()),
            _ => None,
        })
        .expect("echoed flow");
    assert_eq!((flow.delivery_count, flow.link_credit), (Some(1), Some(2)));
}

#[test]
fn a_sender_and_a_receiver_share_a_link_name_but_two_receivers_do_not() {
    let mut peer = Peer::new();
    peer.setup("names", 65536, 10_000);
    // "link" is attached in both directions already; a second receiver named
    // "link" in the same session is refused.
    peer.send(0, &attach("link", 5, Role::Receiver, "names"));
    let frames = peer.recv();
    assert!(
        matches!(&frames[1].body, FrameBody::Detach(d) if d.error.is_some()),
        "{frames:?}"
    );
}
