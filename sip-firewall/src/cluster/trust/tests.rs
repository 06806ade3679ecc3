use super::*;
use crate::auth::keys::Secret;

fn secret(byte: &str) -> Secret {
    Secret::parse("auth.secret", &byte.repeat(32)).unwrap()
}

fn trust(current: &str, previous: &[&str]) -> Trust {
    let ring = KeyRing::new(
        secret(current),
        previous.iter().map(|p| secret(p)).collect(),
    );
    Trust::new(&ring, &["example.com".to_string()])
}

fn ban_event(ip: &str, sent_ms: u64) -> Event {
    Event {
        node: "edge-a".into(),
        sent_ms,
        op: Op::Ban {
            ban: BanRecord {
                ip: ip.parse().unwrap(),
                reason: "manual: test".into(),
                created_unix: 1,
                expires_unix: None,
            },
        },
    }
}

fn user(identities: &[&str]) -> UserEntry {
    UserEntry::example("mallory", identities)
}

const NOW: u64 = 1_700_000_000_000;

#[test]
fn a_record_verifies_at_its_place_only() {
    let t = trust("11", &[]);
    let ev = serde_json::to_string(&ban_event("192.0.2.1", NOW)).unwrap();
    let at = Place::ban("192.0.2.1".parse().unwrap());
    let sealed = t.seal(&at, &ev);
    assert!(
        sealed.starts_with("sfw1.") && sealed.ends_with(&ev),
        "{sealed}"
    );
    assert_eq!(
        t.ban("sipfw:ban:192.0.2.1", &sealed).unwrap().reason,
        "manual: test"
    );
    // Copied to another address's key: its MAC names the first key.
    assert_eq!(t.ban("sipfw:ban:192.0.2.2", &sealed), Err(Reject::Mac));
    // Without a MAC, or one byte of the body changed.
    assert_eq!(t.ban("sipfw:ban:192.0.2.1", &ev), Err(Reject::Mac));
    let changed = sealed.replace("manual: test", "manual: tesT");
    assert_eq!(t.ban("sipfw:ban:192.0.2.1", &changed), Err(Reject::Mac));
    assert_eq!(t.ban("sipfw:ban:192.0.2.1", "sfw1.zz.{}"), Err(Reject::Mac));
    // Another secret's record.
    let other = trust("22", &[]).seal(&at, &ev);
    assert_eq!(t.ban("sipfw:ban:192.0.2.1", &other), Err(Reject::Mac));
    // Verified, but the body names another address than its key.
    let wrong = t.seal(&Place::ban("192.0.2.2".parse().unwrap()), &ev);
    assert_eq!(t.ban("sipfw:ban:192.0.2.2", &wrong), Err(Reject::Malformed));
}

#[test]
fn list_entries_are_bound_to_their_list_and_their_bound() {
    let t = trust("11", &[]);
    let net: IpNet = "198.51.100.0/24".parse().unwrap();
    let v = t.seal(&Place::list(List::Deny, &net), "{\"node\":\"edge-a\"}");
    assert_eq!(t.list_entry(List::Deny, "198.51.100.0/24", &v), Ok(net));
    // A deny entry moved into the allow list, or to another prefix.
    assert_eq!(
        t.list_entry(List::Allow, "198.51.100.0/24", &v),
        Err(Reject::Mac)
    );
    assert_eq!(
        t.list_entry(List::Deny, "198.51.0.0/16", &v),
        Err(Reject::Mac)
    );
    // What an attacker writes with HSET ... 1.
    assert_eq!(t.list_entry(List::Deny, "0.0.0.0/0", "1"), Err(Reject::Mac));
    // Even sealed (a node with the secret, or --force on one), too wide is refused.
    for wide in ["0.0.0.0/0", "::/0"] {
        let n: IpNet = wide.parse().unwrap();
        let v = t.seal(&Place::list(List::Allow, &n), "{}");
        assert_eq!(t.list_entry(List::Allow, wide, &v), Err(Reject::Prefix));
        let op = Op::ListAdd {
            list: List::Allow,
            net: n,
        };
        assert_eq!(t.check_op(&op), Err(Reject::Prefix));
    }
}

