//! The numbers frames are read by, on both sides: the XDP program parses every packet with
//! them, and the daemon parses the copies the capture tap hands it (the HEP export of drops).

/// An Ethernet header without VLAN tags.
pub const ETH_HLEN: usize = 14;
pub const ETH_P_IPV4: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86DD;
/// The VLAN tag protocol ids: 802.1Q and 802.1ad (QinQ outer tag).
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88A8;
/// The IP protocol numbers (IANA).
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
