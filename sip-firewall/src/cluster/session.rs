//! One connection with Redis, from the secret check to the loss of the connection: connect
//! (the fingerprints of [`super::trust::Trust::join`]), subscribe before anything is loaded,
//! push what waited, load the full set, then follow the channel, send this node's changes
//! and beat (and with it take or renew the threat feeds' leases, [`super::feeds`]). Events
//! from other nodes are taken here ([`super::trust::Trust::event`]) and applied.

use std::time::Duration;

use futures_util::StreamExt as _;
use redis::AsyncCommands as _;
use tracing::{error, info};

use super::{
    Cluster, ClusterError,
    apply::Target,
    endpoint, feeds,
    heartbeat::{HEARTBEAT_EVERY, heartbeat},
    load::load,
    outbox::unspool,
    schema::{CHANNEL, FINGERPRINT_KEY, Op, unix_ms},
    set_connected, trust,
    write::send,
};

/// A command connection to the primary (looked up through the Sentinels, if any) and its
/// client, after the secret check: a node with another secret takes nothing and gives
/// nothing.
pub(super) async fn connect(
    c: &Cluster,
) -> Result<(redis::aio::ConnectionManager, redis::Client), ClusterError> {
    let client = c.endpoint.primary().await?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_response_timeout(Some(Duration::from_secs(2)))
        .set_number_of_retries(1);
    let mut conn = redis::aio::ConnectionManager::new_with_config(client.clone(), config).await?;
    let ours = c.trust.fingerprints();
    let set: bool = redis::cmd("SET")
        .arg(FINGERPRINT_KEY)
        .arg(&ours)
        .arg("NX")
        .query_async::<Option<String>>(&mut conn)
        .await?
        .is_some();
    if !set {
        let theirs: Option<String> = conn.get(FINGERPRINT_KEY).await?;
        match c.trust.join(theirs.as_deref().unwrap_or_default()) {
            trust::Join::Keep => {}
            trust::Join::Write => {
                info!("cluster: the secrets' fingerprints in Redis follow this node's roll");
                let _: () = conn.set(FINGERPRINT_KEY, &ours).await?;
            }
            trust::Join::Refuse => {
                error!("{}", ClusterError::SecretMismatch);
                return Err(ClusterError::SecretMismatch);
            }
        }
    }
    if let Ok(mut v) = c.view.lock() {
        v.redis = endpoint::address(&client);
    }
    Ok((conn, client))
}

/// One connection's life: Ok(()) on shutdown, Err when Redis went away.
pub(super) async fn session(
    c: &mut Cluster,
    target: &Target,
    pending: &mut Option<Op>,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<(), ClusterError> {
    let (mut conn, client) = connect(c).await?;
    // Subscribed before the set is loaded: what is published meanwhile waits here.
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(CHANNEL).await?;
    let mut messages = pubsub.into_on_message();

    // What was queued while cut off goes out first (the state database's outbox, oldest
    // first, then memory), then the full set comes in.
    unspool(c, &mut conn, target).await?;
    if let Some(op) = pending.take() {
        push(c, &mut conn, target, op, pending).await?;
    }
    while let Ok(op) = c.rx.try_recv() {
        push(c, &mut conn, target, op, pending).await?;
    }
    load(c, &mut conn, target).await?;
    // REGISTERs taken here while the set loaded are queued, not in what was loaded: their
    // bindings go back into the cache the load replaced, then out to Redis.
    while let Ok(op) = c.rx.try_recv() {
        if let Op::Location {
            change: crate::registrar::store::Change::Put { binding, .. },
        } = &op
            && binding.node == c.node
        {
            target.apply(&op);
        }
        push(c, &mut conn, target, op, pending).await?;
    }
    set_connected(c, true);
    info!(node = c.node, "cluster: connected to Redis, state loaded");
    heartbeat(c, &mut conn, &client).await?;
    feeds::lease(c, &mut conn).await?;

    let exchange = c.feeds.as_ref().map(|l| l.exchange.clone());
    let mut beat = tokio::time::interval(HEARTBEAT_EVERY);
    beat.tick().await;
    loop {
        let fetched = crate::feeds::shared::ready(exchange.as_deref().map(|x| &x.out_ready));
        tokio::select! {
            msg = messages.next() => {
                let Some(msg) = msg else {
                    return Err(redis::RedisError::from((redis::ErrorKind::Io, "subscription closed")).into());
                };
                let payload: Vec<u8> = msg.get_payload_bytes().to_vec();
                if let Some(feed) = receive(c, target, &payload) {
                    feeds::pull(c, &mut conn, &feed).await?;
                }
            }
            () = fetched => feeds::write(c, &mut conn).await?,
            op = c.rx.recv() => {
                let Some(op) = op else { return Ok(()) };
                push(c, &mut conn, target, op, pending).await?;
            }
            _ = beat.tick() => {
                target.flush_marks();
                heartbeat(c, &mut conn, &client).await?;
                feeds::lease(c, &mut conn).await?;
            }
            _ = shutdown.changed() => {
                feeds::release(c, &mut conn).await;
                return Ok(());
            }
        }
    }
}

/// A published event from another node: applied when [`trust::Trust::event`] takes it. A
/// feed's new load is read from Redis by the caller: the feed named.
fn receive(c: &Cluster, target: &Target, payload: &[u8]) -> Option<String> {
    let ev = match c.trust.event(payload, unix_ms()) {
        Ok(ev) => ev,
        Err(why) => {
            trust::refuse(&c.metrics, why, "an event");
            return None;
        }
    };
    if ev.node == c.node || !c.config.shares(ev.op.share()) {
        return None;
    }
    let lag = unix_ms().saturating_sub(ev.sent_ms) as f64 / 1000.0;
    c.metrics.lag.set(lag);
    c.metrics.event(ev.op.kind(), "in");
    if let Op::FeedLoad { feed } = ev.op {
        return Some(feed);
    }
    target.apply(&ev.op);
    None
}

/// Write one local change to Redis and publish it. On failure the change is kept in
/// `pending` and goes out first after reconnecting.
async fn push(
    c: &Cluster,
    conn: &mut redis::aio::ConnectionManager,
    target: &Target,
    op: Op,
    pending: &mut Option<Op>,
) -> Result<(), ClusterError> {
    if let Err((op, e)) = send(c, conn, target, op).await {
        *pending = Some(op);
        return Err(e);
    }
    Ok(())
}
