//! STUN keep-alives on a SIP UDP port (RFC 5626 4.4.2, 8.4): a UA that registered a flow
//! over UDP sends STUN Binding requests (RFC 5389, no authentication) down it and takes a
//! Binding success response with XOR-MAPPED-ADDRESS as proof that the flow still works.
//!
//! **Decides**: whether a datagram is such a Binding request ([`parse`]), and the bytes of
//! its success response ([`BindingRequest::success`]). Whom to answer is the daemon's call
//! (only a registered flow: the answer is larger than the request).
//!
//! Hand-written rather than a STUN crate: the edge needs one request type without
//! authentication and one response with two attributes, a few dozen lines to read; a full
//! codec would bring every attribute and message class of RFC 5389/8489 onto the path any
//! packet reaches. FINGERPRINT's CRC-32 comes from `crc32fast`.

/// RFC 5389 6: the fixed magic cookie at bytes 4..8.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// The STUN header: type, length, cookie, transaction id.
pub const HEADER_LEN: usize = 20;
/// Most bytes of attributes a keep-alive request may carry (a FINGERPRINT and a short
/// SOFTWARE fit); larger is not a keep-alive. The XDP program applies the same bound.
pub const MAX_ATTRIBUTES_LEN: usize = 64;

const BINDING_REQUEST: u16 = 0x0001;
const BINDING_SUCCESS: u16 = 0x0101;
const XOR_MAPPED_ADDRESS: u16 = 0x0020;
const FINGERPRINT: u16 = 0x8028;
/// RFC 5389 15.5: the CRC-32 of FINGERPRINT is XORed with this.
const FINGERPRINT_XOR: u32 = 0x5354_554E;

/// Why a datagram is not a STUN Binding request this edge answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StunError {
    /// Not STUN at all (too short, top bits set, no magic cookie): SIP's to judge.
    #[error("not STUN")]
    NotStun,
    /// STUN, but not a Binding request.
    #[error("not a Binding request")]
    NotBindingRequest,
    /// The header's length disagrees with the datagram, or is not a multiple of 4.
    #[error("bad message length")]
    BadLength,
    /// More attributes than a keep-alive carries.
    #[error("too large")]
    TooLarge,
    /// An attribute runs past the end, or FINGERPRINT is not last.
    #[error("malformed attributes")]
    BadAttribute,
    /// A comprehension-required attribute this edge does not know (RFC 5389 7.3.1).
    #[error("unknown comprehension-required attribute")]
    UnknownRequired,
    /// FINGERPRINT does not match the message (RFC 5389 15.5).
    #[error("bad fingerprint")]
    BadFingerprint,
}

