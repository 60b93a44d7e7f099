//! Byte offsets of struct members in raw BTF (the kernel's `/sys/kernel/btf/vmlinux`).
//!
//! The net probe needs two offsets out of the ~5 MiB of kernel BTF. Building a full type table
//! for them (btfparse) took 110 ms and 55 MiB of heap that glibc then kept; this reads the raw
//! data where it lies, with one index of where each type starts (4 bytes a type), and
//! bounds-checks every read: data that is not BTF is an error, never a panic.

use std::{fs, io::Read, os::fd::AsRawFd, ptr::NonNull};

/// Where the kernel's own BTF is.
pub const KERNEL_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Kinds (`BTF_KIND_*` in the kernel's `include/uapi/linux/btf.h`).
const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;
/// The highest kind this reader knows the size of.
const KIND_MAX: u32 = 19;

const MAGIC: u16 = 0xeb9f;
/// Magic, version, flags, then 5 u32: header length and the two sections' offsets and lengths.
const HEADER_LEN: usize = 24;
/// `name_off`, `info` and `size`/`type` of every type.
const TYPE_LEN: usize = 12;
/// Nesting of anonymous structs and unions followed before giving up (the kernel's own limit
/// for BTF it loads is 32).
const MAX_DEPTH: u32 = 32;

/// Why a member's offset could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BtfError {
    #[error("cannot read it: {0}")]
    Read(String),
    #[error("it is not BTF this reader understands: {0}")]
    Malformed(&'static str),
    #[error("no byte offset for {member}: {problem}")]
    Member {
        member: &'static str,
        problem: String,
    },
}

/// The bytes of the kernel's BTF: mapped where the kernel allows it (Linux 6.16 on), else read.
/// Reading copies 5 MiB in 1,300 page-sized reads (5 ms); the mapping copies nothing (0.2 ms
/// to touch every page) and does not count in the resident set.
pub enum KernelBtfBytes {
    Mapped { at: NonNull<u8>, len: usize },
    Read(Vec<u8>),
}

impl KernelBtfBytes {
    pub fn load() -> Result<Self, BtfError> {
        let read_error = |error: std::io::Error| BtfError::Read(error.to_string());
        let file = fs::File::open(KERNEL_BTF).map_err(read_error)?;
        let len = file.metadata().map_err(read_error)?.len();
        if let Ok(len) = usize::try_from(len)
            && len > 0
        {
            // SAFETY: a new private read-only mapping of the whole file, checked below; the
            // kernel refuses it (and the file is read instead) where it does not support it.
            let at = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ,
                    libc::MAP_PRIVATE,
                    file.as_raw_fd(),
                    0,
                )
            };
            if at != libc::MAP_FAILED
                && let Some(at) = NonNull::new(at.cast::<u8>())
            {
                return Ok(Self::Mapped { at, len });
            }
        }
        let mut bytes = Vec::new();
        (&file).read_to_end(&mut bytes).map_err(read_error)?;
        Ok(Self::Read(bytes))
    }

    pub fn bytes(&self) -> &[u8] {
        match self {
            // SAFETY: `len` readable bytes are mapped at `at` until `self` is dropped, and the
            // kernel's BTF never changes while it runs (no write or truncation can reach it),
            // so the slice cannot change or vanish under its borrow.
            Self::Mapped { at, len } => unsafe { std::slice::from_raw_parts(at.as_ptr(), *len) },
            Self::Read(bytes) => bytes,
        }
    }
}

impl Drop for KernelBtfBytes {
    fn drop(&mut self) {
        if let Self::Mapped { at, len } = self {
            // SAFETY: the mapping `load` made, unmapped once; no borrow of it outlives `self`.
            unsafe {
                libc::munmap(at.as_ptr().cast(), *len);
            }
        }
    }
}

/// Raw BTF of this machine's byte order, with the start of every type indexed.
pub struct Btf<'a> {
    types: &'a [u8],
    strings: &'a [u8],
    /// Where type id `i + 1` starts in `types` (id 0 is `void`).
    starts: Vec<u32>,
}

/// One type's fixed part.
#[derive(Clone, Copy)]
struct Type {
    name_off: u32,
    kind: u32,
    kind_flag: bool,
    vlen: usize,
    /// `size` or `type`, by kind.
    size_or_type: u32,
    /// Where its kind-specific data starts in `types`.
    data: usize,
}

