//! Reading event files: JSON Lines or CSV by extension, `.gz` accepted, `-` for stdin. Streams in
//! batches (memory independent of file size) and parses JSON Lines on every core.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use mamori_core::event::Event;
use mamori_core::parse::{CsvHeader, ParseError, ParsedLine, parse_json_line_view};
use rayon::prelude::*;

/// Input formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputFormat {
    Jsonl,
    Csv,
}

impl std::str::FromStr for InputFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "jsonl" | "json" | "ndjson" => Ok(InputFormat::Jsonl),
            "csv" => Ok(InputFormat::Csv),
            _ => Err(format!("unknown input format {s:?}; expected jsonl or csv")),
        }
    }
}

/// Errors opening or reading a source (bad records are not errors: they are [`Rejected`]).
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{name}: cannot open: {source}")]
    Open { name: String, source: io::Error },
    #[error(
        "{name}: cannot tell the format from the name; name it .jsonl or .csv (optionally .gz), or pass --format"
    )]
    UnknownFormat { name: String },
    #[error("{name}:{line}: read error: {source}")]
    Read {
        name: String,
        line: u64,
        source: io::Error,
    },
    #[error("{name}:1: {error}")]
    Header { name: String, error: ParseError },
}

/// A record that was refused, with its place and the raw text.
#[derive(Debug, Clone)]
pub struct Rejected {
    /// `file:line`.
    pub place: String,
    pub error: ParseError,
    pub raw: String,
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.place, self.error)
    }
}

/// A record read from a source.
#[derive(Debug, Clone)]
pub enum Item {
    Event(Event),
    Rejected(Rejected),
}

/// An opened source.
pub struct Input {
    pub name: String,
    pub format: InputFormat,
    reader: Box<dyn BufRead + Send>,
    /// Size on disk, when known (for progress).
    pub size: Option<u64>,
    /// The path, when the input is an uncompressed regular file (which can be read in parts).
    pub plain_file: Option<String>,
    /// Bytes read from disk so far (compressed bytes for `.gz`).
    pub read: Arc<AtomicU64>,
}

struct Counting<R> {
    inner: R,
    read: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Opens a file (or `-` for stdin). The format comes from the extension unless given.
pub fn open_input(path: &str, format: Option<InputFormat>) -> Result<Input, SourceError> {
    let name = if path == "-" {
        "<stdin>".to_owned()
    } else {
        path.to_owned()
    };
    let gz = path.ends_with(".gz");
    let stem = path.strip_suffix(".gz").unwrap_or(path);
    let format = match format {
        Some(f) => f,
        None if path == "-" => InputFormat::Jsonl,
        None => {
            let ext = stem.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
            match ext.as_deref() {
                Some("jsonl" | "ndjson" | "json") => InputFormat::Jsonl,
                Some("csv") => InputFormat::Csv,
                _ => return Err(SourceError::UnknownFormat { name }),
            }
        }
    };
    let read = Arc::new(AtomicU64::new(0));
    let mut plain_file = None;
    let (raw, size): (Box<dyn Read + Send>, Option<u64>) = if path == "-" {
        (Box::new(io::stdin()), None)
    } else {
        let f = File::open(path).map_err(|source| SourceError::Open {
            name: name.clone(),
            source,
        })?;
        let meta = f.metadata().ok();
        if !gz && meta.as_ref().is_some_and(|m| m.is_file()) {
            plain_file = Some(path.to_owned());
        }
        (Box::new(f), meta.map(|m| m.len()))
    };
    let counted = Counting {
        inner: raw,
        read: read.clone(),
    };
    let reader: Box<dyn BufRead + Send> = if gz {
        Box::new(BufReader::with_capacity(
            1 << 20,
            flate2::read::MultiGzDecoder::new(BufReader::with_capacity(1 << 16, counted)),
        ))
    } else {
        Box::new(BufReader::with_capacity(1 << 20, counted))
    };
    Ok(Input {
        name,
        format,
        reader,
        size,
        plain_file,
        read,
    })
}

impl Input {
    /// The decoded bytes of the source.
    pub fn into_reader(self) -> Box<dyn BufRead + Send> {
        self.reader
    }

