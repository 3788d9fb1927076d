//! Writing GGUF files (version 3): the header and tensor table up front, then tensor data streamed
//! one tensor at a time, into a temporary file renamed into place only when complete.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::gguf::{TensorType, Value};

const ALIGNMENT: usize = 32;

/// One tensor the file will hold: its name, candle-order dimensions and type.
#[derive(Debug, Clone)]
pub struct PlannedTensor {
    pub name: String,
    pub dims: Vec<usize>,
    pub ty: TensorType,
}

impl PlannedTensor {
    /// Bytes of data, or `None` for a type hearth cannot size.
    pub fn size(&self) -> Option<usize> {
        let t = self.ty.info().filter(|_| self.ty.is_supported())?;
        let elems: usize = self.dims.iter().product();
        Some(elems / t.block * t.bytes)
    }
}

/// A GGUF file being written: [`GgufWriter::tensor`] once per planned tensor, in plan order, then
/// [`GgufWriter::finish`]. Dropped unfinished, it removes its temporary file.
pub struct GgufWriter {
    out: Option<BufWriter<File>>,
    tmp: PathBuf,
    path: PathBuf,
    sizes: Vec<(String, usize)>,
    next: usize,
}

fn value_type(v: &Value) -> u32 {
    match v {
        Value::U8(_) => 0,
        Value::I8(_) => 1,
        Value::U16(_) => 2,
        Value::I16(_) => 3,
        Value::U32(_) => 4,
        Value::I32(_) => 5,
        Value::F32(_) => 6,
        Value::Bool(_) => 7,
        Value::String(_) => 8,
        Value::Array(_) | Value::EmptyArray(_) => 9,
        Value::U64(_) => 10,
        Value::I64(_) => 11,
        Value::F64(_) => 12,
    }
}

fn put_str(b: &mut Vec<u8>, s: &str) {
    b.extend((s.len() as u64).to_le_bytes());
    b.extend(s.as_bytes());
}

fn put_value(b: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => b.push(*x),
        Value::I8(x) => b.push(*x as u8),
        Value::U16(x) => b.extend(x.to_le_bytes()),
        Value::I16(x) => b.extend(x.to_le_bytes()),
        Value::U32(x) => b.extend(x.to_le_bytes()),
        Value::I32(x) => b.extend(x.to_le_bytes()),
        Value::F32(x) => b.extend(x.to_le_bytes()),
        Value::Bool(x) => b.push(*x as u8),
        Value::String(s) => put_str(b, s),
        Value::Array(items) => {
            // An empty one built in code (not read from a file) has no item type; u32 will do.
            b.extend(items.first().map_or(4, value_type).to_le_bytes());
            b.extend((items.len() as u64).to_le_bytes());
            for item in items {
                put_value(b, item);
            }
        }
        Value::EmptyArray(item_ty) => {
            b.extend(item_ty.to_le_bytes());
            b.extend(0u64.to_le_bytes());
        }
        Value::U64(x) => b.extend(x.to_le_bytes()),
        Value::I64(x) => b.extend(x.to_le_bytes()),
        Value::F64(x) => b.extend(x.to_le_bytes()),
    }
}

fn invalid(msg: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, msg)
}

impl GgufWriter {
    /// Writes the header, metadata and tensor table of `path` (via `path` + `.tmp`).
    pub fn create(path: &Path, metadata: &BTreeMap<String, Value>, plan: &[PlannedTensor]) -> std::io::Result<Self> {
        let mut meta = metadata.clone();
        meta.insert("general.alignment".into(), Value::U32(ALIGNMENT as u32));
        let mut head = Vec::new();
        head.extend(b"GGUF");
        head.extend(3u32.to_le_bytes());
        head.extend((plan.len() as u64).to_le_bytes());
        head.extend((meta.len() as u64).to_le_bytes());
        for (k, v) in &meta {
            if let Value::Array(items) = v {
                if items.iter().any(|i| value_type(i) != value_type(&items[0])) {
                    return Err(invalid(format!("metadata {k}: array items of mixed types")));
                }
            }
            put_str(&mut head, k);
            head.extend(value_type(v).to_le_bytes());
            put_value(&mut head, v);
        }
        let mut sizes = Vec::with_capacity(plan.len());
        let mut offset = 0usize;
        for t in plan {
            let size = t.size().ok_or_else(|| invalid(format!("tensor {}: cannot write type {}", t.name, t.ty)))?;
            put_str(&mut head, &t.name);
            head.extend((t.dims.len() as u32).to_le_bytes());
            for &d in t.dims.iter().rev() {
                head.extend((d as u64).to_le_bytes());
            }
            head.extend(t.ty.0.to_le_bytes());
            head.extend((offset as u64).to_le_bytes());
            offset += size.div_ceil(ALIGNMENT) * ALIGNMENT;
            sizes.push((t.name.clone(), size));
        }
        head.resize(head.len().div_ceil(ALIGNMENT) * ALIGNMENT, 0);
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let mut out = BufWriter::with_capacity(1 << 20, File::create(&tmp)?);
        out.write_all(&head)?;
        Ok(Self { out: Some(out), tmp, path: path.to_path_buf(), sizes, next: 0 })
    }

    /// Writes the next planned tensor's data, which must have exactly its planned size.
    pub fn tensor(&mut self, data: &[u8]) -> std::io::Result<()> {
        let (name, size) = self.sizes.get(self.next).ok_or_else(|| invalid("more tensors than planned".into()))?;
        if data.len() != *size {
            return Err(invalid(format!("tensor {name}: {} bytes given, {size} planned", data.len())));
        }
        let out = self.out.as_mut().expect("open until finished");
        out.write_all(data)?;
        out.write_all(&[0u8; ALIGNMENT][..size.div_ceil(ALIGNMENT) * ALIGNMENT - size])?;
        self.next += 1;
        Ok(())
    }

    /// Flushes, syncs and renames the file into place once every planned tensor is written.
    pub fn finish(mut self) -> std::io::Result<()> {
        if self.next != self.sizes.len() {
            return Err(invalid(format!("{} of {} tensors written", self.next, self.sizes.len())));
        }
        let out = self.out.take().expect("open until finished");
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&self.tmp, &self.path)
    }
}

impl Drop for GgufWriter {
    fn drop(&mut self) {
        if self.out.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}
