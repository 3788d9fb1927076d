//! Opening and validating GGUF files: header, typed metadata and tensor table, all bounds-checked against the mapped file.
//!
//! Nothing here trusts a length or offset from the file: every string, array and tensor is checked
//! against the bytes that remain before anything is allocated, so a hostile or truncated file gives
//! a [`GgufError`] naming the file and the problem, never a panic or an absurd allocation.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

pub use super::tensor_type::TensorType;

const MAGIC: &[u8; 4] = b"GGUF";
const MAX_DIMS: usize = 4;
const MAX_ARRAY_DEPTH: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("cannot open {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {problem}")]
    Invalid { path: PathBuf, problem: String },
}

/// A metadata value as stored in the file.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
    /// An empty array, with the item type the file gave it (llama.cpp checks it, e.g. that an
    /// empty `tokenizer.ggml.merges` holds strings), so a file written back keeps it.
    EmptyArray(u32),
}

impl Value {
    /// The value as an unsigned integer, if it is any non-negative integer type.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v.into()),
            Value::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            Value::EmptyArray(_) => Some(&[]),
            _ => None,
        }
    }
}

/// One entry of the tensor table, already checked against the file.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub name: String,
    /// Dimensions in candle order (outermost first): a weight `[rows, cols]`.
    pub dims: Vec<usize>,
    pub ty: TensorType,
    /// Absolute byte offset of the data in the file.
    pub offset: usize,
    pub size: usize,
}

/// A validated, memory-mapped GGUF file.
pub struct GgufFile {
    pub path: PathBuf,
    pub version: u32,
    pub metadata: BTreeMap<String, Value>,
    pub tensors: Vec<TensorInfo>,
    mmap: Mmap,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len()).ok_or_else(|| {
            format!("truncated: {what} needs {n} bytes at offset {} but the file has {}", self.pos, self.bytes.len())
        })?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }
    fn u8(&mut self, what: &str) -> Result<u8, String> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &str) -> Result<u16, String> {
        Ok(u16::from_le_bytes(self.take(2, what)?.try_into().expect("2 bytes")))
    }
    fn u32(&mut self, what: &str) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().expect("4 bytes")))
    }
    fn u64(&mut self, what: &str) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().expect("8 bytes")))
    }
    fn len(&mut self, what: &str, min_item: usize) -> Result<usize, String> {
        let n = self.u64(what)?;
        let max = (self.remaining() / min_item.max(1)) as u64;
        if n > max {
            return Err(format!("{what} claims {n} entries but only {} bytes remain", self.remaining()));
        }
        Ok(n as usize)
    }
    fn string(&mut self, what: &str) -> Result<String, String> {
        let n = self.len(what, 1)?;
        let b = self.take(n, what)?;
        String::from_utf8(b.to_vec()).map_err(|_| format!("{what} is not valid UTF-8"))
    }

    fn value(&mut self, ty: u32, key: &str, depth: usize) -> Result<Value, String> {
        Ok(match ty {
            0 => Value::U8(self.u8(key)?),
            1 => Value::I8(self.u8(key)? as i8),
            2 => Value::U16(self.u16(key)?),
            3 => Value::I16(self.u16(key)? as i16),
            4 => Value::U32(self.u32(key)?),
            5 => Value::I32(self.u32(key)? as i32),
            6 => Value::F32(f32::from_bits(self.u32(key)?)),
            7 => match self.u8(key)? {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(format!("metadata {key}: invalid bool byte {b}")),
            },
            8 => Value::String(self.string(key)?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(format!("metadata {key}: arrays nested too deeply"));
                }
                let item_ty = self.u32(key)?;
                let min = match item_ty {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8 | 10..=12 => 8,
                    9 => 12,
                    t => return Err(format!("metadata {key}: unknown array item type {t}")),
                };
                let n = self.len(key, min)?;
                if n == 0 {
                    return Ok(Value::EmptyArray(item_ty));
                }
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(item_ty, key, depth + 1)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(self.u64(key)?),
            11 => Value::I64(self.u64(key)? as i64),
            12 => Value::F64(f64::from_bits(self.u64(key)?)),
            t => return Err(format!("metadata {key}: unknown value type {t}")),
        })
    }
}

impl GgufFile {
    /// Maps and validates the file. Tensor data is not touched yet.
    pub fn open(path: &Path) -> Result<Self, GgufError> {
        let io = |source| GgufError::Io { path: path.to_path_buf(), source };
        let file = std::fs::File::open(path).map_err(io)?;
        // SAFETY: the mapping is read-only; a file changed underneath us while mapped is the
        // caller's responsibility, as with every mmap-based model loader.
        let mmap = unsafe { Mmap::map(&file) }.map_err(io)?;
        let invalid = |problem: String| GgufError::Invalid { path: path.to_path_buf(), problem };
        let (version, metadata, tensors) = parse(&mmap).map_err(invalid)?;
        Ok(Self { path: path.to_path_buf(), version, metadata, tensors, mmap })
    }

