//! The one way values come back from MySQL/MariaDB: [`value`] and [`nullable`].
//!
//! The server hands back what the column is, not what the caller wants: an `INT`/`BIGINT`
//! figure such as `vcpus` arrives as `Int`, an `UNSIGNED` one as `UInt`, `DOUBLE` as `Double`,
//! `DECIMAL` (and every value of the text protocol) as decimal text in `Bytes`. mysql_async's
//! `Row::take`/`Row::get` and `FromRow` panic when the Rust type does not match; here each
//! wanted type takes every representation it can be read from without loss, and anything else
//! is a [`DecodeError`] naming the column, never a panic.

use mysql_async::{Row, Value};

/// A value that could not be read into the type its reader wants.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("column {index} ({name}): {message}")]
pub struct DecodeError {
    pub index: usize,
    pub name: String,
    pub message: String,
}

/// A Rust type a column can be read into.
pub trait FromColumn: Sized {
    /// What the type is called in an error.
    const WANTED: &'static str;

    /// The value as `Self`; `None` when it has another type or does not fit. Never called on
    /// `NULL`.
    fn from_column(value: &Value) -> Option<Self>;
}

/// The value at `index`, which must not be NULL.
pub fn value<T: FromColumn>(row: &Row, index: usize) -> Result<T, DecodeError> {
    nullable(row, index)?.ok_or_else(|| error(row, index, "is NULL".into()))
}

/// The value at `index`; `None` for NULL.
pub fn nullable<T: FromColumn>(row: &Row, index: usize) -> Result<Option<T>, DecodeError> {
    let Some(value) = row.as_ref(index) else {
        let message = format!("the row has only {} columns", row.len());
        return Err(error(row, index, message));
    };
    if *value == Value::NULL {
        return Ok(None);
    }
    T::from_column(value)
        .map(Some)
        .ok_or_else(|| error(row, index, format!("{} is not {}", shown(value), T::WANTED)))
}

fn error(row: &Row, index: usize, message: String) -> DecodeError {
    DecodeError {
        index,
        name: row
            .columns_ref()
            .get(index)
            .map_or_else(|| "?".to_owned(), |c| c.name_str().into_owned()),
        message,
    }
}

/// A value as an error shows it: its kind, and its text when short.
fn shown(value: &Value) -> String {
    match value {
        Value::Bytes(bytes) if bytes.len() <= 40 => {
            format!("text {:?}", String::from_utf8_lossy(bytes))
        }
        Value::Bytes(bytes) => format!("{} bytes of text", bytes.len()),
        other => format!("{other:?}"),
    }
}

/// Decimal text (DECIMAL columns, the text protocol) as a string.
fn text(bytes: &[u8]) -> Option<&str> {
    std::str::from_utf8(bytes).ok().map(str::trim)
}

impl FromColumn for f64 {
    const WANTED: &'static str = "a number";

    fn from_column(value: &Value) -> Option<f64> {
        match value {
            // Counts and sizes beyond 2^53 lose their last digits, as they would in SQLite's REAL.
            Value::Int(v) => Some(*v as f64),
            Value::UInt(v) => Some(*v as f64),
            Value::Float(v) => Some(f64::from(*v)),
            Value::Double(v) => Some(*v),
            Value::Bytes(b) => text(b)?.parse().ok(),
            _ => None,
        }
    }
}

impl FromColumn for i64 {
    const WANTED: &'static str = "a whole number";

    fn from_column(value: &Value) -> Option<i64> {
        match value {
            Value::Int(v) => Some(*v),
            Value::UInt(v) => i64::try_from(*v).ok(),
            Value::Float(v) => whole(f64::from(*v)),
            Value::Double(v) => whole(*v),
            Value::Bytes(b) => {
                let text = text(b)?;
                text.parse().ok().or_else(|| whole(text.parse().ok()?))
            }
            _ => None,
        }
    }
}

/// `v` when it is a whole number within i64 (`12.0`, `DECIMAL` `12.000`).
fn whole(v: f64) -> Option<i64> {
    // 2^63 is exactly representable; anything at or above it does not fit.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    (v.fract() == 0.0 && (-LIMIT..LIMIT).contains(&v)).then_some(v as i64)
}

impl FromColumn for u64 {
    const WANTED: &'static str = "a whole number ≥ 0";

    fn from_column(value: &Value) -> Option<u64> {
        match value {
            Value::UInt(v) => Some(*v),
            Value::Bytes(b) => {
                let text = text(b)?;
                text.parse()
                    .ok()
                    .or_else(|| u64::try_from(i64::from_column(value)?).ok())
            }
            other => u64::try_from(i64::from_column(other)?).ok(),
        }
    }
}

impl FromColumn for u32 {
    const WANTED: &'static str = "a whole number from 0 to 4294967295";

    fn from_column(value: &Value) -> Option<u32> {
        u32::try_from(u64::from_column(value)?).ok()
    }
}

impl FromColumn for String {
    const WANTED: &'static str = "UTF-8 text";