impl<'a> Btf<'a> {
    /// Checks the header and indexes the types of `raw`.
    pub fn parse(raw: &'a [u8]) -> Result<Self, BtfError> {
        let magic = raw
            .first_chunk()
            .map(|b| u16::from_ne_bytes(*b))
            .ok_or(BtfError::Malformed("shorter than its header"))?;
        if magic != MAGIC {
            return Err(BtfError::Malformed(if magic == MAGIC.swap_bytes() {
                "the other byte order"
            } else {
                "no BTF magic number"
            }));
        }
        let word = |at: usize| read_u32(raw, at).ok_or(BtfError::Malformed("header cut short"));
        let header_len = word(4)? as usize;
        if header_len < HEADER_LEN {
            return Err(BtfError::Malformed("header too short"));
        }
        let section = |offset: u32, len: u32| {
            let start = header_len.checked_add(offset as usize)?;
            raw.get(start..start.checked_add(len as usize)?)
        };
        let types = section(word(8)?, word(12)?)
            .ok_or(BtfError::Malformed("type section out of bounds"))?;
        let strings = section(word(16)?, word(20)?)
            .ok_or(BtfError::Malformed("string section out of bounds"))?;
        let mut btf = Btf {
            types,
            strings,
            starts: Vec::new(),
        };
        let mut at = 0;
        while at < types.len() {
            let start = u32::try_from(at).map_err(|_| BtfError::Malformed("too large"))?;
            btf.starts.push(start);
            at = btf.type_at(at)?.end()?;
        }
        if at > types.len() {
            return Err(BtfError::Malformed("the last type cut short"));
        }
        Ok(btf)
    }

    /// The byte offset of `member` in struct `type_name`, found through anonymous structs and
    /// unions; `described` names it in errors (`"sk_buff.dev"`).
    pub fn member_offset(
        &self,
        type_name: &str,
        member: &str,
        described: &'static str,
    ) -> Result<u32, BtfError> {
        let problem = |problem: String| BtfError::Member {
            member: described,
            problem,
        };
        let id = self
            .find_struct(type_name)?
            .ok_or_else(|| problem(format!("no struct {type_name}")))?;
        match self.find_member(id, member.as_bytes(), 0, 0)? {
            Some(Found::Bits(bits)) if bits % 8 == 0 => {
                u32::try_from(bits / 8).map_err(|_| problem("an offset beyond 4 GiB".into()))
            }
            Some(Found::Bits(_)) => Err(problem("not on a byte boundary".into())),
            Some(Found::Bitfield) => Err(problem("a bitfield".into())),
            None => Err(problem(format!(
                "struct {type_name} has no member {member}"
            ))),
        }
    }

    /// The id of the first struct named `name`.
    fn find_struct(&self, name: &str) -> Result<Option<u32>, BtfError> {
        self.find(name, KIND_STRUCT)
    }

    /// The id of the typedef named `name`, e.g. `btf_trace_block_rq_issue`: the prototype a
    /// BTF tracepoint is attached by.
    pub fn typedef_id(&self, name: &str) -> Result<Option<u32>, BtfError> {
        self.find(name, KIND_TYPEDEF)
    }

    /// The id of the first type of `kind` named `name`.
    fn find(&self, name: &str, kind: u32) -> Result<Option<u32>, BtfError> {
        for (index, &start) in self.starts.iter().enumerate() {
            let ty = self.type_at(start as usize)?;
            if ty.kind == kind && self.name(ty.name_off)? == name.as_bytes() {
                return Ok(u32::try_from(index + 1).ok());
            }
        }
        Ok(None)
    }