#[test]
fn users_pass_the_config_checks() {
    let t = trust("11", &[]);
    let ok = user(&["tel:+15551234", "sip:+15551234@example.com"]);
    let body = serde_json::to_string(&ok).unwrap();
    let v = t.seal(&Place::user("mallory", "example.com"), &body);
    assert_eq!(t.user("mallory@example.com", &v), Ok(ok));
    // Moved to another user's field.
    assert_eq!(t.user("alice@example.com", &v), Err(Reject::Mac));
    // Sealed for the field it claims, but naming another user inside.
    let v = t.seal(&Place::user("alice", "example.com"), &body);
    assert_eq!(t.user("alice@example.com", &v), Err(Reject::Malformed));
    // A foreign identity, or a foreign domain, even sealed.
    let foreign = user(&["sip:ceo@bank.example"]);
    let v = t.seal(
        &Place::user("mallory", "example.com"),
        &serde_json::to_string(&foreign).unwrap(),
    );
    assert_eq!(t.user("mallory@example.com", &v), Err(Reject::User));
    assert_eq!(
        t.check_op(&Op::UserAdd { user: foreign }),
        Err(Reject::User)
    );
    let mut elsewhere = user(&[]);
    elsewhere.domain = "other.example".into();
    assert_eq!(
        t.check_op(&Op::UserAdd { user: elsewhere }),
        Err(Reject::User)
    );
}

#[test]
fn bindings_are_bound_to_their_aor_and_contact() {
    let t = trust("11", &[]);
    let b = SharedBinding {
        contact: "sip:bob@198.51.100.1:5070".into(),
        expires_unix: 2_000_000_000,
        call_id: "c".into(),
        cseq: 1,
        source: "198.51.100.1:5070".parse().unwrap(),
        transport: "udp".into(),
        authenticated: Some("bob".into()),
        node: "edge-a".into(),
        path: "sip:192.0.2.11:5060;lr".into(),
    };
    let body = serde_json::to_string(&b).unwrap();
    let v = t.seal(&Place::binding("bob@example.com", &b.contact), &body);
    let field = contact_field(&b.contact);
    assert_eq!(
        t.binding("sipfw:loc:bob@example.com", &field, &v),
        Ok(("bob@example.com".to_string(), b.clone()))
    );
    // bob's binding moved to alice: alice's calls would go to bob's phone.
    assert_eq!(
        t.binding("sipfw:loc:alice@example.com", &field, &v),
        Err(Reject::Mac)
    );
    assert_eq!(
        t.binding("sipfw:loc:bob@example.com", &field, &body),
        Err(Reject::Mac)
    );
}

#[test]
fn events_are_fresh_and_seen_once() {
    let t = trust("11", &[]);
    let sealed = |ev: &Event| {
        t.seal(&Place::event(), &serde_json::to_string(ev).unwrap())
            .into_bytes()
    };
    let fresh = sealed(&ban_event("192.0.2.1", NOW - 1_000));
    assert!(t.event(&fresh, NOW).is_ok());
    assert_eq!(t.event(&fresh, NOW + 1), Err(Reject::Replay), "a replay");
    let window = EVENT_WINDOW.as_millis() as u64;
    let old = sealed(&ban_event("192.0.2.2", NOW - window - 1));
    assert_eq!(t.event(&old, NOW), Err(Reject::Replay), "too old");
    let ahead = sealed(&ban_event("192.0.2.3", NOW + window + 1));
    assert_eq!(t.event(&ahead, NOW), Err(Reject::Replay), "from the future");
    // A stored ban's value is no event: its MAC names its key, not the channel.
    let stored = t.seal(
        &Place::ban("192.0.2.4".parse().unwrap()),
        &serde_json::to_string(&ban_event("192.0.2.4", NOW)).unwrap(),
    );
    assert_eq!(t.event(stored.as_bytes(), NOW), Err(Reject::Mac));
    assert_eq!(t.event(b"\xff\xfe", NOW), Err(Reject::Mac));
    let plain = serde_json::to_vec(&ban_event("192.0.2.5", NOW)).unwrap();
    assert_eq!(t.event(&plain, NOW), Err(Reject::Mac));
    // The remembered tags are bounded by the window: long after, the set is emptied.
    let later = sealed(&ban_event("192.0.2.6", NOW + 10 * window));
    assert!(t.event(&later, NOW + 10 * window).is_ok());
    assert_eq!(t.seen.lock().unwrap().order.len(), 1);
}

