//! What one change writes to Redis: the record under its key (sealed, [`super::trust`]), its
//! TTL, and the event on the channel, in one atomic pipeline. A change that went out is
//! marked ([`Target::mark`]) as known to Redis.

use super::{
    Cluster, ClusterError,
    apply::Target,
    schema::{CHANNEL, Event, Op, USERS_KEY, ban_key, list_key, location_key, unix_ms, user_field},
    trust,
};

/// Write one change to Redis and publish it; on failure the change comes back.
pub(super) async fn send(
    c: &Cluster,
    conn: &mut redis::aio::ConnectionManager,
    target: &Target,
    op: Op,
) -> Result<(), (Op, ClusterError)> {
    let kind = op.kind();
    tracing::debug!(kind, "cluster: pushing");
    let ev = Event {
        node: c.node.clone(),
        sent_ms: unix_ms(),
        op,
    };
    let Ok(json) = serde_json::to_string(&ev) else {
        return Ok(());
    };
    let mut p = redis::pipe();
    p.atomic();
    if !stage(c, &mut p, &ev, &json) {
        return Ok(());
    }
    p.publish(CHANNEL, c.trust.seal(&trust::Place::event(), &json))
        .ignore();
    match p.query_async::<()>(conn).await {
        Ok(()) => {
            c.metrics.event(kind, "out");
            match &ev.op {
                Op::Ban { ban } => target.mark(ban.ip, true),
                Op::Unban { ip } => target.mark(*ip, false),
                _ => {}
            }
            Ok(())
        }
        Err(e) => Err((ev.op, e.into())),
    }
}

/// Put one change's write to its key (sealed, [`trust`]) into `p`; false when there is
/// nothing to share (expired already).
fn stage(c: &Cluster, p: &mut redis::Pipeline, ev: &Event, json: &str) -> bool {
    let t = &c.trust;
    match &ev.op {
        Op::Ban { ban } => {
            let now = crate::clock::unix_now();
            match ban.expires_unix {
                Some(end) if end <= now => {
                    // Already over: nothing to share.
                    return false;
                }
                Some(end) => {
                    let v = t.seal(&trust::Place::ban(ban.ip), json);
                    p.set_ex(ban_key(ban.ip), v, end - now).ignore()
                }
                None => p
                    .set(ban_key(ban.ip), t.seal(&trust::Place::ban(ban.ip), json))
                    .ignore(),
            };
        }
        Op::Unban { ip } => {
            p.del(ban_key(*ip)).ignore();
        }
        Op::ListAdd { list, net } => {
            let by = serde_json::json!({ "node": c.node }).to_string();
            let v = t.seal(&trust::Place::list(*list, net), &by);
            p.hset(list_key(*list), net.to_string(), v).ignore();
        }
        Op::ListDel { list, net } => {
            p.hdel(list_key(*list), net.to_string()).ignore();
        }
        Op::UserAdd { user } => {
            // Hashes only leave the node (the CLI sends no password; this makes sure).
            let mut user = user.clone();
            user.password = None;
            let Ok(u) = serde_json::to_string(&user) else {
                return false;
            };
            let v = t.seal(&trust::Place::user(&user.user, &user.domain), &u);
            p.hset(USERS_KEY, user_field(&user.user, &user.domain), v)
                .ignore();
        }
        Op::UserDel { user, domain } => {
            p.hdel(USERS_KEY, user_field(user, domain)).ignore();
        }
        // A feed's load is written with its event by `super::feeds`, never queued here.
        Op::FeedLoad { .. } => return false,
        Op::Location { change } => {
            use crate::registrar::{shared::contact_field, store::Change};
            match change {
                Change::Put { aor, binding } => {
                    let now = crate::clock::unix_now();
                    if binding.expires_unix <= now {
                        return false;
                    }
                    let Ok(b) = serde_json::to_string(binding) else {
                        return false;
                    };
                    let key = location_key(aor);
                    let ttl = binding.expires_unix - now;
                    let v = t.seal(&trust::Place::binding(aor, &binding.contact), &b);
                    p.hset(&key, contact_field(&binding.contact), v).ignore();
                    // The key lives as long as its latest binding (NX: a new key; GT: a
                    // later expiry than the current one).
                    p.cmd("EXPIRE").arg(&key).arg(ttl).arg("NX").ignore();
                    p.cmd("EXPIRE").arg(&key).arg(ttl).arg("GT").ignore();
                }
                Change::Remove { aor, contact } => {
                    p.hdel(location_key(aor), contact_field(contact)).ignore();
                }
                Change::Clear { aor } => {
                    p.del(location_key(aor)).ignore();
                }
            }
        }
    }
    true
}
