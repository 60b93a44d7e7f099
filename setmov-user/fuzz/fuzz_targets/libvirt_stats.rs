//! One domain's bulk statistics record through the mapping from libvirt's typed parameters. The
//! input is turned into a list of named typed parameters; names are mostly built from the ones
//! libvirt sends (`block.<i>.rd.bytes`, ...) so the fuzzer reaches the mapping past its name
//! match, and sometimes free text.
#![no_main]

use arbitrary::Arbitrary;
use setmov::vm::stats::{ParamValue, parse_domain_stats};

/// Names the mapping knows without an index.
const PLAIN: &[&str] = &[
    "state.state",
    "state.reason",
    "cpu.time",
    "cpu.user",
    "vcpu.current",
    "vcpu.maximum",
    "balloon.current",
    "balloon.maximum",
    "balloon.unused",
    "balloon.available",
    "balloon.usable",
    "balloon.rss",
    "balloon.swap_in",
    "balloon.swap_out",
    "balloon.major_fault",
    "balloon.minor_fault",
    "block.count",
    "net.count",
];
/// Prefixes of indexed names and the fields after the index.
const INDEXED: &[(&str, &[&str])] = &[
    ("vcpu.", &["time", "delay", "state", "wait"]),
    (
        "block.",
        &[
            "name", "path", "rd.reqs", "rd.bytes", "rd.times", "wr.reqs", "wr.bytes", "wr.times",
        ],
    ),
    (
        "net.",
        &[
            "name", "rx.bytes", "rx.pkts", "rx.errs", "rx.drop", "tx.bytes", "tx.pkts", "tx.errs",
            "tx.drop",
        ],
    ),
];

#[derive(Debug, Arbitrary)]
enum Name {
    Plain(u8),
    Indexed {
        prefix: u8,
        index: u8,
        field: u8,
    },
    /// An index as text: signs, huge numbers, empty.
    OddIndex {
        prefix: u8,
        index: String,
        field: u8,
    },
    Free(String),
}

#[derive(Debug, Arbitrary)]
enum Value {
    Int(i64),
    UInt(u64),
    Double(f64),
    Bool(bool),
    Str(String),
}

fn pick<T: Copy>(list: &[T], at: u8) -> T {
    list[usize::from(at) % list.len()]
}

impl Name {
    fn text(&self) -> String {
        match self {
            Name::Plain(at) => pick(PLAIN, *at).to_owned(),
            Name::Indexed {
                prefix,
                index,
                field,
            } => {
                let (prefix, fields) = pick(INDEXED, *prefix);
                format!("{prefix}{index}.{}", pick(fields, *field))
            }
            Name::OddIndex {
                prefix,
                index,
                field,
            } => {
                let (prefix, fields) = pick(INDEXED, *prefix);
                format!("{prefix}{index}.{}", pick(fields, *field))
            }
            Name::Free(text) => text.clone(),
        }
    }
}

impl From<Value> for ParamValue {
    fn from(value: Value) -> Self {
        match value {
            Value::Int(v) => ParamValue::Int(v),
            Value::UInt(v) => ParamValue::UInt(v),
            Value::Double(v) => ParamValue::Double(v),
            Value::Bool(v) => ParamValue::Bool(v),
            Value::Str(v) => ParamValue::Str(v),
        }
    }
}

libfuzzer_sys::fuzz_target!(|record: Vec<(Name, Value)>| {
    let params: Vec<(String, ParamValue)> = record
        .into_iter()
        .map(|(name, value)| (name.text(), value.into()))
        .collect();
    std::hint::black_box(parse_domain_stats(
        params.iter().map(|(n, v)| (n.as_str(), v)),
    ));
});