    /// Looks for `member` in struct or union `id`, whose start is `base` bits into the
    /// outermost struct, and in its anonymous struct and union members.
    fn find_member(
        &self,
        id: u32,
        member: &[u8],
        base: u64,
        depth: u32,
    ) -> Result<Option<Found>, BtfError> {
        if depth > MAX_DEPTH {
            return Err(BtfError::Malformed("anonymous members nested too deep"));
        }
        let ty = self.type_by_id(id)?;
        for index in 0..ty.vlen {
            let at = ty.data + index * 12;
            let field = |offset: usize| {
                read_u32(self.types, at + offset).ok_or(BtfError::Malformed("member cut short"))
            };
            let (name, member_type, offset) = (field(0)?, field(4)?, field(8)?);
            // With kind_flag, the offset's top 8 bits are a bitfield's size.
            let (bits, bitfield) = if ty.kind_flag {
                (offset & 0x00ff_ffff, offset >> 24 != 0)
            } else {
                (offset, false)
            };
            let bits = base + u64::from(bits);
            let name = self.name(name)?;
            if name == member {
                return Ok(Some(if bitfield {
                    Found::Bitfield
                } else {
                    Found::Bits(bits)
                }));
            }
            if name.is_empty()
                && let Some(inner) = self.struct_or_union(member_type)?
                && let Some(found) = self.find_member(inner, member, bits, depth + 1)?
            {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// `id` if it is a struct or union, or names one through typedefs and qualifiers.
    fn struct_or_union(&self, mut id: u32) -> Result<Option<u32>, BtfError> {
        for _ in 0..MAX_DEPTH {
            if id == 0 {
                return Ok(None);
            }
            let ty = self.type_by_id(id)?;
            match ty.kind {
                KIND_STRUCT | KIND_UNION => return Ok(Some(id)),
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = ty.size_or_type;
                }
                _ => return Ok(None),
            }
        }
        Err(BtfError::Malformed("a chain of typedefs too long"))
    }

    fn type_by_id(&self, id: u32) -> Result<Type, BtfError> {
        let start = (id as usize)
            .checked_sub(1)
            .and_then(|index| self.starts.get(index))
            .ok_or(BtfError::Malformed("a type id out of range"))?;
        self.type_at(*start as usize)
    }

    fn type_at(&self, at: usize) -> Result<Type, BtfError> {
        let word = |offset: usize| {
            read_u32(self.types, at + offset).ok_or(BtfError::Malformed("type cut short"))
        };
        let info = word(4)?;
        let kind = (info >> 24) & 0x1f;
        if kind == 0 || kind > KIND_MAX {
            return Err(BtfError::Malformed("a type of unknown kind"));
        }
        Ok(Type {
            name_off: word(0)?,
            kind,
            kind_flag: info >> 31 != 0,
            vlen: (info & 0xffff) as usize,
            size_or_type: word(8)?,
            data: at + TYPE_LEN,
        })
    }

    /// The NUL-terminated string at `offset` of the string section.
    fn name(&self, offset: u32) -> Result<&'a [u8], BtfError> {
        let rest = self
            .strings
            .get(offset as usize..)
            .ok_or(BtfError::Malformed("a name out of the string section"))?;
        rest.iter()
            .position(|&b| b == 0)
            .and_then(|end| rest.get(..end))
            .ok_or(BtfError::Malformed("a name without its NUL"))
    }
}

impl Type {
    /// Where the next type starts.
    fn end(&self) -> Result<usize, BtfError> {
        let per_item = match self.kind {
            KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12,
            KIND_ENUM | KIND_FUNC_PROTO => 8,
            _ => 0,
        };
        let fixed = match self.kind {
            KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
            KIND_ARRAY => 12,
            _ => 0,
        };
        self.vlen
            .checked_mul(per_item)
            .and_then(|items| self.data.checked_add(items + fixed))
            .ok_or(BtfError::Malformed("too large"))
    }
}

/// Raw BTF in which each of `typedefs` (name, id) is a typedef (of `void`) at that id and every
/// other id below the highest is a `void *`: all that attaching a BTF tracepoint reads of the
/// kernel's BTF (aya looks the typedef `btf_trace_<tracepoint>` up by name, for the kernel's
/// id of it), without the type table of the whole that aya would build (25 ms, 18 MiB at
/// peak).
pub fn typedefs_at_kernel_ids(typedefs: &[(&str, u32)]) -> Vec<u8> {
    let mut strings = vec![0_u8];
    let mut named = std::collections::HashMap::new();
    for (name, id) in typedefs {
        named.insert(*id, strings.len() as u32);
        strings.extend(name.bytes().chain([0]));
    }
    let last = typedefs.iter().map(|(_, id)| *id).max().unwrap_or(0);
    let mut types = Vec::with_capacity(last as usize * TYPE_LEN);
    for id in 1..=last {
        let (name_off, kind) = match named.get(&id) {
            Some(&name_off) => (name_off, KIND_TYPEDEF),
            None => (0, KIND_PTR),
        };
        // name_off, info (kind in bits 24-28), the type referred to (0: void).
        for word in [name_off, kind << 24, 0] {
            types.extend(word.to_ne_bytes());
        }
    }
    let mut btf = Vec::with_capacity(HEADER_LEN + types.len() + strings.len());
    btf.extend(MAGIC.to_ne_bytes());
    btf.extend([1, 0]); // version, flags
    for word in [HEADER_LEN, 0, types.len(), types.len(), strings.len()] {
        // Header length, then the type and string sections' offsets and lengths.
        btf.extend((word as u32).to_ne_bytes());
    }
    btf.extend(types);
    btf.extend(strings);
    btf
}

/// A member found: its offset in bits, or that it is a bitfield (no byte offset).
enum Found {
    Bits(u64),
    Bitfield,
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(*bytes.get(at..)?.first_chunk()?))
}

