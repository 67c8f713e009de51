//! The compact encoding of a small `readings` batch (WAL record format 2): the columns of
//! [`readings_schema`] one after another, without the Arrow IPC schema message, dictionary
//! messages and flatbuffers. A lone reading takes about 350 bytes instead of 8.4 KB, and
//! encoding it is a few copies.
//!
//! ```text
//! u32 rows · then every column of readings_schema(), in order, as its type says:
//!   Dictionary(Int32, Utf8)  validity · u32 n · validity of the n values · n × string
//!                            · rows × i32 key
//!   Timestamp(ms)            validity · rows × i64
//!   Float64                  validity · rows × f64
//!   Utf8                     validity · rows × string          (a null row: length 0)
//!   UInt8                    validity · rows × u8
//!   UInt64                   validity · rows × u64
//! validity: u8 0 (no nulls) | u8 1 · ⌈rows/8⌉ bytes of Arrow's validity bitmap (LSB first)
//! string:   u32 length · UTF-8 bytes
//! ```
//!
//! Integers and floats are little endian. The decoded batch equals the encoded one (the same
//! dictionaries in the same order, the same keys). Decoding untrusted bytes checks every
//! length against the bytes left before allocating, every key against its dictionary and
//! every string for UTF-8: a corrupted record is an error, never a panic.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, DictionaryArray, Int32Array, PrimitiveArray, StringArray,
};
use arrow::buffer::{BooleanBuffer, Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow::datatypes::{
    ArrowPrimitiveType, DataType, Float64Type, Int32Type, TimeUnit, TimestampMillisecondType,
    UInt8Type, UInt64Type,
};
use arrow::record_batch::RecordBatch;
use samos_schemas::readings::readings_schema;

/// Whether `batch` has the `readings` schema, the only one this encoding describes.
pub fn encodable(batch: &RecordBatch) -> bool {
    let schema = batch.schema();
    let readings = readings_schema();
    Arc::ptr_eq(&schema, &readings) || schema == readings
}

/// Appends the encoding of `batch` (which must be [`encodable`]) to `out`.
pub fn encode(batch: &RecordBatch, out: &mut Vec<u8>) {
    let rows = batch.num_rows();
    out.extend_from_slice(&len32(rows).to_le_bytes());
    for column in batch.columns() {
        validity(column.as_ref(), out);
        match column.data_type() {
            DataType::Dictionary(..) => {
                let dictionary = column.as_dictionary::<Int32Type>();
                let values = dictionary.values().as_string::<i32>();
                out.extend_from_slice(&len32(values.len()).to_le_bytes());
                validity(values, out);
                strings(values, out);
                for key in dictionary.keys().values() {
                    out.extend_from_slice(&key.to_le_bytes());
                }
            }
            DataType::Timestamp(..) => {
                let values = column.as_primitive::<TimestampMillisecondType>().values();
                for v in values {
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
            DataType::Float64 => {
                for v in column.as_primitive::<Float64Type>().values() {
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
            DataType::Utf8 => strings(column.as_string::<i32>(), out),
            DataType::UInt8 => out.extend_from_slice(column.as_primitive::<UInt8Type>().values()),
            DataType::UInt64 => {
                for v in column.as_primitive::<UInt64Type>().values() {
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
            other => unreachable!("readings_schema has no {other} column (checked by encodable)"),
        }
    }
}

/// Decodes a batch written by [`encode`].
pub fn decode(bytes: &[u8]) -> Result<RecordBatch, String> {
    let schema = readings_schema();
    let mut r = Reader(bytes);
    let rows = r.u32()? as usize;
    if rows > bytes.len() {
        return Err(format!(
            "compact batch of {rows} rows in {} bytes",
            bytes.len()
        ));
    }
    let columns = schema
        .fields()
        .iter()
        .map(|field| {
            column(&mut r, field.data_type(), rows)
                .map_err(|e| format!("column {}: {e}", field.name()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if !r.0.is_empty() {
        return Err(format!("{} bytes after the last column", r.0.len()));
    }
    RecordBatch::try_new(schema, columns).map_err(|e| e.to_string())
}

fn len32(n: usize) -> u32 {
    u32::try_from(n).expect("a WAL record's lengths fit in u32")
}

/// The validity of `array`: 0 when it has no nulls, else 1 and its bitmap from bit 0.
fn validity(array: &dyn Array, out: &mut Vec<u8>) {
    match array.nulls().filter(|n| n.null_count() > 0) {
        None => out.push(0),
        Some(nulls) => {
            out.push(1);
            let start = out.len();
            out.resize(start + array.len().div_ceil(8), 0);
            for (i, valid) in nulls.iter().enumerate() {
                if valid {
                    out[start + i / 8] |= 1 << (i % 8);
                }
            }
        }
    }
}

/// Every row of `array` as a string (null rows: empty).
fn strings(array: &StringArray, out: &mut Vec<u8>) {
    for i in 0..array.len() {
        let text = if array.is_valid(i) {
            array.value(i)
        } else {
            ""
        };
        out.extend_from_slice(&len32(text.len()).to_le_bytes());
        out.extend_from_slice(text.as_bytes());
    }
}

fn column(r: &mut Reader<'_>, ty: &DataType, rows: usize) -> Result<ArrayRef, String> {
    let nulls = r.validity(rows)?;
    Ok(match ty {
        DataType::Dictionary(key, value)
            if **key == DataType::Int32 && **value == DataType::Utf8 =>
        {
            let n = r.u32()? as usize;
            let value_nulls = r.validity(n)?;
            let values = r.strings(n, value_nulls)?;
            let keys = Int32Array::try_new(r.fixed(rows, i32::from_le_bytes)?, nulls)
                .map_err(|e| e.to_string())?;
            Arc::new(
                DictionaryArray::<Int32Type>::try_new(keys, Arc::new(values))
                    .map_err(|e| e.to_string())?,
            )
        }
        DataType::Timestamp(TimeUnit::Millisecond, zone) => Arc::new(
            primitive::<TimestampMillisecondType>(r.fixed(rows, i64::from_le_bytes)?, nulls)?
                .with_timezone_opt(zone.clone()),
        ),
        DataType::Float64 => Arc::new(primitive::<Float64Type>(
            r.fixed(rows, f64::from_le_bytes)?,
            nulls,
        )?),
        DataType::Utf8 => Arc::new(r.strings(rows, nulls)?),
        DataType::UInt8 => Arc::new(primitive::<UInt8Type>(
            r.fixed(rows, u8::from_le_bytes)?,
            nulls,
        )?),
        DataType::UInt64 => Arc::new(primitive::<UInt64Type>(
            r.fixed(rows, u64::from_le_bytes)?,
            nulls,
        )?),
        other => return Err(format!("type {other} has no compact encoding")),
    })
}

fn primitive<T: ArrowPrimitiveType>(
    values: ScalarBuffer<T::Native>,
    nulls: Option<NullBuffer>,
) -> Result<PrimitiveArray<T>, String> {
    PrimitiveArray::<T>::try_new(values, nulls).map_err(|e| e.to_string())
}

/// The bytes not yet decoded.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.0.len() {
            return Err(format!("{n} bytes wanted, {} left", self.0.len()));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// `rows` values of `N` bytes each.
    fn fixed<const N: usize, T: arrow::datatypes::ArrowNativeType>(
        &mut self,
        rows: usize,
        read: fn([u8; N]) -> T,
    ) -> Result<ScalarBuffer<T>, String> {
        let bytes = self.take(rows.checked_mul(N).ok_or("length overflow")?)?;
        Ok(bytes
            .chunks_exact(N)
            .map(|c| read(c.try_into().expect("chunks of N bytes")))
            .collect::<Vec<T>>()
            .into())
    }

    fn validity(&mut self, rows: usize) -> Result<Option<NullBuffer>, String> {
        match self.take(1)?[0] {
            0 => Ok(None),
            1 => {
                let bits = self.take(rows.div_ceil(8))?;
                Ok(Some(NullBuffer::new(BooleanBuffer::new(
                    Buffer::from(bits.to_vec()),
                    0,
                    rows,
                ))))
            }
            f => Err(format!("validity flag {f}")),
        }
    }

    fn strings(&mut self, n: usize, nulls: Option<NullBuffer>) -> Result<StringArray, String> {
        // Every string takes at least its 4-byte length: check before allocating.
        if n.checked_mul(4).is_none_or(|b| b > self.0.len()) {
            return Err(format!("{n} strings in {} bytes", self.0.len()));
        }
        let mut offsets = Vec::with_capacity(n + 1);
        offsets.push(0i32);
        let mut data = Vec::new();
        for _ in 0..n {
            let len = self.u32()? as usize;
            data.extend_from_slice(self.take(len)?);
            offsets.push(i32::try_from(data.len()).map_err(|_| "strings over 2 GiB")?);
        }
        StringArray::try_new(
            OffsetBuffer::new(offsets.into()),
            Buffer::from_vec(data),
            nulls,
        )
        .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{
        Float64Array, StringBuilder, StringDictionaryBuilder, TimestampMillisecondArray,
        UInt8Array, UInt64Array,
    };
    use proptest::prelude::*;

    /// One row's choices: time, dictionary pick, value, raw text, QoS.
    type Row = (i64, u8, Option<f64>, Option<String>, u8);

    /// A `readings` batch of `rows` from the proptest's choices (nulls where the schema
    /// allows them).
    fn batch(rows: &[Row]) -> RecordBatch {
        let schema = readings_schema();
        let columns = schema
            .fields()
            .iter()
            .map(|f| -> ArrayRef {
                match f.data_type() {
                    DataType::Dictionary(..) => {
                        let mut b = StringDictionaryBuilder::<Int32Type>::new();
                        for (_, pick, ..) in rows {
                            b.append_value(format!("{}-{}", f.name(), pick % 3));
                        }
                        Arc::new(b.finish())
                    }
                    DataType::Timestamp(_, zone) => Arc::new(
                        TimestampMillisecondArray::from(
                            rows.iter().map(|r| r.0).collect::<Vec<_>>(),
                        )
                        .with_timezone_opt(zone.clone()),
                    ),
                    DataType::Float64 => {
                        Arc::new(rows.iter().map(|r| r.2).collect::<Float64Array>())
                    }
                    DataType::Utf8 => {
                        let mut b = StringBuilder::new();
                        for r in rows {
                            b.append_option(r.3.as_deref());
                        }
                        Arc::new(b.finish())
                    }
                    DataType::UInt8 => Arc::new(UInt8Array::from(
                        rows.iter().map(|r| r.4).collect::<Vec<_>>(),
                    )),
                    DataType::UInt64 => Arc::new(UInt64Array::from(
                        (0..rows.len() as u64).map(|k| k + 7000).collect::<Vec<_>>(),
                    )),
                    other => panic!("unexpected {other}"),
                }
            })
            .collect();
        RecordBatch::try_new(schema, columns).unwrap()
    }

    fn row() -> impl Strategy<Value = Row> {
        (
            any::<i64>(),
            any::<u8>(),
            proptest::option::of(any::<f64>().prop_filter("comparable", |v| !v.is_nan())),
            proptest::option::of(".{0,12}"),
            0u8..3,
        )
    }

    proptest! {
        #[test]
        fn a_batch_comes_back_equal(rows in proptest::collection::vec(row(), 0..40)) {
            let b = batch(&rows);
            let mut out = Vec::new();
            encode(&b, &mut out);
            prop_assert_eq!(decode(&out).unwrap(), b);
        }

        #[test]
        fn a_slice_comes_back_as_its_rows(rows in proptest::collection::vec(row(), 2..20)) {
            let b = batch(&rows);
            let slice = b.slice(1, rows.len() - 1);
            let mut out = Vec::new();
            encode(&slice, &mut out);
            prop_assert_eq!(decode(&out).unwrap(), slice);
        }

        #[test]
        fn corrupted_bytes_are_an_error_not_a_panic(
            rows in proptest::collection::vec(row(), 1..8),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut out = Vec::new();
            encode(&batch(&rows), &mut out);
            for (at, byte) in flips {
                let i = at.index(out.len());
                out[i] ^= byte;
            }
            let _ = decode(&out);
            let _ = decode(&out[..cut.index(out.len())]);
        }

        #[test]
        fn arbitrary_bytes_are_an_error_not_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = decode(&bytes);
        }
    }

    #[test]
    fn a_lone_reading_is_small() {
        let b = batch(&[(1_700_000_000_000, 1, Some(21.5), None, 1)]);
        let mut out = Vec::new();
        encode(&b, &mut out);
        assert!(out.len() < 600, "{} bytes", out.len());
        assert!(encodable(&b));
    }

    #[test]
    fn a_row_count_beyond_the_bytes_is_refused_before_allocating() {
        let err = decode(&[0xff, 0xff, 0xff, 0x7f, 0]).unwrap_err();
        assert!(err.contains("rows"), "{err}");
    }
}
