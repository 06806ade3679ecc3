//! The pcapng file of a capture, written through the `pcap-file` crate: a section header
//! naming this program, one interface description block per interface a packet arrived
//! on (its name, its link type, nanosecond timestamps), and one enhanced packet block per
//! packet with its verdict in the block's comment (`opt_comment`, which Wireshark and
//! tshark show as `frame.comment`). The XDP layer's frames are Ethernet as the program saw
//! them; the gate layer's are raw IP frames made up around the message (`frame`), on an
//! interface named `gate`.

use std::{borrow::Cow, collections::HashMap, io::Write, time::Duration};

use pcap_file::{
    DataLink,
    pcapng::{
        PcapNgWriter,
        blocks::{
            enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption},
            interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption},
            section_header::{SectionHeaderBlock, SectionHeaderOption},
        },
    },
};
use sip_firewall_common::counters::Reason;

/// Writing the file failed.
#[derive(Debug, thiserror::Error)]
#[error("writing the pcapng file: {0}")]
pub struct PcapNgError(#[from] pcap_file::PcapError);

/// The interface a packet arrived on, as the file names it.
pub struct Interface {
    pub ifindex: u32,
    pub name: String,
    pub linktype: DataLink,
}

/// The made-up interface of the gate layer's frames (no kernel interface has this index).
pub fn gate_interface() -> Interface {
    Interface {
        ifindex: u32::MAX,
        name: "gate".to_string(),
        linktype: DataLink::RAW,
    }
}

/// A pcapng stream of captured packets.
pub struct PcapNg<W: Write> {
    writer: PcapNgWriter<W>,
    /// Interface index to the file's interface id, in the order they were first seen.
    interfaces: HashMap<u32, u32>,
    snap: u32,
}

/// The comment of a packet: its verdict, and what the program did with it.
pub fn comment(reason: Reason) -> String {
    let action = if reason.is_drop() {
        "dropped"
    } else {
        "passed"
    };
    format!("sip-firewall verdict: {} ({action} by XDP)", reason.name())
}

impl<W: Write> PcapNg<W> {
    /// Start the file: its section header block.
    pub fn new(out: W, snap: u32) -> Result<PcapNg<W>, PcapNgError> {
        let section = SectionHeaderBlock {
            options: vec![SectionHeaderOption::UserApplication(Cow::Owned(format!(
                "sip-firewall {}",
                env!("CARGO_PKG_VERSION")
            )))],
            ..SectionHeaderBlock::default()
        };
        Ok(PcapNg {
            writer: PcapNgWriter::with_section_header(out, section)?,
            interfaces: HashMap::new(),
            snap,
        })
    }

    /// The file's id of `iface`, written on first sight.
    fn interface_id(&mut self, iface: &Interface) -> Result<u32, PcapNgError> {
        if let Some(id) = self.interfaces.get(&iface.ifindex) {
            return Ok(*id);
        }
        let id = self.interfaces.len() as u32;
        let idb = InterfaceDescriptionBlock {
            linktype: iface.linktype,
            snaplen: self.snap,
            options: vec![
                InterfaceDescriptionOption::IfName(Cow::Owned(iface.name.clone())),
                // 10^-9 s: the program's clock counts nanoseconds.
                InterfaceDescriptionOption::IfTsResol(9),
            ],
        };
        self.writer.write_pcapng_block(idb)?;
        self.interfaces.insert(iface.ifindex, id);
        Ok(id)
    }

    /// One packet: `data` (its first bytes), `len` on the wire, at `unix` since the epoch,
    /// with its `comment` (the verdict, or the gate's reason).
    pub fn packet(
        &mut self,
        iface: &Interface,
        unix: Duration,
        (len, data): (u32, &[u8]),
        comment: String,
    ) -> Result<(), PcapNgError> {
        let interface_id = self.interface_id(iface)?;
        let epb = EnhancedPacketBlock {
            interface_id,
            timestamp: unix,
            original_len: len,
            data: Cow::Borrowed(data),
            options: vec![EnhancedPacketOption::Comment(Cow::Owned(comment))],
        };
        self.writer.write_pcapng_block(epb)?;
        Ok(())
    }

    /// The snap length of the file's interfaces.
    pub fn snap(&self) -> u32 {
        self.snap
    }

    /// Flush what was written so far (a reader of `-w -` sees packets as they come).
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.writer.get_mut().flush()
    }
}