#[test]
fn previous_secrets_verify_and_new_records_use_the_current_one() {
    let old = trust("11", &[]);
    let rolled = trust("22", &["11"]);
    let at = Place::ban("192.0.2.1".parse().unwrap());
    let ev = serde_json::to_string(&ban_event("192.0.2.1", NOW)).unwrap();
    assert!(
        rolled
            .ban("sipfw:ban:192.0.2.1", &old.seal(&at, &ev))
            .is_ok()
    );
    let new = rolled.seal(&at, &ev);
    assert_eq!(
        new,
        trust("22", &[]).seal(&at, &ev),
        "made under the current"
    );
    assert_eq!(old.ban("sipfw:ban:192.0.2.1", &new), Err(Reject::Mac));
}

#[test]
fn the_fingerprint_is_derived_not_the_secret() {
    let f = fingerprint(&secret("22"));
    assert_eq!(trust("22", &[]).fingerprints(), f);
    assert_eq!(f.len(), 64);
    assert_ne!(f, "22".repeat(32), "not the secret");
    // Not the message key either: a fingerprint in Redis gives no MAC key away.
    let key: [u8; 32] = secret("22").derive(Purpose::ClusterMessage);
    assert_ne!(f, crate::auth::digest::hex(&key));
}

/// A secret rolled node by node: S1 everywhere, then S2 with S1 as previous on some nodes,
/// then S2 alone. No node of the roll is refused; a node without a common secret is.
#[test]
fn a_roll_keeps_every_node_in_and_others_out() {
    let old = trust("11", &[]);
    let rolled = trust("22", &["11"]);
    let done = trust("22", &[]);
    let stranger = trust("33", &[]);
    assert_eq!(old.join(""), Join::Write, "an empty Redis");
    // Each case: the node joining, the node whose fingerprints Redis holds, the outcome.
    for (node, stored, want, why) in [
        (&rolled, &old, Join::Write, "the roll moves on"),
        (&old, &rolled, Join::Keep, "not yet rolled: in"),
        (&rolled, &rolled, Join::Keep, "rolled: in"),
        (&done, &rolled, Join::Write, "S1 retired"),
        (&rolled, &done, Join::Keep, "S1 not put back"),
        (&old, &done, Join::Refuse, "S1 alone: out"),
        (&stranger, &rolled, Join::Refuse, "no common secret: out"),
        (&stranger, &old, Join::Refuse, "no common secret: out"),
    ] {
        assert_eq!(node.join(&stored.fingerprints()), want, "{why}");
    }
}

#[test]
fn a_feed_load_verifies_under_its_feed_only_and_its_event_names_a_feed() {
    let t = trust("11", &[]);
    let body = "{\"entries\":[]}";
    let sealed = t.seal(&Place::feed("threats"), body);
    assert_eq!(t.feed_load("threats", &sealed), Ok(body));
    // Moved to another feed's key, forged, or sealed under another secret.
    assert_eq!(t.feed_load("other", &sealed), Err(Reject::Mac));
    assert_eq!(t.feed_load("threats", body), Err(Reject::Mac));
    let theirs = trust("22", &[]).seal(&Place::feed("threats"), body);
    assert_eq!(t.feed_load("threats", &theirs), Err(Reject::Mac));
    let named = |feed: String| t.check_op(&Op::FeedLoad { feed });
    assert_eq!(named("threats".into()), Ok(()));
    assert_eq!(named("x".repeat(MAX_FEED_NAME + 1)), Err(Reject::Malformed));
}
