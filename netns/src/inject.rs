//! Raw Ethernet frames sent out of an interface of a namespace: any source address, spoofed
//! at will, for tests of what the firewall does with traffic no socket could send.

use crate::{Error, Result, in_ns};

/// Send `frames` out of `dev` in namespace `ns` (a packet socket); how many were sent.
pub fn inject<I>(ns: &str, dev: &str, frames: I) -> Result<u64>
where
    I: Iterator<Item = Vec<u8>> + Send + 'static,
{
    let name = std::ffi::CString::new(dev).map_err(|e| Error::new(format!("{dev:?}: {e}")))?;
    in_ns(ns, move || {
        // SAFETY: plain socket(2), sendto(2) on a raw packet socket we own and close.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        if fd < 0 {
            let e = std::io::Error::last_os_error();
            return Err(Error::new(format!("packet socket: {e}")));
        }
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = ifindex as i32;
        addr.sll_halen = 6;
        let mut sent = 0;
        for f in frames {
            let rc = unsafe {
                libc::sendto(
                    fd,
                    f.as_ptr().cast(),
                    f.len(),
                    0,
                    (&addr as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            if rc > 0 {
                sent += 1;
            }
        }
        unsafe { libc::close(fd) };
        Ok(sent)
    })
}
