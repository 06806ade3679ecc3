//! This node's heartbeat (`sipfw:node:<name>`, alive for [`HEARTBEAT_TTL`], written every
//! [`HEARTBEAT_EVERY`]), the nodes `status` lists, and the end of a session when the
//! Sentinels name another primary.

use std::time::Duration;

use futures_util::StreamExt as _;
use redis::AsyncCommands as _;
use tracing::info;

use super::{
    Cluster, ClusterError,
    schema::{NODE_KEYS, NODE_PREFIX, node_key, unix_ms},
};

/// How long a node is listed after its last heartbeat.
pub const HEARTBEAT_TTL: Duration = Duration::from_secs(15);
/// How often the heartbeat is written (and the marks of cluster bans).
pub(super) const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);

/// This node's heartbeat, and the nodes seen recently. Under Sentinels, the session ends
/// when they name another primary than `client`'s (a failover): [`super::run`] reconnects there.
pub(super) async fn heartbeat(
    c: &Cluster,
    conn: &mut redis::aio::ConnectionManager,
    client: &redis::Client,
) -> Result<(), ClusterError> {
    if let Some(now) = c.endpoint.moved(client).await {
        info!(
            primary = now,
            "cluster: the Sentinels moved the primary; reconnecting"
        );
        return Err(ClusterError::PrimaryMoved(now));
    }
    let _: () = conn
        .set_ex(node_key(&c.node), unix_ms(), HEARTBEAT_TTL.as_secs())
        .await?;
    let mut nodes = Vec::new();
    {
        let mut it = conn.scan_match::<_, String>(NODE_KEYS).await?;
        while let Some(k) = it.next().await {
            if let Some(n) = k?.strip_prefix(NODE_PREFIX) {
                nodes.push(n.to_string());
            }
            if nodes.len() >= 1024 {
                break;
            }
        }
    }
    nodes.sort();
    nodes.dedup();
    if let Ok(mut v) = c.view.lock() {
        v.nodes = nodes;
    }
    Ok(())
}
