//! Tracepoint record layouts from the kernel's `format` files
//! (`<tracefs>/events/<category>/<name>/format`): they differ between kernels, so programs get
//! their field offsets at load time rather than as constants built for one kernel.

use std::fs;
use std::path::{Path, PathBuf};

/// One `field:` line of a tracepoint's `format` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TracepointField {
    /// The C name, without type or array suffix (`rwbs` for `char rwbs[10]`).
    pub name: String,
    pub offset: u32,
    pub size: u32,
}

/// What is wrong with a tracepoint's `format` file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("cannot read it: {0}")]
    Read(String),
    #[error("line {line}: {problem}")]
    Malformed { line: usize, problem: &'static str },
    #[error("it has no field `{0}`")]
    MissingField(&'static str),
    #[error("field `{name}` has size {size}, expected {expected}")]
    FieldSize {
        name: &'static str,
        size: u32,
        expected: &'static str,
    },
    #[error("print fmt, byte {at}: {problem}")]
    PrintFmt { at: usize, problem: &'static str },
    #[error("print fmt: {0}")]
    PrintFmtShape(&'static str),
}

/// Parses the `field:<declaration>; offset:<n>; size:<n>; signed:<0|1>;` lines of a
/// tracepoint's `format` file (`/sys/kernel/tracing/events/<category>/<name>/format`).
pub fn parse_format(text: &str) -> Result<Vec<TracepointField>, FormatError> {
    let mut fields = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if !line.starts_with("field:") {
            continue;
        }
        let malformed = |problem| FormatError::Malformed {
            line: index + 1,
            problem,
        };
        let (mut declaration, mut offset, mut size) = (None, None, None);
        for part in line.split(';').map(str::trim) {
            if let Some(value) = part.strip_prefix("field:") {
                declaration = Some(value);
            } else if let Some(value) = part.strip_prefix("offset:") {
                offset = Some(value.parse().map_err(|_| malformed("bad offset"))?);
            } else if let Some(value) = part.strip_prefix("size:") {
                size = Some(value.parse().map_err(|_| malformed("bad size"))?);
            }
        }
        let name = declaration
            .and_then(|declaration| declaration.split_whitespace().last())
            .map(|last| {
                let last = last.trim_start_matches('*');
                last.split_once('[').map_or(last, |(name, _)| name)
            })
            .filter(|name| !name.is_empty())
            .ok_or_else(|| malformed("no field name"))?;
        fields.push(TracepointField {
            name: name.to_owned(),
            offset: offset.ok_or_else(|| malformed("no offset"))?,
            size: size.ok_or_else(|| malformed("no size"))?,
        });
    }
    Ok(fields)
}

/// The `format` file of tracepoint `category:name`.
pub fn format_path(tracefs: &Path, category: &str, name: &str) -> PathBuf {
    tracefs
        .join("events")
        .join(category)
        .join(name)
        .join("format")
}

/// Reads and parses a `format` file.
pub fn read_format(path: &Path) -> Result<Vec<TracepointField>, FormatError> {
    let text = fs::read_to_string(path).map_err(|error| FormatError::Read(error.to_string()))?;
    parse_format(&text)
}

/// Field `name`, whose size must be in `sizes` (`expected` says which, in words).
pub fn find_field<'a>(
    fields: &'a [TracepointField],
    name: &'static str,
    sizes: std::ops::RangeInclusive<u32>,
    expected: &'static str,
) -> Result<&'a TracepointField, FormatError> {
    let field = fields
        .iter()
        .find(|field| field.name == name)
        .ok_or(FormatError::MissingField(name))?;
    if !sizes.contains(&field.size) {
        return Err(FormatError::FieldSize {
            name,
            size: field.size,
            expected,
        });
    }
    Ok(field)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// /sys/kernel/tracing/events/block/block_io_start/format on Linux 6.18 (x86_64).
    pub(crate) const BLOCK_IO_START: &str = "name: block_io_start
ID: 2102
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:dev_t dev;\toffset:8;\tsize:4;\tsigned:0;
\tfield:sector_t sector;\toffset:16;\tsize:8;\tsigned:0;
\tfield:unsigned int nr_sector;\toffset:24;\tsize:4;\tsigned:0;
\tfield:unsigned int bytes;\toffset:28;\tsize:4;\tsigned:0;
\tfield:unsigned short ioprio;\toffset:32;\tsize:2;\tsigned:0;
\tfield:char rwbs[10];\toffset:34;\tsize:10;\tsigned:0;
\tfield:char comm[16];\toffset:44;\tsize:16;\tsigned:0;
\tfield:__data_loc char[] cmd;\toffset:60;\tsize:4;\tsigned:0;

print fmt: \"%d,%d %s %u (%s) %llu + %u %s,%u,%u [%s]\", ((unsigned int) ((REC->dev) >> 20)), \
((unsigned int) ((REC->dev) & ((1U << 20) - 1))), REC->rwbs, REC->bytes, __get_str(cmd), \
(unsigned long long)REC->sector, REC->nr_sector, REC->comm
";

    pub(crate) fn field(name: &str, offset: u32, size: u32) -> TracepointField {
        TracepointField {
            name: name.to_owned(),
            offset,
            size,
        }
    }

    #[test]
    fn parses_every_field_of_block_io_start() {
        let fields = parse_format(BLOCK_IO_START).expect("parses");
        assert_eq!(fields.len(), 12);
        assert_eq!(fields[0], field("common_type", 0, 2));
        assert_eq!(fields[6], field("nr_sector", 24, 4));
        assert_eq!(fields[9], field("rwbs", 34, 10));
        // `__data_loc char[] cmd`: the name is the last word, after the array type.
        assert_eq!(fields[11], field("cmd", 60, 4));
    }

    #[test]
    fn pointer_and_spacing_variants() {
        let fields = parse_format(
            "field:const char * name;offset:8;size:8;signed:0;\n\
             \tfield:void *ptr;\toffset:16;\tsize:8;\tsigned:0;\n",
        )
        .expect("parses");
        assert_eq!(fields, vec![field("name", 8, 8), field("ptr", 16, 8)]);
    }

    #[test]
    fn malformed_lines_are_errors() {
        assert_eq!(
            parse_format("name: x\n\tfield:int a;\tsize:4;\tsigned:1;\n"),
            Err(FormatError::Malformed {
                line: 2,
                problem: "no offset"
            })
        );
        assert_eq!(
            parse_format("\tfield:int a;\toffset:x;\tsize:4;\n"),
            Err(FormatError::Malformed {
                line: 1,
                problem: "bad offset"
            })
        );
        assert_eq!(
            parse_format("\tfield:;\toffset:0;\tsize:4;\n"),
            Err(FormatError::Malformed {
                line: 1,
                problem: "no field name"
            })
        );
    }
}