    /// Reads the whole source in batches of about `batch` records, in file order, calling `f` with
    /// each. `f` returns `false` to stop early.
    pub fn for_each_batch(
        self,
        batch: usize,
        mut f: impl FnMut(Vec<Item>) -> bool,
    ) -> Result<(), SourceError> {
        match self.format {
            InputFormat::Jsonl => jsonl_batches(self.name, self.reader, batch, &mut f),
            InputFormat::Csv => csv_batches(self.name, self.reader, batch, &mut f),
        }
    }
}

fn reject(name: &str, line: u64, error: ParseError, raw: &[u8]) -> Item {
    Item::Rejected(Rejected {
        place: format!("{name}:{line}"),
        error,
        raw: String::from_utf8_lossy(raw).into_owned(),
    })
}

/// The text of one JSON Lines line (with or without its line end): `None` for a blank line, an
/// error when it is not UTF-8.
#[inline]
pub fn jsonl_text(raw: &[u8]) -> Option<Result<&str, ParseError>> {
    let trimmed = raw.strip_suffix(b"\n").unwrap_or(raw);
    let trimmed = trimmed.strip_suffix(b"\r").unwrap_or(trimmed);
    if trimmed.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    Some(std::str::from_utf8(trimmed).map_err(|e| ParseError {
        field: None,
        message: format!("not valid UTF-8 (byte {})", e.valid_up_to()),
    }))
}

/// [`jsonl_text`] of a line known to be UTF-8.
#[inline]
pub fn line_text(raw: &str) -> Option<&str> {
    let trimmed = raw.strip_suffix('\n').unwrap_or(raw);
    let trimmed = trimmed.strip_suffix('\r').unwrap_or(trimmed);
    (!trimmed.bytes().all(|b| b.is_ascii_whitespace())).then_some(trimmed)
}

/// Parses one JSON Lines line (with or without its line end): `None` for a blank line.
fn parse_jsonl_line(raw: &[u8]) -> Option<Result<ParsedLine<'_>, ParseError>> {
    Some(jsonl_text(raw)?.and_then(parse_json_line_view))
}

fn parse_line(name: &str, line: u64, raw: &[u8]) -> Option<Item> {
    Some(match parse_jsonl_line(raw)? {
        Ok(ParsedLine::Owned(e)) => Item::Event(*e),
        Ok(ParsedLine::Borrowed(v)) => Item::Event(v.to_event()),
        Err(err) => {
            let trimmed = raw.strip_suffix(b"\n").unwrap_or(raw);
            let trimmed = trimmed.strip_suffix(b"\r").unwrap_or(trimmed);
            reject(name, line, err, trimmed)
        }
    })
}

fn jsonl_batches(
    name: String,
    mut r: Box<dyn BufRead + Send>,
    batch: usize,
    f: &mut dyn FnMut(Vec<Item>) -> bool,
) -> Result<(), SourceError> {
    let mut line_no = 0u64;
    loop {
        // One buffer per batch, with the end offset of each line.
        let mut buf = Vec::with_capacity(batch * 256);
        let mut ends = Vec::with_capacity(batch);
        let first = line_no + 1;
        while ends.len() < batch {
            let n = r
                .read_until(b'\n', &mut buf)
                .map_err(|source| SourceError::Read {
                    name: name.clone(),
                    line: line_no + 1,
                    source,
                })?;
            if n == 0 {
                break;
            }
            line_no += 1;
            ends.push(buf.len());
        }
        if ends.is_empty() {
            return Ok(());
        }
        let items: Vec<Item> = ends
            .par_iter()
            .enumerate()
            .with_min_len(512)
            .filter_map(|(i, &end)| {
                let start = if i == 0 { 0 } else { ends[i - 1] };
                parse_line(&name, first + i as u64, &buf[start..end])
            })
            .collect();
        if !f(items) {
            return Ok(());
        }
    }
}

fn csv_batches(
    name: String,
    r: Box<dyn BufRead + Send>,
    batch: usize,
    f: &mut dyn FnMut(Vec<Item>) -> bool,
) -> Result<(), SourceError> {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(r);
    let header = {
        let h = rdr.headers().map_err(|e| SourceError::Header {
            name: name.clone(),
            error: ParseError {
                field: None,
                message: e.to_string(),
            },
        })?;
        CsvHeader::new(h.iter()).map_err(|error| SourceError::Header {
            name: name.clone(),
            error,
        })?
    };
    let width = rdr.headers().map(|h| h.len()).unwrap_or(0);
    let mut rec = csv::StringRecord::new();
    loop {
        let mut items = Vec::with_capacity(batch);
        while items.len() < batch {
            let line = rdr.position().line() + 1;
            match rdr.read_record(&mut rec) {
                Ok(false) => break,
                Ok(true) => {
                    let line = rec.position().map_or(line, |p| p.line());
                    if rec.len() == 1 && rec.get(0).is_some_and(|s| s.trim().is_empty()) {
                        continue;
                    }
                    let raw = || rec.iter().collect::<Vec<_>>().join(",");
                    if rec.len() != width {
                        items.push(reject(
                            &name,
                            line,
                            ParseError {
                                field: None,
                                message: format!(
                                    "{} fields where the header has {width}",
                                    rec.len()
                                ),
                            },
                            raw().as_bytes(),
                        ));
                        continue;
                    }
                    items.push(match header.parse(&rec) {
                        Ok(e) => Item::Event(e),
                        Err(err) => reject(&name, line, err, raw().as_bytes()),
                    });
                }
                Err(e) => {
                    let line = e.position().map_or(line, |p| p.line());
                    if let csv::ErrorKind::Io(_) = e.kind() {
                        return Err(SourceError::Read {
                            name,
                            line,
                            source: io::Error::other(e.to_string()),
                        });
                    }
                    items.push(reject(
                        &name,
                        line,
                        ParseError {
                            field: None,
                            message: e.to_string(),
                        },
                        b"",
                    ));
                }
            }
        }
        if items.is_empty() {
            return Ok(());
        }
        if !f(items) {
            return Ok(());
        }
    }
}
