//! Query results as a text table, CSV, JSON or Parquet.

use std::io::Write;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;

use crate::QueryError;

/// An output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Aligned text table (the default on a terminal).
    Table,
    /// CSV with a header line.
    Csv,
    /// One JSON array of objects, a member per column.
    Json,
    /// Newline-delimited JSON: one object a line.
    Ndjson,
    /// Parquet (ZSTD), for results that go on to other tools.
    Parquet,
}

impl std::str::FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Format, String> {
        Ok(match s {
            "table" => Format::Table,
            "csv" => Format::Csv,
            "json" => Format::Json,
            "ndjson" | "jsonl" => Format::Ndjson,
            "parquet" => Format::Parquet,
            _ => {
                return Err(format!(
                    "unknown format {s:?} (table, csv, json, ndjson, parquet)"
                ));
            }
        })
    }
}

/// Writes `batches` (all of `schema`) to `out` in `format`.
pub fn write(
    batches: &[RecordBatch],
    schema: &SchemaRef,
    format: Format,
    out: impl Write + Send,
) -> Result<(), QueryError> {
    let mut out = out;
    match format {
        Format::Table => {
            let table = if batches.is_empty() {
                let empty = RecordBatch::new_empty(schema.clone());
                datafusion::arrow::util::pretty::pretty_format_batches(&[empty])?
            } else {
                datafusion::arrow::util::pretty::pretty_format_batches(batches)?
            };
            writeln!(out, "{table}")?;
            out.flush()?;
        }
        Format::Csv => {
            let mut w = datafusion::arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(out);
            if batches.is_empty() {
                w.write(&RecordBatch::new_empty(schema.clone()))?;
            }
            for b in batches {
                w.write(b)?;
            }
            w.into_inner().flush()?;
        }
        Format::Json => {
            let mut w = datafusion::arrow::json::ArrayWriter::new(&mut out);
            for b in batches {
                w.write(b)?;
            }
            w.finish()?;
            drop(w);
            writeln!(out)?;
            out.flush()?;
        }
        Format::Ndjson => {
            let mut w = datafusion::arrow::json::LineDelimitedWriter::new(&mut out);
            for b in batches {
                w.write(b)?;
            }
            w.finish()?;
            drop(w);
            out.flush()?;
        }
        Format::Parquet => {
            let props = WriterProperties::builder()
                .set_compression(Compression::ZSTD(ZstdLevel::default()))
                .build();
            let mut w = ArrowWriter::try_new(out, schema.clone(), Some(props))?;
            for b in batches {
                w.write(b)?;
            }
            w.into_inner()?.flush()?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Float64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    fn batch() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("node", DataType::Utf8, false),
            Field::new("mean", DataType::Float64, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec!["CN1", "CN2"])),
                Arc::new(Float64Array::from(vec![Some(1.5), None])),
            ],
        )
        .unwrap()
    }

    fn render(batches: &[RecordBatch], format: Format) -> Vec<u8> {
        let mut out = Vec::new();
        write(batches, &batch().schema(), format, &mut out).unwrap();
        out
    }

    #[test]
    fn every_format_writes_the_rows() {
        let b = batch();
        let one = [b.clone()];
        assert_eq!(
            String::from_utf8(render(&one, Format::Csv)).unwrap(),
            "node,mean\nCN1,1.5\nCN2,\n"
        );
        assert_eq!(
            String::from_utf8(render(&one, Format::Json)).unwrap(),
            "[{\"node\":\"CN1\",\"mean\":1.5},{\"node\":\"CN2\"}]\n"
        );
        assert_eq!(
            String::from_utf8(render(&[], Format::Json)).unwrap(),
            "[]\n"
        );
        assert_eq!(
            String::from_utf8(render(&one, Format::Ndjson)).unwrap(),
            "{\"node\":\"CN1\",\"mean\":1.5}\n{\"node\":\"CN2\"}\n"
        );
        assert_eq!(
            String::from_utf8(render(&[], Format::Csv)).unwrap(),
            "node,mean\n"
        );
        let table = String::from_utf8(render(&one, Format::Table)).unwrap();
        assert!(table.contains("| CN1  | 1.5  |"), "{table}");
        let parquet = render(&one, Format::Parquet);
        let reader = datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(
            bytes::Bytes::from(parquet),
            1024,
        )
        .unwrap();
        let back: Vec<RecordBatch> = reader.collect::<Result<_, _>>().unwrap();
        assert_eq!(back, vec![b]);
    }
}
