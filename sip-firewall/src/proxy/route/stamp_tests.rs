//! The dialog stamp and the cluster hop seal: what opens, what does not, and the work a
//! stamp costs.

use super::*;

fn ring(current: &str, previous: &[&str]) -> KeyRing {
    let s = |b: &str| Secret::parse("k", &b.repeat(32)).expect("secret");
    KeyRing::new(s(current), previous.iter().map(|p| s(p)).collect())
}

fn d(a: &str, transport: Transport) -> Destination {
    Destination {
        addr: a.parse().expect("addr"),
        transport,
    }
}

/// `stamp` with the hex digit at `i` changed.
fn flip(stamp: &str, i: usize) -> String {
    let mut t = stamp.to_string().into_bytes();
    t[i] = if t[i] == b'0' { b'1' } else { b'0' };
    String::from_utf8(t).expect("hex")
}

#[test]
fn a_stamp_opens_for_its_dialog_only() {
    let keys = StampKeys::new(&ring("11", &[]));
    let (a, b) = (
        d("192.0.2.1:5060", Transport::Datagram),
        d("[2001:db8::5]:5070", Transport::Stream),
    );
    let stamp = keys.seal(1_700_000_000, "call-1", "ft", a, b);
    assert_eq!(stamp.len(), 118);
    assert!(!stamp.contains("c0000201"), "the parties are not shown");
    assert_eq!(stamp, keys.seal(1_700_000_000, "call-1", "ft", a, b));
    let opened = keys.open("call-1", &["x", "ft"], &stamp);
    assert_eq!(
        opened,
        Some(Opened {
            caller: a,
            callee: b,
            issued: 1_700_000_000,
            previous: false,
            secret: 0,
        })
    );
    // Hex digits in upper case (URI parameters compare case-insensitively).
    assert!(
        keys.open("call-1", &["ft"], &stamp.to_uppercase())
            .is_some()
    );
    // Other associated data: Call-ID, From-tag.
    assert_eq!(keys.open("call-2", &["ft"], &stamp), None);
    assert_eq!(keys.open("call-1", &["other"], &stamp), None);
    // Another secret's key.
    let other = StampKeys::new(&ring("22", &[]));
    assert_eq!(other.open("call-1", &["ft"], &stamp), None);
    // Any change anywhere: key id, issue time, tag, sealed parties.
    for i in [0, 1, 3, 9, 10, 20, 41, 42, 60, 117] {
        assert_eq!(keys.open("call-1", &["ft"], &flip(&stamp, i)), None, "{i}");
    }
    // Another key id whose key exists (the id is bound: the stamp does not move to it).
    let both = StampKeys::new(&ring("11", &["22"]));
    let id_b = format!("{:02x}", both.previous[0].id);
    let moved = format!("{id_b}{}", &stamp[2..]);
    assert_eq!(both.open("call-1", &["ft"], &moved), None);
    for bad in ["", "zz", "é1", &stamp[..116], &format!("{stamp}00")] {
        assert_eq!(keys.open("call-1", &["ft"], bad), None, "{bad}");
    }
}

#[test]
fn every_transport_survives_the_seal() {
    let keys = StampKeys::new(&ring("11", &[]));
    let a = d("192.0.2.1:5060", Transport::Datagram);
    for (n, t) in [
        Transport::Datagram,
        Transport::Stream,
        Transport::Tls,
        Transport::Ws,
        Transport::Wss,
    ]
    .into_iter()
    .enumerate()
    {
        let c = d(&format!("192.0.2.9:4000{n}"), t);
        let stamp = keys.seal(5, "call-3", "ft", a, c);
        let o = keys.open("call-3", &["ft"], &stamp).expect("opens");
        assert_eq!((o.caller, o.callee, o.issued), (a, c, 5));
    }
}

#[test]
fn stamps_of_a_previous_secret_open_and_say_so() {
    let old = StampKeys::new(&ring("11", &[]));
    let rolled = StampKeys::new(&ring("22", &["11"]));
    let a = d("192.0.2.1:5060", Transport::Datagram);
    let b = d("192.0.2.2:5060", Transport::Datagram);
    let stamp = old.seal(7, "c", "f", a, b);
    let o = rolled
        .open("c", &["f"], &stamp)
        .expect("a previous secret opens");
    assert!(o.previous);
    // New stamps are sealed under the current secret, which the old ring cannot open.
    let new = rolled.seal(8, "c", "f", a, b);
    assert!(!rolled.open("c", &["f"], &new).expect("opens").previous);
    assert_eq!(old.open("c", &["f"], &new), None);
    assert_eq!(&new[..2], &format!("{:02x}", rolled.current.id));
    // Dropped from the ring: refused.
    let dropped = StampKeys::new(&ring("22", &[]));
    assert_eq!(dropped.open("c", &["f"], &stamp), None);
}

#[test]
fn a_stamp_of_an_unknown_key_id_costs_no_decryption() {
    let keys = StampKeys::new(&ring("11", &[]));
    let a = d("192.0.2.1:5060", Transport::Datagram);
    let stamp = keys.seal(7, "c", "f", a, a);
    let other = format!("{:02x}", keys.current.id ^ 1);
    counters::take();
    assert_eq!(
        keys.open("c", &["f", "t"], &format!("{other}{}", &stamp[2..])),
        None
    );
    assert_eq!(counters::take(), (1, 0));
    assert_eq!(keys.open("c", &["x", "y", "x"], &stamp), None);
    assert_eq!(counters::take(), (1, 2), "each distinct tag once");
}

#[test]
fn cluster_hop_seals_verify_in_full_only() {
    let key = [7u8; 32];
    let seal = seal_cluster_hop(&key, 100, "bob@example.com", "c1", "sip:bob@192.0.2.5");
    let open = |s: &str| open_cluster_hop(&key, 110, s, "c1", "sip:bob@192.0.2.5");
    assert_eq!(open(&seal).as_deref(), Some("bob@example.com"));
    let (rest, tag) = seal.rsplit_once('.').expect("tag");
    assert_eq!(tag.len(), 32);
    assert_eq!(open(&format!("{rest}.{}", &tag[..30])), None, "truncated");
    assert_eq!(open(&flip(&seal, seal.len() - 1)), None, "changed");
    assert_eq!(
        open_cluster_hop(&key, 110, &seal, "c2", "sip:bob@192.0.2.5"),
        None
    );
    assert_eq!(
        open_cluster_hop(
            &key,
            100 + CLUSTER_HOP_WINDOW + 1,
            &seal,
            "c1",
            "sip:bob@192.0.2.5"
        ),
        None
    );
}
