use std::net::SocketAddr;

use super::*;

/// RFC 5769 2.2/2.3's transaction id.
const TID: [u8; 12] = [
    0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
];

fn attr_of(resp: &[u8]) -> &[u8] {
    let len = usize::from(u16::from_be_bytes([
        resp[HEADER_LEN + 2],
        resp[HEADER_LEN + 3],
    ]));
    &resp[HEADER_LEN..HEADER_LEN + 4 + len]
}

#[test]
fn a_plain_binding_request_parses() {
    let req = parse(&binding_request(TID, false)).expect("valid request");
    assert_eq!(req.transaction_id, TID);
    assert!(!req.fingerprint);
}

#[test]
fn ipv4_xor_mapped_address_is_rfc_5769_2_2() {
    let source: SocketAddr = "192.0.2.1:32853".parse().expect("literal");
    let req = BindingRequest {
        transaction_id: TID,
        fingerprint: false,
    };
    let resp = req.success(source);
    assert_eq!(&resp[..2], &[0x01, 0x01]);
    assert_eq!(&resp[2..4], &[0, 12]);
    assert_eq!(&resp[4..8], &[0x21, 0x12, 0xa4, 0x42]);
    assert_eq!(&resp[8..20], &TID);
    assert_eq!(
        attr_of(&resp),
        &[
            0x00, 0x20, 0x00, 0x08, 0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43
        ]
    );
    assert_eq!(mapped_address(&resp), Some(source));
}

#[test]
fn ipv6_xor_mapped_address_is_rfc_5769_2_3() {
    let source: SocketAddr = "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
        .parse()
        .expect("literal");
    let req = BindingRequest {
        transaction_id: TID,
        fingerprint: false,
    };
    let resp = req.success(source);
    assert_eq!(
        attr_of(&resp),
        &[
            0x00, 0x20, 0x00, 0x14, 0x00, 0x02, 0xa1, 0x47, 0x01, 0x13, 0xa9, 0xfa, 0xa5, 0xd3,
            0xf1, 0x79, 0xbc, 0x25, 0xf4, 0xb5, 0xbe, 0xd2, 0xb9, 0xd9
        ][..]
    );
    assert_eq!(mapped_address(&resp), Some(source));
}

#[test]
fn a_mapped_ipv4_source_is_answered_as_ipv4() {
    let source: SocketAddr = "[::ffff:192.0.2.1]:32853".parse().expect("literal");
    let req = parse(&binding_request(TID, false)).expect("valid");
    let resp = req.success(source);
    assert_eq!(
        mapped_address(&resp),
        Some("192.0.2.1:32853".parse().expect("literal"))
    );
}

#[test]
fn fingerprint_is_checked_and_echoed() {
    let bytes = binding_request(TID, true);
    assert_eq!(bytes.len(), HEADER_LEN + 8);
    let req = parse(&bytes).expect("valid request with FINGERPRINT");
    assert!(req.fingerprint);
    let resp = req.success("192.0.2.1:5060".parse().expect("literal"));
    // The response's FINGERPRINT is last and covers everything before it.
    let n = resp.len();
    assert_eq!(&resp[n - 8..n - 4], &[0x80, 0x28, 0x00, 0x04]);
    let crc = u32::from_be_bytes(resp[n - 4..].try_into().expect("4 bytes"));
    assert_eq!(crc, crc32fast::hash(&resp[..n - 8]) ^ 0x5354_554E);
    let mut bad = bytes.clone();
    bad[HEADER_LEN + 7] ^= 1;
    assert_eq!(parse(&bad), Err(StunError::BadFingerprint));
}

#[test]
fn optional_attributes_are_skipped_required_ones_refused() {
    let mut b = binding_request(TID, false);
    // SOFTWARE (0x8022), 5 bytes padded to 8.
    b.extend_from_slice(&[
        0x80, 0x22, 0x00, 0x05, b'p', b'h', b'o', b'n', b'e', 0, 0, 0,
    ]);
    b[3] = 12;
    assert!(parse(&b).is_ok());
    // USERNAME (0x0006): authentication this edge does not do.
    b[HEADER_LEN] = 0x00;
    b[HEADER_LEN + 1] = 0x06;
    assert_eq!(parse(&b), Err(StunError::UnknownRequired));
}

#[test]
fn hostile_inputs_are_refused_without_panic() {
    let good = binding_request(TID, true);
    // Every truncation.
    for n in 0..good.len() {
        assert!(parse(&good[..n]).is_err(), "truncated to {n}");
    }
    let mut cookie = good.clone();
    cookie[5] ^= 0xff;
    assert_eq!(parse(&cookie), Err(StunError::NotStun));
    let mut top = good.clone();
    top[0] |= 0x80;
    assert_eq!(parse(&top), Err(StunError::NotStun));
    let mut response = good.clone();
    response[1] = 0x01;
    response[0] = 0x01;
    assert_eq!(parse(&response), Err(StunError::NotBindingRequest));
    let mut huge = good.clone();
    huge[2] = 0xff;
    huge[3] = 0xfc;
    assert_eq!(parse(&huge), Err(StunError::BadLength));
    let mut odd = good.clone();
    odd[3] = 7;
    assert_eq!(parse(&odd), Err(StunError::BadLength));
    // An attribute claiming more than the message holds.
    let mut past = binding_request(TID, false);
    past.extend_from_slice(&[0x80, 0x22, 0x00, 0x40, 0, 0, 0, 0]);
    past[3] = 8;
    assert_eq!(parse(&past), Err(StunError::BadAttribute));
    // FINGERPRINT not last.
    let mut early = good.clone();
    early.extend_from_slice(&[0x80, 0x22, 0x00, 0x00]);
    early[3] = 12;
    assert_eq!(parse(&early), Err(StunError::BadAttribute));
    // Over the keep-alive bound.
    let mut big = binding_request(TID, false);
    big.extend_from_slice(&[0x80, 0x22, 0x00, 0x44]);
    big.extend_from_slice(&[0u8; 0x44]);
    big[3] = 0x48;
    assert_eq!(parse(&big), Err(StunError::TooLarge));
    // SIP is not STUN.
    assert_eq!(
        parse(b"OPTIONS sip:a@b SIP/2.0\r\n\r\n"),
        Err(StunError::NotStun)
    );
}

#[test]
fn mapped_address_of_junk_is_none() {
    for n in 0..40 {
        let junk: Vec<u8> = (0..n).map(|i| (i * 37) as u8).collect();
        assert_eq!(mapped_address(&junk), None);
    }
    let mut resp = BindingRequest {
        transaction_id: TID,
        fingerprint: false,
    }
    .success("192.0.2.1:1".parse().expect("literal"));
    resp.truncate(resp.len() - 2);
    assert_eq!(mapped_address(&resp), None);
}
