//! The `__print_symbolic(REC->field, { value, "NAME" }, ...)` tables in a tracepoint's
//! `print fmt:` line: the kernel's own names for a field's values (KVM exit reasons,
//! `KVM_EXIT_*` codes, MMIO access types), read from this kernel rather than copied from
//! headers that change between versions and architectures.

use std::collections::BTreeMap;

use crate::ebpf::format::FormatError;

const PRINT_FMT: &str = "print fmt:";
const PRINT_SYMBOLIC: &str = "__print_symbolic(";
const RECORD: &str = "REC->";

/// One `__print_symbolic` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SymbolicTable {
    /// Where the table starts in the print fmt, for error messages.
    pub at: usize,
    /// The record field it names (`exit_reason` in `REC->exit_reason & 0xffff`).
    pub field: String,
    /// The bits of the field it looks up (`0xffff` above; all bits without a mask).
    pub mask: u32,
    /// The test that picks this table, as in `(REC->isa == 1) ? __print_symbolic(...)`.
    pub condition: Option<FieldEquals>,
    /// Name of each value. Entry values are truncated to 32 bits as C does for an
    /// `unsigned int` field (`-1` is `0xffffffff`); of two entries for one value, the first wins
    /// as in the kernel's lookup.
    pub names: BTreeMap<u32, String>,
}

/// `REC-><field> == <value>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldEquals {
    pub field: String,
    pub value: u32,
}

impl SymbolicTable {
    /// The name of field value `value`: the table's name of its masked bits, or the number in
    /// decimal; bits outside the mask (flags such as VMX's `FAILED_VMENTRY`) follow in hex.
    pub fn name(&self, value: u32) -> String {
        let looked_up = value & self.mask;
        let mut name = match self.names.get(&looked_up) {
            Some(name) => name.clone(),
            None => looked_up.to_string(),
        };
        let flags = value & !self.mask;
        if flags != 0 {
            name.push_str(&format!(" flags 0x{flags:x}"));
        }
        name
    }
}

/// The text after `print fmt:` in a format file, if it has that line.
pub fn print_fmt(format_text: &str) -> Option<&str> {
    format_text
        .lines()
        .find_map(|line| line.trim_start().strip_prefix(PRINT_FMT))
        .map(str::trim)
}

/// Every `__print_symbolic` table of `print_fmt`, in order.
pub fn parse_symbolic_tables(print_fmt: &str) -> Result<Vec<SymbolicTable>, FormatError> {
    let mut tables = Vec::new();
    let mut from = 0;
    while let Some(found) = print_fmt[from..].find(PRINT_SYMBOLIC) {
        let at = from + found;
        let mut cursor = Cursor {
            text: print_fmt,
            pos: at + PRINT_SYMBOLIC.len(),
        };
        tables.push(cursor.table(at, condition_before(&print_fmt[..at]))?);
        from = cursor.pos;
    }
    Ok(tables)
}

/// The `(REC->field == value) ?` right before a table, if there is one.
fn condition_before(text: &str) -> Option<FieldEquals> {
    let test = text.trim_end().strip_suffix('?')?.trim_end();
    let test = test.strip_suffix(')')?;
    let test = &test[test.rfind('(')? + 1..];
    let (left, right) = test.split_once("==")?;
    let field = left
        .trim()
        .strip_prefix(RECORD)
        .filter(|f| is_identifier(f))?;
    Some(FieldEquals {
        field: field.to_owned(),
        value: parse_integer_sum(right)?,
    })
}

/// `REC->field` or `REC->field & mask`, in optional parentheses: the field and the mask.
fn parse_table_value(expression: &str) -> Option<(String, u32)> {
    let mut expression = expression.trim();
    while let Some(inner) = expression
        .strip_prefix('(')
        .and_then(|rest| rest.strip_suffix(')'))
    {
        expression = inner.trim();
    }
    let rest = expression.strip_prefix(RECORD)?;
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    let (field, rest) = rest.split_at(end);
    if !is_identifier(field) {
        return None;
    }
    let rest = rest.trim();
    let mask = if rest.is_empty() {
        u32::MAX
    } else {
        parse_integer_sum(rest.strip_prefix('&')?)?
    };
    Some((field.to_owned(), mask))
}