    fn from_column(value: &Value) -> Option<String> {
        match value {
            Value::Bytes(b) => String::from_utf8(b.clone()).ok(),
            _ => None,
        }
    }
}

impl FromColumn for Vec<u8> {
    const WANTED: &'static str = "bytes";

    fn from_column(value: &Value) -> Option<Vec<u8>> {
        match value {
            Value::Bytes(b) => Some(b.clone()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use mysql_async::consts::ColumnType;
    use mysql_async::{Column, Row};

    use super::*;

    /// A row as the server would send it: one column per value, named `c0`, `c1`, ...
    fn row(values: Vec<Value>) -> Row {
        let columns: Arc<[Column]> = (0..values.len())
            .map(|i| {
                Column::new(ColumnType::MYSQL_TYPE_LONGLONG).with_name(format!("c{i}").as_bytes())
            })
            .collect();
        mysql_common::row::new_row(values, columns)
    }

    #[test]
    fn integer_columns_read_as_numbers() {
        // The bug this module exists for: `vcpus` is BIGINT and was read as f64.
        let r = row(vec![
            Value::Int(1),
            Value::UInt(7),
            Value::Float(0.5),
            Value::Double(2.25),
        ]);
        assert_eq!(value::<f64>(&r, 0), Ok(1.0));
        assert_eq!(value::<f64>(&r, 1), Ok(7.0));
        assert_eq!(value::<f64>(&r, 2), Ok(0.5));
        assert_eq!(value::<f64>(&r, 3), Ok(2.25));
    }

    #[test]
    fn decimal_and_text_protocol_values_are_parsed() {
        let r = row(vec![
            Value::Bytes(b"12.500".to_vec()),
            Value::Bytes(b"42".to_vec()),
            Value::Bytes(b"42.000".to_vec()),
            Value::Bytes(b"-3".to_vec()),
            Value::Bytes(b"18446744073709551615".to_vec()),
        ]);
        assert_eq!(value::<f64>(&r, 0), Ok(12.5));
        assert_eq!(value::<u32>(&r, 1), Ok(42));
        assert_eq!(value::<i64>(&r, 2), Ok(42));
        assert_eq!(value::<i64>(&r, 3), Ok(-3));
        assert_eq!(value::<u64>(&r, 4), Ok(u64::MAX));
        assert_eq!(value::<String>(&r, 1), Ok("42".to_owned()));
    }

    #[test]
    fn whole_numbers_come_from_any_exact_representation() {
        let r = row(vec![
            Value::Int(5),
            Value::UInt(5),
            Value::Double(5.0),
            Value::Float(5.0),
        ]);
        for i in 0..4 {
            assert_eq!(value::<u64>(&r, i), Ok(5), "column {i}");
            assert_eq!(value::<i64>(&r, i), Ok(5), "column {i}");
            assert_eq!(value::<u32>(&r, i), Ok(5), "column {i}");
        }
    }

    #[test]
    fn nulls_are_none_and_required_nulls_an_error() {
        let r = row(vec![Value::NULL]);
        assert_eq!(nullable::<f64>(&r, 0), Ok(None));
        assert_eq!(nullable::<String>(&r, 0), Ok(None));
        let err = value::<f64>(&r, 0).expect_err("NULL where a value is required");
        assert_eq!(err.to_string(), "column 0 (c0): is NULL");
    }

    #[test]
    fn what_cannot_convert_is_an_error_never_a_panic() {
        let r = row(vec![
            Value::Double(1.5),
            Value::Int(-1),
            Value::UInt(u64::MAX),
            Value::Int(1 << 40),
            Value::Bytes(b"abc".to_vec()),
            Value::Bytes(vec![0xff, 0xfe]),
            Value::Date(2026, 12, 6, 0, 0, 0, 0),
            Value::Double(f64::NAN),
            Value::Double(1e300),
        ]);
        assert!(value::<i64>(&r, 0).is_err(), "1.5 is not whole");
        assert!(value::<u64>(&r, 1).is_err(), "-1 is not ≥ 0");
        assert!(value::<i64>(&r, 2).is_err(), "u64::MAX does not fit i64");
        assert!(value::<u32>(&r, 3).is_err(), "2^40 does not fit u32");
        assert!(value::<f64>(&r, 4).is_err());
        assert!(value::<String>(&r, 5).is_err(), "not UTF-8");
        assert!(value::<f64>(&r, 6).is_err(), "a date is not a number");
        assert!(value::<String>(&r, 6).is_err());
        assert!(value::<i64>(&r, 7).is_err());
        assert!(value::<i64>(&r, 8).is_err());
        let err = value::<f64>(&r, 4).expect_err("text");
        assert_eq!(
            err.to_string(),
            "column 4 (c4): text \"abc\" is not a number"
        );
        let err = value::<f64>(&r, 20).expect_err("out of range");
        assert_eq!(err.to_string(), "column 20 (?): the row has only 9 columns");
    }
}
