//! A request that took effect but whose answer was lost is retried on
//! another endpoint: the retry must not turn into a second, different
//! owner. An acquire sent without an owner hash got one made up by the
//! server on each try, so the first (lost) grant held the lock for nobody
//! and the retry was refused with that ghost as the holder.

mod common;

use common::{cluster_slot, key, runtime, start_cluster};
use locker_client::{AcquireRequest, Client, ClientOptions, LockStatus};
use locker_tests::proxy::Proxy;

#[test]
fn an_acquire_whose_answer_was_lost_is_not_refused_on_retry() {
    let _slot = cluster_slot();
    let c = start_cluster(1);
    let url = c.url(1);
    let deaf = Proxy::start(&c.node(1).client_addr);
    deaf.deaf();
    let rt = runtime();
    rt.block_on(async move {
        let client = Client::new(ClientOptions {
            endpoints: vec![deaf.url(), url.clone()],
            failover_timeout_ms: 4_000,
            ..Default::default()
        })
        .expect("client");
        let k = key("lost-answer/");
        let r = client
            .acquire(
                &k,
                &AcquireRequest {
                    ttl_ms: Some(60_000),
                    ..Default::default()
                },
            )
            .await
            .expect("acquire");
        assert_eq!(
            r.status,
            LockStatus::Success,
            "the retry was refused: the lost first try holds the lock as {:?}",
            r.lock.map(|l| l.owner_hash)
        );
    });
}
