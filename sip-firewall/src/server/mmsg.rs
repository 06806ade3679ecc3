//! Several UDP datagrams per system call: `recvmmsg(2)` into fixed buffers and `sendmmsg(2)`
//! of the answers they produced. Linux (the daemon's only target) with `libc` directly: the
//! crates that batch UDP (`quinn-udp`) are made for QUIC, turn on GRO and ECN and do not say
//! when the kernel cut a datagram, which SIP must know to refuse it as oversized.

use std::{io, mem, net::SocketAddr, os::fd::RawFd, ptr};

use socket2::{SockAddr, SockAddrStorage};

/// Datagrams received, or answers sent, per system call.
pub(crate) const BATCH: usize = 32;

/// One datagram of a batch.
pub(crate) struct Datagram<'a> {
    pub bytes: &'a [u8],
    pub source: SocketAddr,
    /// Larger than its buffer: the kernel kept only the buffer's worth (MSG_TRUNC).
    pub truncated: bool,
}

/// Buffers for [`BATCH`] datagrams of up to `slot` bytes each, reused for every batch.
pub(crate) struct RecvBatch {
    bufs: Vec<u8>,
    slot: usize,
    names: Vec<libc::sockaddr_storage>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    filled: usize,
}

// SAFETY: the raw pointers in `iovs` and `hdrs` point only into this batch's own vectors
// (set again by every `recv`, before the kernel reads them), never shared with another
// thread: moving the batch to another thread moves what they point to with it.
unsafe impl Send for RecvBatch {}

impl RecvBatch {
    /// Room for [`BATCH`] datagrams of `slot` bytes (at least one byte each).
    pub(crate) fn new(slot: usize) -> RecvBatch {
        let slot = slot.max(1);
        // SAFETY: all-zero is a valid value of these plain C structs (null pointers, zero
        // lengths); `recv` sets every pointer before the kernel reads them.
        let (name, iov, hdr) = unsafe { (mem::zeroed(), mem::zeroed(), mem::zeroed()) };
        RecvBatch {
            bufs: vec![0; slot * BATCH],
            slot,
            names: vec![name; BATCH],
            iovs: vec![iov; BATCH],
            hdrs: vec![hdr; BATCH],
            filled: 0,
        }
    }

    /// Receive what is queued on `fd`, up to [`BATCH`] datagrams, without waiting: how many
    /// (WouldBlock when none).
    pub(crate) fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        self.filled = 0;
        // The pointers are set again for every call, from the vectors as they are now.
        let base = self.bufs.as_mut_ptr();
        let names = self.names.as_mut_ptr();
        let iovs = self.iovs.as_mut_ptr();
        for (i, h) in self.hdrs.iter_mut().enumerate() {
            // SAFETY: i < BATCH, the length of `iovs` and `names`, and i * slot + slot is
            // within `bufs` (BATCH * slot bytes).
            unsafe {
                *iovs.add(i) = libc::iovec {
                    iov_base: base.add(i * self.slot).cast(),
                    iov_len: self.slot,
                };
                h.msg_hdr.msg_name = names.add(i).cast();
                h.msg_hdr.msg_iov = iovs.add(i);
            }
            h.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = ptr::null_mut();
            h.msg_hdr.msg_controllen = 0;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        // SAFETY: every header points into this batch's vectors, which outlive the call.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                BATCH as _,
                libc::MSG_DONTWAIT as _,
                ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        self.filled = n as usize;
        Ok(self.filled)
    }

    /// The datagrams of the last [`RecvBatch::recv`], in the order they arrived; one whose
    /// source is not an IP address (none on an IP socket) is skipped.
    pub(crate) fn iter(&self) -> impl Iterator<Item = Datagram<'_>> {
        (0..self.filled).filter_map(move |i| {
            let h = &self.hdrs[i];
            let len = (h.msg_len as usize).min(self.slot);
            let source = to_addr(self.names[i], h.msg_hdr.msg_namelen)?;
            Some(Datagram {
                bytes: &self.bufs[i * self.slot..i * self.slot + len],
                source,
                truncated: h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
            })
        })
    }
}

/// Whether a failed send is worth a warning (a SIP answer) or only a debug line (a STUN one).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Kind {
    Sip,
    Stun,
}

/// Answers waiting to go out with one `sendmmsg`.
#[derive(Default)]
pub(crate) struct SendBatch {
    out: Vec<(Vec<u8>, SocketAddr, Kind)>,
}