/// Raw BTF with `struct net_device { int <ifindex_member> @224 }` and
/// `struct sk_buff { union { struct { void *next; union { struct net_device *dev; }; }; }; }`
/// with `dev` at 16 (`next` at 0, 8 bytes of padding), as in the real `sk_buff`.
#[cfg(test)]
pub(super) fn tiny_btf(ifindex_member: &str) -> Vec<u8> {
    let strings = format!("\0int\0net_device\0{ifindex_member}\0sk_buff\0dev\0next\0");
    let name = |s: &str| {
        let needle = format!("\0{s}\0");
        strings.find(&needle).expect("string present") as u32 + 1
    };
    let info = |kind: u32, vlen: u32| kind << 24 | vlen;
    let (int, ptr, strct, union) = (1, 2, 4, 5);
    let mut types: Vec<u32> = Vec::new();
    // Words 0-3: [1] int, 32-bit signed.
    types.extend([name("int"), info(int, 0), 4, 1 << 24 | 32]);
    // Words 4-9: [2] struct net_device, one member.
    types.extend([name("net_device"), info(strct, 1), 256]);
    types.extend([name(ifindex_member), 1, 224 * 8]);
    // Words 10-12: [3] struct net_device *.
    types.extend([0, info(ptr, 0), 2]);
    // Words 13-18: [4] anonymous union { struct net_device *dev; }.
    types.extend([0, info(union, 1), 8, name("dev"), 3, 0]);
    // Words 19-27: [5] anonymous struct { void *next (as a net_device *); union [4] at 16 }.
    types.extend([0, info(strct, 2), 24, name("next"), 3, 0, 0, 4, 16 * 8]);
    // Words 28-33: [6] anonymous union { struct [5] }.
    types.extend([0, info(union, 1), 24, 0, 5, 0]);
    // Words 34-39: [7] struct sk_buff { union [6] }.
    types.extend([name("sk_buff"), info(strct, 1), 232, 0, 6, 0]);
    let types: Vec<u8> = types.iter().flat_map(|word| word.to_ne_bytes()).collect();

    let mut btf = Vec::new();
    btf.extend(MAGIC.to_ne_bytes());
    btf.extend([1, 0]); // version, flags
    btf.extend((HEADER_LEN as u32).to_ne_bytes());
    btf.extend(0_u32.to_ne_bytes()); // type section offset
    btf.extend((types.len() as u32).to_ne_bytes());
    btf.extend((types.len() as u32).to_ne_bytes()); // string section offset
    btf.extend((strings.len() as u32).to_ne_bytes());
    btf.extend(types);
    btf.extend(strings.as_bytes());
    btf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typedefs_stand_at_the_ids_given() {
        let raw = typedefs_at_kernel_ids(&[("btf_trace_b", 7), ("btf_trace_a", 3)]);
        let btf = Btf::parse(&raw).expect("parses");
        assert_eq!(btf.typedef_id("btf_trace_a"), Ok(Some(3)));
        assert_eq!(btf.typedef_id("btf_trace_b"), Ok(Some(7)));
        assert_eq!(btf.typedef_id("btf_trace_c"), Ok(None));
        let aya_btf = aya::Btf::parse(&raw, aya::Endianness::default()).expect("aya parses it");
        let id = aya_btf.id_by_type_name_kind("btf_trace_b", aya_obj::btf::BtfKind::Typedef);
        assert_eq!(id.ok(), Some(7));
    }

    fn offset(btf: &[u8], type_name: &str, member: &str) -> Result<u32, BtfError> {
        Btf::parse(btf)?.member_offset(type_name, member, "the member")
    }

    #[test]
    fn offsets_through_anonymous_members() {
        let btf = tiny_btf("ifindex");
        assert_eq!(offset(&btf, "sk_buff", "dev"), Ok(16));
        assert_eq!(offset(&btf, "net_device", "ifindex"), Ok(224));
        let missing = |problem: &str| {
            Err(BtfError::Member {
                member: "the member",
                problem: problem.into(),
            })
        };
        assert_eq!(
            offset(&btf, "net_device", "mtu"),
            missing("struct net_device has no member mtu")
        );
        assert_eq!(
            offset(&btf, "task_struct", "pid"),
            missing("no struct task_struct")
        );
    }

    /// Sets the `word`th u32 of `tiny_btf`'s type section (see the layout there).
    fn set_word(btf: &mut [u8], word: usize, value: u32) {
        let at = HEADER_LEN + 4 * word;
        btf[at..at + 4].copy_from_slice(&value.to_ne_bytes());
    }

    fn problem(result: Result<u32, BtfError>) -> String {
        match result {
            Err(BtfError::Member { problem, .. }) => problem,
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn bitfields_and_odd_offsets_have_no_byte_offset() {
        let mut btf = tiny_btf("ifindex");
        // net_device (words 4-9) with kind_flag: its member is a 3-bit bitfield.
        set_word(&mut btf, 5, 1 << 31 | KIND_STRUCT << 24 | 1);
        set_word(&mut btf, 9, (3 << 24) | (224 * 8));
        assert_eq!(problem(offset(&btf, "net_device", "ifindex")), "a bitfield");
        set_word(&mut btf, 9, 224 * 8 + 3);
        assert_eq!(
            problem(offset(&btf, "net_device", "ifindex")),
            "not on a byte boundary"
        );
    }

    #[test]
    fn data_that_is_not_btf_is_an_error() {
        assert_eq!(
            offset(b"not BTF at all, far too short", "sk_buff", "dev"),
            Err(BtfError::Malformed("no BTF magic number"))
        );
        assert_eq!(
            offset(&MAGIC.swap_bytes().to_ne_bytes(), "sk_buff", "dev"),
            Err(BtfError::Malformed("the other byte order"))
        );
        let btf = tiny_btf("ifindex");
        // Every cut is refused or reads only what is there; none panics.
        for len in 0..btf.len() {
            assert!(
                offset(&btf[..len], "sk_buff", "dev").is_err(),
                "cut at {len}"
            );
        }
        // The int (words 0-3) of a kind this reader does not know the size of.
        let mut unknown = btf.clone();
        set_word(&mut unknown, 1, 30 << 24);
        assert_eq!(
            offset(&unknown, "sk_buff", "dev"),
            Err(BtfError::Malformed("a type of unknown kind"))
        );
        // sk_buff's (words 34-39) anonymous member names a type id beyond the last.
        let mut dangling = btf.clone();
        set_word(&mut dangling, 38, 99);
        assert_eq!(
            offset(&dangling, "sk_buff", "dev"),
            Err(BtfError::Malformed("a type id out of range"))
        );
    }

    #[test]
    fn a_union_containing_itself_is_refused() {
        let mut btf = tiny_btf("ifindex");
        // The anonymous union [6] (words 28-33) holds itself instead of struct [5].
        set_word(&mut btf, 32, 6);
        assert_eq!(
            offset(&btf, "sk_buff", "dev"),
            Err(BtfError::Malformed("anonymous members nested too deep"))
        );
    }

    /// The real thing, when this machine has it: offsets that exist in every kernel since BTF.
    #[test]
    fn this_kernel() {
        let Ok(raw) = fs::read(KERNEL_BTF) else {
            return;
        };
        let loaded = KernelBtfBytes::load().expect("loads");
        assert!(
            loaded.bytes() == raw.as_slice(),
            "mapped or read, the same bytes"
        );
        let btf = Btf::parse(loaded.bytes()).expect("the kernel's BTF parses");
        let dev = btf.member_offset("sk_buff", "dev", "sk_buff.dev");
        let ifindex = btf.member_offset("net_device", "ifindex", "net_device.ifindex");
        assert!(matches!(dev, Ok(16)), "{dev:?}");
        assert!(matches!(ifindex, Ok(o) if o > 0), "{ifindex:?}");
    }
}
