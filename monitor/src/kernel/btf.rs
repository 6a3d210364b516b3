//! Where fields lie in the running kernel's structures, read from its BTF
//! (/sys/kernel/btf/vmlinux): the TLS probes read a socket's addresses at
//! these offsets (see monitor-ebpf's `sock`).
//!
//! Only what that needs: the type section walked to find one struct's
//! members, through anonymous unions and structs. aya parses BTF too but
//! keeps its type walk private, and the BTF crate there is (btf-rs) is
//! LGPL-licensed; the format is a flat table (linux Documentation/bpf/btf.rst).

use std::path::Path;

use monitor_common::tls::SockOffsets;

pub const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

const MAGIC: u16 = 0xeb9f;
const HEADER_LEN: usize = 24;
const TYPE_HEAD_LEN: usize = 12;

// BTF kinds (btf.rst §2.2) and the bytes each adds after the common type head.
const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_ENUM64: u32 = 19;
const MAX_KIND: u32 = 19;

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{0} is not BTF the way this reader knows it ({1})")]
    Format(String, &'static str),
    #[error("the kernel's BTF has no {0}")]
    Missing(String),
}

/// A struct or union: its name and members as (name, type id, bit offset).
struct Composite {
    name: u32,
    is_struct: bool,
    members: Vec<(u32, u32, u32)>,
}

pub struct Btf {
    /// By type id (id 0 is void); `None` for kinds other than struct and union.
    types: Vec<Option<Composite>>,
    strings: Vec<u8>,
}

impl Btf {
    pub fn from_file(path: &Path) -> Result<Self, BtfError> {
        let shown = path.display().to_string();
        let data = std::fs::read(path).map_err(|source| BtfError::Read { path: shown.clone(), source })?;
        Self::parse(&data).map_err(|why| BtfError::Format(shown, why))
    }

    pub fn parse(data: &[u8]) -> Result<Self, &'static str> {
        let u16_at = |at: usize| data.get(at..at + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
        let u32_at = |at: usize| data.get(at..at + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        if u16_at(0) != Some(MAGIC) {
            return Err("no little-endian BTF magic");
        }
        let field = |at| u32_at(at).map(|v| v as usize).ok_or("a short header");
        let header_len = field(4)?;
        let (type_off, type_len, str_off, str_len) = (field(8)?, field(12)?, field(16)?, field(20)?);
        if header_len < HEADER_LEN {
            return Err("a short header");
        }
        let types_at = header_len + type_off;
        let strings_at = header_len + str_off;
        let strings = data.get(strings_at..strings_at + str_len).ok_or("a string section past the end")?.to_vec();
        let types_end = types_at + type_len;
        if types_end > data.len() {
            return Err("a type section past the end");
        }
        let mut types = vec![None];
        let mut at = types_at;
        while at < types_end {
            let (Some(name), Some(info)) = (u32_at(at), u32_at(at + 4)) else {
                return Err("a type cut short");
            };
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            let bitfields = info >> 31 == 1;
            at += TYPE_HEAD_LEN;
            let extra = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => vlen * 12,
                KIND_ENUM | KIND_FUNC_PROTO => vlen * 8,
                k if k <= MAX_KIND => 0,
                _ => return Err("an unknown kind"),
            };
            if at + extra > types_end {
                return Err("a type cut short");
            }
            if matches!(kind, KIND_STRUCT | KIND_UNION) {
                let mut members = Vec::with_capacity(vlen);
                for m in 0..vlen {
                    let m_at = at + m * 12;
                    let (Some(m_name), Some(m_type), Some(offset)) = (u32_at(m_at), u32_at(m_at + 4), u32_at(m_at + 8))
                    else {
                        return Err("a member cut short");
                    };
                    // With bitfields, the low 24 bits are the offset and the high 8 the width.
                    let bits = if bitfields { offset & 0x00ff_ffff } else { offset };
                    members.push((m_name, m_type, bits));
                }
                types.push(Some(Composite { name, is_struct: kind == KIND_STRUCT, members }));
            } else {
                types.push(None);
            }
            at += extra;
        }
        Ok(Self { types, strings })
    }

    fn name(&self, offset: u32) -> &[u8] {
        let rest = self.strings.get(offset as usize..).unwrap_or_default();
        &rest[..rest.iter().position(|b| *b == 0).unwrap_or(rest.len())]
    }

    /// The byte offset of `member` in struct `name`, looking through anonymous
    /// unions and structs as C does.
    pub fn member_offset(&self, name: &str, member: &str) -> Result<u32, BtfError> {
        let id = self
            .types
            .iter()
            .position(|t| t.as_ref().is_some_and(|c| c.is_struct && self.name(c.name) == name.as_bytes()))
            .ok_or_else(|| BtfError::Missing(format!("struct {name}")))?;
        self.find(id as u32, member.as_bytes(), 0)
            .map(|bits| bits / 8)
            .ok_or_else(|| BtfError::Missing(format!("{name}.{member}")))
    }

    fn find(&self, id: u32, member: &[u8], base_bits: u32) -> Option<u32> {
        let composite = self.types.get(id as usize)?.as_ref()?;
        for (m_name, m_type, bits) in &composite.members {
            let name = self.name(*m_name);
            if name == member {
                return Some(base_bits + bits);
            }
            if name.is_empty()
                && let Some(found) = self.find(*m_type, member, base_bits + bits)
            {
                return Some(found);
            }
        }
        None
    }
}

/// Where `struct sock_common` keeps the addresses and ports of a socket.
pub fn sock_offsets(btf: &Btf) -> Result<SockOffsets, BtfError> {
    let at = |member| btf.member_offset("sock_common", member);
    Ok(SockOffsets {
        daddr: at("skc_daddr")?,
        rcv_saddr: at("skc_rcv_saddr")?,
        dport: at("skc_dport")?,
        num: at("skc_num")?,
        family: at("skc_family")?,
        v6_daddr: at("skc_v6_daddr")?,
        v6_rcv_saddr: at("skc_v6_rcv_saddr")?,
        known: 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The running kernel's own BTF: the layout of `struct sock_common` that
    /// has held on x86_64 since Linux 4.x.
    #[test]
    fn reads_the_running_kernels_sock_common() {
        let path = Path::new(VMLINUX);
        if !path.exists() {
            eprintln!("skipped: this kernel has no {VMLINUX}");
            return;
        }
        let offsets = sock_offsets(&Btf::from_file(path).unwrap()).unwrap();
        assert_eq!((offsets.daddr, offsets.rcv_saddr, offsets.dport, offsets.num), (0, 4, 12, 14));
        assert_eq!(offsets.family, 16);
        assert!(offsets.v6_daddr >= 24 && offsets.v6_rcv_saddr == offsets.v6_daddr + 16, "{offsets:?}");
    }

    #[test]
    fn refuses_what_is_not_btf() {
        assert!(Btf::parse(b"").is_err());
        assert!(Btf::parse(&[0x9f, 0xeb, 1, 0, 24, 0, 0, 0, 0, 0, 0, 0, 200, 0, 0, 0]).is_err());
        let mut cut = vec![0x9f, 0xeb, 1, 0, 24, 0, 0, 0];
        cut.extend_from_slice(&[0, 0, 0, 0, 12, 0, 0, 0, 12, 0, 0, 0, 1, 0, 0, 0]);
        // A struct of one member, with no room for the member.
        cut.extend_from_slice(&[0, 0, 0, 0, 1, 0, 0, 0x04, 0, 0, 0, 0, 0]);
        assert!(Btf::parse(&cut).is_err());
    }
}
