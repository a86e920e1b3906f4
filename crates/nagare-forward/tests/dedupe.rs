//! Resend deduplication across connections (issue 10): a message resent with the same `chunk`
//! and the same payload after it was committed is acked again and not stored twice; the same
//! id with another payload is new data; a message whose commit failed is new work when resent.

mod common;

use common::*;
use std::time::Duration;

const V04: &str = "94aa6170702e616363657373d70055ece6f8075bcd1581a76d657373616765a568656c6c6f81a56368756e6bb841414543417751464267634943516f4c4441304f44773d3d";
const V04_ACK: &str = "81a361636bb841414543417751464267634943516f4c4441304f44773d3d";

#[tokio::test]
async fn a_resend_on_a_new_connection_is_acked_and_not_stored_twice() {
    let srv = start(cfg("dd-resend")).await;
    for _ in 0..3 {
        let mut c = srv.connect().await;
        send(&mut c, &h(V04)).await;
        expect_reply(&mut c, &h(V04_ACK)).await;
    }
    assert_eq!(srv.events(1).await.len(), 1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(srv.sink.event_count(), 1);
    assert_eq!(srv.stats.resends_deduplicated.get(), 2);
    assert_eq!(srv.stats.acks_sent.get(), 3);
}

#[tokio::test]
async fn the_same_id_with_another_payload_is_new_data() {
    let srv = start(cfg("dd-newpayload")).await;
    let mut c = srv.connect().await;
    send(&mut c, &h(V04)).await;
    expect_reply(&mut c, &h(V04_ACK)).await;
    // V04 with "hello" changed to "hellp": same chunk id, different payload.
    let other = V04.replace("68656c6c6f", "68656c6c70");
    send(&mut c, &h(&other)).await;
    expect_reply(&mut c, &h(V04_ACK)).await;
    assert_eq!(srv.events(2).await.len(), 2);
    assert_eq!(srv.stats.resends_deduplicated.get(), 0);
}

#[tokio::test]
async fn a_chunk_whose_commit_failed_is_accepted_when_resent() {
    let srv = start(cfg("dd-failed")).await;
    srv.sink.set_refuse(true);
    let mut c = srv.connect().await;
    send(&mut c, &h(V04)).await;
    expect_closed_silently(&mut c).await;
    srv.sink.set_refuse(false);
    let mut c = srv.connect().await;
    send(&mut c, &h(V04)).await;
    expect_reply(&mut c, &h(V04_ACK)).await;
    assert_eq!(srv.events(1).await.len(), 1);
    assert_eq!(srv.stats.resends_deduplicated.get(), 0);
}

#[tokio::test]
async fn after_the_window_or_past_the_count_bound_a_repeat_is_accepted() {
    let mut config = cfg("dd-window");
    config.dedupe_window = Duration::from_millis(200);
    let srv = start(config).await;
    let mut c = srv.connect().await;
    send(&mut c, &h(V04)).await;
    expect_reply(&mut c, &h(V04_ACK)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    send(&mut c, &h(V04)).await;
    expect_reply(&mut c, &h(V04_ACK)).await;
    assert_eq!(srv.events(2).await.len(), 2);

    let mut config = cfg("dd-count");
    config.dedupe_max_entries = 1;
    let srv = start(config).await;
    let mut c = srv.connect().await;
    send(&mut c, &h(V04)).await;
    expect_reply(&mut c, &h(V04_ACK)).await;
    // A different chunk pushes V04's pair out of the one-entry cache.
    let other_chunk = V04.replace("41414543", "42414543");
    send(&mut c, &h(&other_chunk)).await;
    let _ = read_object(&mut c, &mut bytes::BytesMut::new()).await;
    send(&mut c, &h(V04)).await;
    expect_reply(&mut c, &h(V04_ACK)).await;
    assert_eq!(srv.events(3).await.len(), 3);
}

#[tokio::test]
async fn messages_without_chunk_are_never_deduplicated() {
    let srv = start(cfg("dd-nochunk")).await;
    let v01 = "93aa6170702e616363657373ce55ece6f881a76d657373616765a568656c6c6f";
    let mut c = srv.connect().await;
    send(&mut c, &h(v01)).await;
    send(&mut c, &h(v01)).await;
    assert_eq!(srv.events(2).await.len(), 2);
}

/// A sink that takes a while to commit, so a copy can arrive during the commit.
struct SlowSink(std::sync::Arc<nagare_core::sink::MemorySink>);

#[async_trait::async_trait]
impl nagare_core::EventSink for SlowSink {
    async fn emit(
        &self,
        stream: nagare_core::EventStream,
    ) -> Result<nagare_core::ack::Committed, nagare_core::EmitError> {
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.0.emit(stream).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_arriving_while_the_first_is_being_committed_is_stored_once() {
    use nagare_forward::server::InForward;
    let srv = InForward::bind(cfg("dd-race")).await.unwrap();
    let addr = srv.local_addr().unwrap();
    let stats = srv.stats().clone();
    let mem = nagare_core::sink::MemorySink::new();
    let (_t, sd) = nagare_core::shutdown::channel();
    tokio::spawn(srv.run(std::sync::Arc::new(SlowSink(mem.clone())), sd));
    let mut a = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut b = tokio::net::TcpStream::connect(addr).await.unwrap();
    send(&mut a, &h(V04)).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    send(&mut b, &h(V04)).await;
    expect_reply(&mut a, &h(V04_ACK)).await;
    expect_reply(&mut b, &h(V04_ACK)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(mem.event_count(), 1, "stored twice");
    assert_eq!(stats.resends_deduplicated.get(), 1);
}

/// Two copies of one message in a single write: the second is a duplicate of the first, so its
/// ack follows the first's commit. When the pipeline refuses, neither is acked (an ack for the
/// copy would make the client drop data that was never stored).
#[tokio::test]
async fn a_copy_in_the_same_read_is_not_acked_when_the_original_is_refused() {
    let srv = start(cfg("dd-same-read-refused")).await;
    srv.sink.set_refuse(true);
    let mut c = srv.connect().await;
    let mut both = h(V04);
    both.extend(h(V04));
    send(&mut c, &both).await;
    expect_closed_silently(&mut c).await;
    counter_is("acks_withheld", &srv.stats.acks_withheld, 2).await;
    counter_is("closed refused", &srv.closed("refused"), 1).await;
    assert_eq!(srv.stats.acks_sent.get(), 0);
    assert_eq!(srv.sink.event_count(), 0);

    // Accepted again: stored once, both copies acked in order.
    srv.sink.set_refuse(false);
    let mut c = srv.connect().await;
    send(&mut c, &both).await;
    let mut want = h(V04_ACK);
    want.extend(h(V04_ACK));
    expect_reply(&mut c, &want).await;
    assert_eq!(srv.events(1).await.len(), 1);
    assert_eq!(srv.stats.acks_sent.get(), 2);
    srv.stop().await;
}
