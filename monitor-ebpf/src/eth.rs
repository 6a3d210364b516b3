//! Ethernet II with up to two VLAN tags (802.1Q, 802.1ad QinQ).

use crate::frame::{Frame, read_be16};

pub const HEADER_LEN: usize = 14;
/// EtherType (or the TPID of the first tag) follows the two MAC addresses.
pub const ETHERTYPE_OFFSET: usize = 12;
/// A tag is a TPID (already read as the EtherType) and a TCI, then the next EtherType.
pub const VLAN_TAG_LEN: usize = 4;
pub const VLAN_ID_MASK: u16 = 0x0fff;
pub const MAX_VLAN_TAGS: usize = 2;

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
pub const ETHERTYPE_VLAN: u16 = 0x8100;
pub const ETHERTYPE_QINQ: u16 = 0x88a8;

pub struct Ethernet {
    /// EtherType after the tags.
    pub ethertype: u16,
    /// Offset of the network header.
    pub l3_offset: usize,
    /// VLAN id of the outer tag, 0 when untagged.
    pub vlan_id: u16,
}

/// `None` when the frame ends inside the Ethernet header or a tag.
#[inline(always)]
pub fn parse(frame: &impl Frame) -> Option<Ethernet> {
    let mut ethertype = read_be16(frame, ETHERTYPE_OFFSET)?;
    let mut l3_offset = HEADER_LEN;
    let mut vlan_id = 0;
    for tag in 0..MAX_VLAN_TAGS {
        if ethertype != ETHERTYPE_VLAN && ethertype != ETHERTYPE_QINQ {
            break;
        }
        // The TCI sits where the EtherType would have been; the real one follows it.
        let tci = read_be16(frame, l3_offset)?;
        if tag == 0 {
            vlan_id = tci & VLAN_ID_MASK;
        }
        ethertype = read_be16(frame, l3_offset + 2)?;
        l3_offset += VLAN_TAG_LEN;
    }
    Some(Ethernet { ethertype, l3_offset, vlan_id })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{frame::SliceFrame, test_frames::udp4};

    #[test]
    fn tags_are_stepped_over_and_the_outer_one_names_the_vlan() {
        for (tags, offset, vlan) in [(&[][..], 14, 0), (&[100][..], 18, 100), (&[200, 300][..], 22, 200)] {
            let frame = udp4(tags, (5060, 5060), b"x");
            let eth = parse(&SliceFrame(&frame)).expect("parsed");
            assert_eq!((eth.ethertype, eth.l3_offset, eth.vlan_id), (ETHERTYPE_IPV4, offset, vlan), "{tags:?}");
        }
    }

    #[test]
    fn a_frame_that_ends_inside_a_tag_is_none() {
        let frame = udp4(&[100], (5060, 5060), b"x");
        assert!(parse(&SliceFrame(&frame[..16])).is_none());
        assert!(parse(&SliceFrame(&frame[..13])).is_none());
    }
}