fn is_identifier(text: &str) -> bool {
    text.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A sum of C integer literals (`0x040 + 13`, `-1`, `4U`) as the 32-bit value an
/// `unsigned int` field would compare equal to; None for anything else or out of range.
fn parse_integer_sum(expression: &str) -> Option<u32> {
    let mut sum: i64 = 0;
    for term in expression.split('+') {
        sum = sum.checked_add(parse_integer(term.trim())?)?;
    }
    if let Ok(value) = u32::try_from(sum) {
        Some(value)
    } else {
        // A negative constant, converted as C converts it to unsigned int.
        i32::try_from(sum).ok().map(|value| value as u32)
    }
}

fn parse_integer(literal: &str) -> Option<i64> {
    let (negative, digits) = match literal.strip_prefix('-') {
        Some(rest) => (true, rest.trim_start()),
        None => (false, literal),
    };
    let digits = digits.trim_end_matches(['u', 'U', 'l', 'L']);
    let magnitude = if let Some(hex) = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        i64::from_str_radix(hex, 16).ok()?
    } else if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        digits.parse().ok()?
    } else {
        return None;
    };
    Some(if negative { -magnitude } else { magnitude })
}

/// A position in the print fmt, moving forward.
struct Cursor<'a> {
    text: &'a str,
    pos: usize,
}