/// A STUN Binding request worth answering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BindingRequest {
    pub transaction_id: [u8; 12],
    /// Whether it carried a (valid) FINGERPRINT: the answer carries one too (RFC 5389 7.3).
    pub fingerprint: bool,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Whether `bytes` start like a STUN message (RFC 5389 6: the top two bits zero and the
/// magic cookie), which no SIP message does.
pub fn looks_like_stun(bytes: &[u8]) -> bool {
    bytes.len() >= HEADER_LEN
        && bytes[0] & 0xC0 == 0
        && be32(bytes, 4).is_some_and(|c| c == MAGIC_COOKIE)
}

/// Read `bytes` as a STUN Binding request (RFC 5389 6, 7.3, 15): the length exactly the
/// datagram's, attributes within it and within [`MAX_ATTRIBUTES_LEN`], FINGERPRINT (if
/// any) last and right, no unknown comprehension-required attribute.
pub fn parse(bytes: &[u8]) -> Result<BindingRequest, StunError> {
    if !looks_like_stun(bytes) {
        return Err(StunError::NotStun);
    }
    if be16(bytes, 0) != Some(BINDING_REQUEST) {
        return Err(StunError::NotBindingRequest);
    }
    let len = usize::from(be16(bytes, 2).ok_or(StunError::NotStun)?);
    if len % 4 != 0 || HEADER_LEN + len != bytes.len() {
        return Err(StunError::BadLength);
    }
    if len > MAX_ATTRIBUTES_LEN {
        return Err(StunError::TooLarge);
    }
    let mut transaction_id = [0u8; 12];
    transaction_id.copy_from_slice(&bytes[8..HEADER_LEN]);
    let fingerprint = attributes(bytes)?;
    Ok(BindingRequest {
        transaction_id,
        fingerprint,
    })
}

/// Walk the attributes (RFC 5389 15: type, length, value padded to 4); whether the last is
/// a valid FINGERPRINT.
fn attributes(bytes: &[u8]) -> Result<bool, StunError> {
    let mut at = HEADER_LEN;
    while at < bytes.len() {
        let kind = be16(bytes, at).ok_or(StunError::BadAttribute)?;
        let len = usize::from(be16(bytes, at + 2).ok_or(StunError::BadAttribute)?);
        let next = at + 4 + len.div_ceil(4) * 4;
        if next > bytes.len() {
            return Err(StunError::BadAttribute);
        }
        match kind {
            FINGERPRINT => {
                if len != 4 || next != bytes.len() {
                    return Err(StunError::BadAttribute);
                }
                let want = be32(bytes, at + 4).ok_or(StunError::BadAttribute)?;
                return if fingerprint_of(&bytes[..at]) == want {
                    Ok(true)
                } else {
                    Err(StunError::BadFingerprint)
                };
            }
            // Comprehension-optional (0x8000..): ignored (RFC 5389 7.3.1).
            k if k >= 0x8000 => {}
            _ => return Err(StunError::UnknownRequired),
        }
        at = next;
    }
    Ok(false)
}

/// RFC 5389 15.5: CRC-32 of the message up to the attribute (whose header's length already
/// counts FINGERPRINT), XORed with 0x5354554e.
fn fingerprint_of(head: &[u8]) -> u32 {
    crc32fast::hash(head) ^ FINGERPRINT_XOR
}

impl BindingRequest {
    /// The Binding success response telling `source` where it came from (RFC 5389 7.3.1,
    /// 15.2): XOR-MAPPED-ADDRESS, and FINGERPRINT when the request had one. An IPv4 source
    /// seen on a dual-stack socket is reported as IPv4.
    pub fn success(&self, source: std::net::SocketAddr) -> Vec<u8> {
        let ip = source.ip().to_canonical();
        let mut out = Vec::with_capacity(HEADER_LEN + 24 + 8);
        out.extend_from_slice(&BINDING_SUCCESS.to_be_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        out.extend_from_slice(&self.transaction_id);
        out.extend_from_slice(&xor_mapped_address(ip, source.port(), &self.transaction_id));
        finish(out, self.fingerprint)
    }
}

/// Set the header's length and append FINGERPRINT when asked (RFC 5389 15.5: the CRC
/// covers the header whose length already counts it).
fn finish(mut out: Vec<u8>, fingerprint: bool) -> Vec<u8> {
    if fingerprint {
        set_length(&mut out, 8);
        let crc = fingerprint_of(&out);
        out.extend_from_slice(&FINGERPRINT.to_be_bytes());
        out.extend_from_slice(&4u16.to_be_bytes());
        out.extend_from_slice(&crc.to_be_bytes());
    } else {
        set_length(&mut out, 0);
    }
    out
}

/// Set the header's length to the attributes so far plus `more` bytes still to come.
fn set_length(msg: &mut [u8], more: usize) {
    let len = (msg.len() - HEADER_LEN + more) as u16;
    msg[2..4].copy_from_slice(&len.to_be_bytes());
}

/// The XOR-MAPPED-ADDRESS attribute (RFC 5389 15.2): the port XORed with the cookie's top
/// 16 bits, an IPv4 address with the cookie, an IPv6 one with the cookie and transaction id.
fn xor_mapped_address(ip: std::net::IpAddr, port: u16, tid: &[u8; 12]) -> Vec<u8> {
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let (family, addr): (u8, Vec<u8>) = match ip {
        std::net::IpAddr::V4(v4) => (0x01, v4.octets().to_vec()),
        std::net::IpAddr::V6(v6) => (0x02, v6.octets().to_vec()),
    };
    let key = cookie.iter().chain(tid.iter());
    let mut out = Vec::with_capacity(4 + 4 + addr.len());
    out.extend_from_slice(&XOR_MAPPED_ADDRESS.to_be_bytes());
    out.extend_from_slice(&((4 + addr.len()) as u16).to_be_bytes());
    out.extend_from_slice(&[0, family]);
    out.extend_from_slice(&(port ^ (MAGIC_COOKIE >> 16) as u16).to_be_bytes());
    out.extend(addr.iter().zip(key).map(|(a, k)| a ^ k));
    out
}

/// A Binding request as a UA sends it for a keep-alive (for tests and tools): no
/// attribute but FINGERPRINT, when asked.
pub fn binding_request(transaction_id: [u8; 12], fingerprint: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + 8);
    out.extend_from_slice(&BINDING_REQUEST.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
    out.extend_from_slice(&transaction_id);
    finish(out, fingerprint)
}

/// Read the XOR-MAPPED-ADDRESS of a Binding success response (for tests and tools): the
/// address it names, if the response is well formed.
pub fn mapped_address(bytes: &[u8]) -> Option<std::net::SocketAddr> {
    if !looks_like_stun(bytes) || be16(bytes, 0)? != BINDING_SUCCESS {
        return None;
    }
    let tid: [u8; 12] = bytes.get(8..HEADER_LEN)?.try_into().ok()?;
    let mut at = HEADER_LEN;
    while at + 4 <= bytes.len() {
        let (kind, len) = (be16(bytes, at)?, usize::from(be16(bytes, at + 2)?));
        let value = bytes.get(at + 4..at + 4 + len)?;
        if kind == XOR_MAPPED_ADDRESS {
            return decode_xor_address(value, &tid);
        }
        at += 4 + len.div_ceil(4) * 4;
    }
    None
}

fn decode_xor_address(value: &[u8], tid: &[u8; 12]) -> Option<std::net::SocketAddr> {
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let port = be16(value, 2)? ^ (MAGIC_COOKIE >> 16) as u16;
    let key = cookie.iter().chain(tid.iter());
    let addr: Vec<u8> = value
        .get(4..)?
        .iter()
        .zip(key)
        .map(|(a, k)| a ^ k)
        .collect();
    let ip: std::net::IpAddr = match (value.get(1)?, addr.len()) {
        (0x01, 4) => <[u8; 4]>::try_from(addr.as_slice()).ok()?.into(),
        (0x02, 16) => <[u8; 16]>::try_from(addr.as_slice()).ok()?.into(),
        _ => return None,
    };
    Some((ip, port).into())
}

#[cfg(test)]
mod tests;