impl SendBatch {
    pub(crate) fn push(&mut self, bytes: Vec<u8>, dest: SocketAddr, kind: Kind) {
        self.out.push((bytes, dest, kind));
    }

    pub(crate) fn len(&self) -> usize {
        self.out.len()
    }

    /// The answer at `i`: where it goes and what it is.
    pub(crate) fn at(&self, i: usize) -> Option<(SocketAddr, Kind)> {
        self.out.get(i).map(|(_, d, k)| (*d, *k))
    }

    pub(crate) fn clear(&mut self) {
        self.out.clear();
    }

    /// Send the answers from `from` on, up to [`BATCH`] of them, without waiting: how many
    /// went (at least one), or the error of the first.
    pub(crate) fn send(&self, fd: RawFd, from: usize) -> io::Result<usize> {
        let todo = self.out.get(from..).unwrap_or_default();
        let todo = &todo[..todo.len().min(BATCH)];
        if todo.is_empty() {
            return Ok(0);
        }
        let names: Vec<SockAddr> = todo.iter().map(|(_, d, _)| SockAddr::from(*d)).collect();
        let mut iovs: Vec<libc::iovec> = todo
            .iter()
            .map(|(b, _, _)| libc::iovec {
                iov_base: b.as_ptr() as *mut libc::c_void,
                iov_len: b.len(),
            })
            .collect();
        let mut hdrs: Vec<libc::mmsghdr> = names
            .iter()
            .zip(iovs.iter_mut())
            .map(|(name, iov)| {
                // SAFETY: all-zero is a valid mmsghdr; the pointers are set next.
                let mut h: libc::mmsghdr = unsafe { mem::zeroed() };
                // The kernel only reads a sendmsg's address.
                h.msg_hdr.msg_name = name.as_ptr().cast_mut().cast();
                h.msg_hdr.msg_namelen = name.len();
                h.msg_hdr.msg_iov = iov;
                h.msg_hdr.msg_iovlen = 1;
                h
            })
            .collect();
        // SAFETY: the headers point into `names`, `iovs` and the answers' bytes, all alive
        // for the call; the kernel only reads the iovec buffers.
        let n = unsafe {
            libc::sendmmsg(
                fd,
                hdrs.as_mut_ptr(),
                hdrs.len() as _,
                libc::MSG_DONTWAIT as _,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

/// The address the kernel wrote (`len` bytes of `name`), if it is IPv4 or IPv6.
fn to_addr(name: libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let mut storage = SockAddrStorage::zeroed();
    // SAFETY: `sockaddr_storage` is one of this platform's `sockaddr_*` types, and the
    // kernel initialised `len` bytes of it (at most its size) with an address.
    let addr = unsafe {
        *storage.view_as::<libc::sockaddr_storage>() = name;
        SockAddr::new(storage, len.min(mem::size_of_val(&name) as libc::socklen_t))
    };
    addr.as_socket()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{net::UdpSocket, os::fd::AsRawFd};

    #[test]
    fn a_batch_in_one_call_and_a_cut_datagram_said_so() {
        for ip in ["127.0.0.1", "::1"] {
            let Ok(rx) = UdpSocket::bind((ip, 0)) else {
                continue; // no IPv6 loopback here
            };
            let tx = UdpSocket::bind((ip, 0)).expect("sender");
            let to = rx.local_addr().expect("addr");
            let mut out = SendBatch::default();
            for n in 0..5u8 {
                out.push(vec![n; 10 + usize::from(n)], to, Kind::Sip);
            }
            out.push(vec![9; 300], to, Kind::Sip);
            assert_eq!(out.send(tx.as_raw_fd(), 0).expect("sendmmsg"), 6);
            assert_eq!(out.send(tx.as_raw_fd(), 6).expect("nothing"), 0);

            let mut batch = RecvBatch::new(100);
            assert_eq!(batch.recv(rx.as_raw_fd()).expect("recvmmsg"), 6);
            let got: Vec<Datagram> = batch.iter().collect();
            for (n, d) in got[..5].iter().enumerate() {
                assert_eq!(d.bytes, vec![n as u8; 10 + n].as_slice());
                assert_eq!(d.source, tx.local_addr().expect("addr"));
                assert!(!d.truncated);
            }
            assert_eq!(got[5].bytes.len(), 100);
            assert!(got[5].truncated);
            let e = batch.recv(rx.as_raw_fd()).expect_err("empty");
            assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        }
    }
}