impl Cursor<'_> {
    fn error(&self, problem: &'static str) -> FormatError {
        FormatError::PrintFmt {
            at: self.pos,
            problem,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn skip_whitespace(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_whitespace()) {
            self.pos += 1;
        }
    }

    /// Skips whitespace and then `expected`.
    fn expect(&mut self, expected: u8, problem: &'static str) -> Result<(), FormatError> {
        self.skip_whitespace();
        if self.peek() != Some(expected) {
            return Err(self.error(problem));
        }
        self.pos += 1;
        Ok(())
    }

    /// The rest of `__print_symbolic(` up to and including its `)`.
    fn table(
        &mut self,
        at: usize,
        condition: Option<FieldEquals>,
    ) -> Result<SymbolicTable, FormatError> {
        let value = self.expression()?;
        let (field, mask) = parse_table_value(value)
            .ok_or_else(|| self.error("the table's value is not `REC->field [& mask]`"))?;
        let mut names = BTreeMap::new();
        loop {
            self.skip_whitespace();
            match self.peek() {
                Some(b')') => {
                    self.pos += 1;
                    break;
                }
                Some(b',') => self.pos += 1,
                _ => return Err(self.error("expected `,` or `)` after a table entry")),
            }
            self.expect(b'{', "expected `{` to open a table entry")?;
            let value = self.expression()?;
            let value = parse_integer_sum(value)
                .ok_or_else(|| self.error("a table entry's value is not an integer"))?;
            self.expect(b',', "expected `,` after a table entry's value")?;
            let name = self.string_literals()?;
            self.expect(b'}', "expected `}` to close a table entry")?;
            names.entry(value).or_insert(name);
        }
        Ok(SymbolicTable {
            at,
            field,
            mask,
            condition,
            names,
        })
    }

    /// Text up to the next `,` outside parentheses and strings (the `,` is not consumed).
    fn expression(&mut self) -> Result<&str, FormatError> {
        let start = self.pos;
        let mut depth = 0usize;
        while let Some(byte) = self.peek() {
            match byte {
                b',' if depth == 0 => return Ok(&self.text[start..self.pos]),
                b'(' | b'{' => depth += 1,
                b')' | b'}' if depth == 0 => {
                    return Err(self.error("expected `,` before a closing bracket"));
                }
                b')' | b'}' => depth -= 1,
                b'"' => {
                    self.string_literal()?;
                    continue;
                }
                _ => {}
            }
            self.pos += 1;
        }
        Err(self.error("the table is not closed"))
    }

    /// One or more adjacent string literals, joined as C joins them
    /// (`"KVM_EXIT_" "IO"` is `KVM_EXIT_IO`).
    fn string_literals(&mut self) -> Result<String, FormatError> {
        self.skip_whitespace();
        if self.peek() != Some(b'"') {
            return Err(self.error("a table entry's name is not a string"));
        }
        let mut joined = String::new();
        while self.peek() == Some(b'"') {
            joined.push_str(&self.string_literal()?);
            self.skip_whitespace();
        }
        Ok(joined)
    }

    /// The string literal at the cursor, with `\"` and `\\` unescaped.
    fn string_literal(&mut self) -> Result<String, FormatError> {
        let start = self.pos;
        self.pos += 1;
        let mut value = String::new();
        let mut chars = self.text[self.pos..].char_indices();
        while let Some((offset, c)) = chars.next() {
            match c {
                '"' => {
                    self.pos += offset + 1;
                    return Ok(value);
                }
                '\\' => match chars.next() {
                    Some((_, escaped @ ('"' | '\\'))) => value.push(escaped),
                    Some((_, other)) => {
                        value.push('\\');
                        value.push(other);
                    }
                    None => break,
                },
                _ => value.push(c),
            }
        }
        self.pos = start;
        Err(self.error("a string is not closed"))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// /sys/kernel/tracing/events/kvm/<name>/format on Linux 6.18 (x86_64, kvm with PVM).
    pub(crate) const KVM_EXIT: &str = include_str!("testdata/kvm_exit.format");
    pub(crate) const KVM_USERSPACE_EXIT: &str = include_str!("testdata/kvm_userspace_exit.format");
    pub(crate) const KVM_PIO: &str = include_str!("testdata/kvm_pio.format");
    pub(crate) const KVM_MMIO: &str = include_str!("testdata/kvm_mmio.format");
    pub(crate) const KVM_HALT_POLL_NS: &str = include_str!("testdata/kvm_halt_poll_ns.format");
    pub(crate) const KVM_VCPU_WAKEUP: &str = include_str!("testdata/kvm_vcpu_wakeup.format");

    fn tables_of(format_text: &str) -> Vec<SymbolicTable> {
        let print_fmt = print_fmt(format_text).expect("has a print fmt");
        parse_symbolic_tables(print_fmt).expect("parses")
    }

    #[test]
    fn kvm_exit_has_a_vmx_and_an_svm_table() {
        let tables = tables_of(KVM_EXIT);
        assert_eq!(tables.len(), 2);
        let (vmx, svm) = (&tables[0], &tables[1]);

        assert_eq!(vmx.field, "exit_reason");
        assert_eq!(vmx.mask, 0xffff);
        assert_eq!(
            vmx.condition,
            Some(FieldEquals {
                field: "isa".into(),
                value: 1
            })
        );
        assert_eq!(vmx.names.len(), 65);
        assert_eq!(vmx.name(0), "EXCEPTION_NMI");
        assert_eq!(vmx.name(12), "HLT");
        assert_eq!(vmx.name(48), "EPT_VIOLATION");
        assert_eq!(vmx.name(85), "MSR_WRITE_IMM");
        // Not in the table: the number. A failed VM entry keeps its flag bit.
        assert_eq!(vmx.name(35), "35");
        assert_eq!(vmx.name(0x8000_0021), "INVALID_STATE flags 0x80000000");

        assert_eq!(svm.field, "exit_reason");
        assert_eq!(svm.mask, u32::MAX);
        // After `:`, not after a test: the other isa values.
        assert_eq!(svm.condition, None);
        assert_eq!(svm.names.len(), 110);
        assert_eq!(svm.name(0x000), "read_cr0");
        // `{ 0x040 + 14, "PF excp" }`
        assert_eq!(svm.name(0x04e), "PF excp");
        assert_eq!(svm.name(0x078), "hlt");
        assert_eq!(svm.name(0x400), "npf");
        assert_eq!(svm.name(0x8000_0001), "vmgexit_mmio_read");
        assert_eq!(svm.name(0x8000_fffd), "vmgexit_hypervisor_feature");
        // `{ -1, "invalid_guest_state" }` in an unsigned int field.
        assert_eq!(svm.name(u32::MAX), "invalid_guest_state");
    }

    #[test]
    fn kvm_userspace_exit_names_join_adjacent_strings() {
        let tables = tables_of(KVM_USERSPACE_EXIT);
        assert_eq!(tables.len(), 1);
        let table = &tables[0];
        assert_eq!(table.field, "reason");
        assert_eq!(table.condition, None);
        assert_eq!(table.names.len(), 31);
        assert_eq!(table.name(0), "KVM_EXIT_UNKNOWN");
        assert_eq!(table.name(2), "KVM_EXIT_IO");
        assert_eq!(table.name(6), "KVM_EXIT_MMIO");
        assert_eq!(table.name(30), "KVM_EXIT_X86_WRMSR");
        assert_eq!(table.name(31), "31");
    }

    #[test]
    fn kvm_mmio_types() {
        let tables = tables_of(KVM_MMIO);
        assert_eq!(tables.len(), 1);
        assert_eq!(tables[0].field, "type");
        assert_eq!(
            tables[0].names,
            BTreeMap::from([
                (0, "unsatisfied-read".to_owned()),
                (1, "read".to_owned()),
                (2, "write".to_owned()),
            ])
        );
    }

    #[test]
    fn formats_without_tables() {
        for format_text in [KVM_PIO, KVM_HALT_POLL_NS, KVM_VCPU_WAKEUP] {
            assert_eq!(tables_of(format_text), vec![]);
        }
        assert_eq!(print_fmt("name: x\nformat:\n"), None);
    }

    #[test]
    fn malformed_tables_are_errors() {
        let error = |print_fmt: &str| parse_symbolic_tables(print_fmt).expect_err("malformed");
        let problem = |print_fmt: &str| match error(print_fmt) {
            FormatError::PrintFmt { problem, .. } => problem,
            other => panic!("unexpected error {other:?}"),
        };
        // Cut off in the middle, as a truncated file would be.
        assert_eq!(
            error(r#""%s", __print_symbolic(REC->type, { 0, "unsatisfied-read" }, { 1, "re"#),
            FormatError::PrintFmt {
                at: 66,
                problem: "a string is not closed"
            }
        );
        assert_eq!(
            problem(r#"__print_symbolic(REC->type, { 0, "a" }, { 1 "b" })"#),
            "expected `,` before a closing bracket"
        );
        assert_eq!(
            problem(r#"__print_symbolic(REC->type, { zero, "a" })"#),
            "a table entry's value is not an integer"
        );
        assert_eq!(
            problem(r#"__print_symbolic(REC->type, { 0x1ffffffff, "a" })"#),
            "a table entry's value is not an integer"
        );
        assert_eq!(
            problem(r#"__print_symbolic(REC->type, { 0, a })"#),
            "a table entry's name is not a string"
        );
        assert_eq!(
            problem(r#"__print_symbolic(REC->type, 0, "a")"#),
            "expected `{` to open a table entry"
        );
        assert_eq!(
            problem(r#"__print_symbolic(type, { 0, "a" })"#),
            "the table's value is not `REC->field [& mask]`"
        );
        assert_eq!(
            problem(r#"__print_symbolic(REC->type, { 0, "a" }"#),
            "expected `,` or `)` after a table entry"
        );
        assert_eq!(
            problem(r#"__print_symbolic(REC->type"#),
            "the table is not closed"
        );
    }

    #[test]
    fn values_masks_and_conditions() {
        assert_eq!(
            parse_table_value("(REC->exit_reason & 0xffff)"),
            Some(("exit_reason".into(), 0xffff))
        );
        assert_eq!(parse_table_value("REC->a+1"), None);
        assert_eq!(parse_integer_sum("0x040 + 19"), Some(0x53));
        assert_eq!(parse_integer_sum("4U"), Some(4));
        assert_eq!(parse_integer_sum("-1"), Some(u32::MAX));
        assert_eq!(parse_integer_sum(""), None);
        assert_eq!(
            condition_before("x, (REC->isa == 2) ? "),
            Some(FieldEquals {
                field: "isa".into(),
                value: 2
            })
        );
        assert_eq!(condition_before("x, REC->isa ? "), None);
        assert_eq!(condition_before("x : "), None);
        // Duplicate entries: the first one wins, as in the kernel.
        let tables =
            parse_symbolic_tables(r#"__print_symbolic(REC->t, {1,"a"},{1,"b"})"#).expect("parses");
        assert_eq!(tables[0].name(1), "a");
    }
}