    pub fn file_size(&self) -> usize {
        self.mmap.len()
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The raw bytes of a tensor (bounds were checked at open).
    pub fn tensor_bytes(&self, info: &TensorInfo) -> &[u8] {
        &self.mmap[info.offset..info.offset + info.size]
    }

    /// Tells the kernel the pages of this byte range may be dropped from our resident set once
    /// copied out, so that loading does not hold the file twice.
    pub fn release(&self, offset: usize, len: usize) {
        #[cfg(unix)]
        {
            let page = 4096;
            let start = offset / page * page;
            let end = (offset + len).min(self.mmap.len());
            // SAFETY: the mapping is private and read-only; dropped pages are re-read from the file
            // if touched again, so no data is lost.
            let _ = unsafe {
                self.mmap.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start)
            };
        }
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    pub fn error(&self, problem: impl Into<String>) -> GgufError {
        GgufError::Invalid { path: self.path.clone(), problem: problem.into() }
    }
}

type Parsed = (u32, BTreeMap<String, Value>, Vec<TensorInfo>);

fn parse(bytes: &[u8]) -> Result<Parsed, String> {
    let mut c = Cursor { bytes, pos: 0 };
    let magic = c.take(4, "magic").map_err(|_| "not a GGUF file: shorter than its magic number".to_string())?;
    if magic != MAGIC {
        return Err(format!("not a GGUF file: magic is {magic:02x?}, expected \"GGUF\""));
    }
    let version = c.u32("version")?;
    if !(2..=3).contains(&version) {
        return Err(format!("unsupported GGUF version {version} (hearth reads versions 2 and 3)"));
    }
    let n_tensors = c.len("tensor count", 8 + 4 + 8 + 4 + 8)?;
    let n_kv = c.len("metadata count", 8 + 4 + 1)?;
    let mut metadata = BTreeMap::new();
    for _ in 0..n_kv {
        let key = c.string("metadata key")?;
        let ty = c.u32(&key)?;
        let value = c.value(ty, &key, 0)?;
        metadata.insert(key, value);
    }
    let alignment = match metadata.get("general.alignment") {
        None => 32,
        Some(v) => match v.as_u64() {
            Some(a) if a.is_power_of_two() && a >= 8 && a <= 1 << 16 => a as usize,
            _ => return Err(format!("general.alignment {v:?} is not a power of two between 8 and 65536")),
        },
    };
    let mut raw = Vec::with_capacity(n_tensors);
    for _ in 0..n_tensors {
        let name = c.string("tensor name")?;
        let n_dims = c.u32(&name)? as usize;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(format!("tensor {name}: {n_dims} dimensions (1 to {MAX_DIMS} allowed)"));
        }
        let mut dims = Vec::with_capacity(n_dims);
        for _ in 0..n_dims {
            dims.push(c.u64(&name)?);
        }
        dims.reverse();
        let ty = TensorType(c.u32(&name)?);
        let offset = c.u64(&name)?;
        raw.push((name, dims, ty, offset));
    }
    let data_start = c.pos.div_ceil(alignment) * alignment;
    let mut tensors = Vec::with_capacity(raw.len());
    for (name, dims, ty, offset) in raw {
        tensors.push(check_tensor(name, dims, ty, offset, data_start, alignment, bytes.len())?);
    }
    let mut spans: Vec<(usize, usize, &str)> = tensors.iter().map(|t| (t.offset, t.offset + t.size, t.name.as_str())).collect();
    spans.sort_unstable();
    if let Some(w) = spans.windows(2).find(|w| w[1].0 < w[0].1) {
        return Err(format!("tensors {} and {} overlap (bytes {}..{} and {}..{})", w[0].2, w[1].2, w[0].0, w[0].1, w[1].0, w[1].1));
    }
    let mut names: Vec<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
    names.sort_unstable();
    if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
        return Err(format!("tensor {} appears twice", w[0]));
    }
    Ok((version, metadata, tensors))
}

fn check_tensor(
    name: String,
    dims: Vec<u64>,
    ty: TensorType,
    offset: u64,
    data_start: usize,
    alignment: usize,
    file_len: usize,
) -> Result<TensorInfo, String> {
    let Some(info) = ty.info().filter(|_| ty.is_supported()) else {
        return Err(format!("tensor {name}: unsupported quantization type {ty}"));
    };
    let mut elems: u64 = 1;
    for &d in &dims {
        if d == 0 {
            return Err(format!("tensor {name}: zero-sized dimension in {dims:?}"));
        }
        elems = elems.checked_mul(d).ok_or_else(|| format!("tensor {name}: dimensions {dims:?} overflow"))?;
    }
    let block = info.block as u64;
    let row = *dims.last().expect("at least one dim");
    if row % block != 0 {
        return Err(format!("tensor {name}: row length {row} is not a multiple of the {} block size {block}", ty.name()));
    }
    let size = (elems / block)
        .checked_mul(info.bytes as u64)
        .ok_or_else(|| format!("tensor {name}: size overflows"))?;
    if offset % alignment as u64 != 0 {
        return Err(format!("tensor {name}: data offset {offset} is not aligned to {alignment}"));
    }
    let start = (data_start as u64).checked_add(offset);
    let end = start.and_then(|s| s.checked_add(size));
    match (start, end) {
        (Some(start), Some(end)) if end <= file_len as u64 => Ok(TensorInfo {
            name,
            dims: dims.iter().map(|&d| d as usize).collect(),
            ty,
            offset: start as usize,
            size: size as usize,
        }),
        _ => Err(format!(
            "tensor {name}: data at offset {offset} (+{size} bytes) lies outside the file ({file_len} bytes; data section starts at {data_start})"
        )),
    }
}
