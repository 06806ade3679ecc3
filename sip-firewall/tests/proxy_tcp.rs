//! The proxy forwarding over TCP to a peer it has no connection with: it opens one, sends
//! the request with a TCP Via and a double Record-Route (TCP side, UDP side), and relays
//! the response that comes back on that connection to the UDP caller.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream, UdpSocket},
    time::Duration,
};

mod common;

use sip_firewall_tests::ua::{msg::peer_invite, response_to};

/// Read one SIP message (headers and Content-Length body) from a stream.
fn read_message(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => buf.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

#[test]
fn forwards_over_a_new_tcp_connection() {
    // 127.0.0.0/8 is a trusted peer: it may send to foreign targets, here on loopback.
    let d = common::start(
        "tcp",
        "[sip]\ndomains = [\"example.com\"]\n[policy]\nallow = [\"127.0.0.0/8\"]\n\
         [proxy]\ninternal_next_hops = [\"127.0.0.0/8\"]\n",
        Some("warn"),
    );
    let sip = d.sip;

    let uas = TcpListener::bind("127.0.0.1:0").expect("uas");
    let uas_addr = uas.local_addr().expect("addr");
    let caller = UdpSocket::bind("127.0.0.1:0").expect("caller");
    caller
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let me = caller.local_addr().expect("addr");
    let invite = peer_invite(&format!("sip:dave@{uas_addr};transport=tcp"), me, "tcp1");
    caller.send_to(invite.as_bytes(), sip).expect("send");

    uas.set_nonblocking(false).expect("blocking");
    let (mut conn, _) = uas.accept().expect("the proxy connects");
    conn.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let req = read_message(&mut conn);
    assert!(
        req.starts_with(&format!("INVITE sip:dave@{uas_addr};transport=tcp SIP/2.0")),
        "{req}"
    );
    assert!(
        req.contains(&format!("Via: SIP/2.0/TCP {sip};branch=z9hG4bKsfw")),
        "{req}"
    );
    // Double Record-Route (RFC 5658): the callee reaches us over TCP, the caller over UDP;
    // both carry the stamp of the dialog.
    let rr: Vec<&str> = req
        .split("\r\n")
        .filter_map(|l| l.strip_prefix("Record-Route: "))
        .collect();
    assert_eq!(rr.len(), 2, "{req}");
    let tcp_side = format!("<sip:{sip};transport=tcp;lr;sfw=");
    let udp_side = format!("<sip:{sip};lr;sfw=");
    let stamp = rr[0].strip_prefix(&tcp_side).expect("TCP side first");
    assert_eq!(rr[1].strip_prefix(&udp_side), Some(stamp), "{req}");
    // The sealed dialog, hex: key id, issue time, AES-SIV's 128-bit tag, both parties.
    assert!(stamp.len() == 119 && stamp.ends_with('>'), "{stamp}");
    // Answer on the same connection: the proxy relays it to the caller over UDP.
    let resp = response_to(&req, "486 Busy Here", "u", "");
    conn.write_all(resp.as_bytes()).expect("write");
    let mut buf = [0u8; 4096];
    let mut codes = Vec::new();
    while !codes.contains(&486) {
        let (n, _) = caller.recv_from(&mut buf).expect("an answer");
        let text = String::from_utf8_lossy(&buf[..n]);
        codes.push(text[8..11].parse::<u16>().expect("status"));
        if text.starts_with("SIP/2.0 486") {
            assert!(text.contains("branch=z9hG4bKtcp1"), "{text}");
            assert!(!text.contains("z9hG4bKsfw"), "our Via removed: {text}");
        }
    }
    assert_eq!(codes, vec![100, 486]);
    // The proxy acknowledges the 486 hop by hop on the same connection.
    let ack = read_message(&mut conn);
    assert!(ack.starts_with("ACK "), "{ack}");
    assert!(ack.contains("CSeq: 1 ACK"), "{ack}");
}
