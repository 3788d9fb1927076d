//! Bad GGUF files each give a clear error naming the file and the problem: never a panic, never
//! an allocation of absurd size.

mod common;

use std::path::{Path, PathBuf};

use candle_core::Device;
use hearth::model::{GgufFile, Model};

/// A hand-rolled GGUF byte builder, so every field can be made wrong on purpose.
#[derive(Default)]
struct Raw {
    version: u32,
    kvs: Vec<u8>,
    n_kv: u64,
    infos: Vec<u8>,
    n_tensors: u64,
    data: Vec<u8>,
}

fn s(out: &mut Vec<u8>, text: &str) {
    out.extend((text.len() as u64).to_le_bytes());
    out.extend(text.as_bytes());
}

impl Raw {
    fn new() -> Self {
        Self { version: 3, ..Default::default() }
    }
    fn kv_str(mut self, k: &str, v: &str) -> Self {
        s(&mut self.kvs, k);
        self.kvs.extend(8u32.to_le_bytes());
        s(&mut self.kvs, v);
        self.n_kv += 1;
        self
    }
    /// A tensor with `dims` in GGUF order (innermost first).
    fn tensor(mut self, name: &str, dims: &[u64], ty: u32, offset: u64, bytes: usize) -> Self {
        s(&mut self.infos, name);
        self.infos.extend((dims.len() as u32).to_le_bytes());
        for d in dims {
            self.infos.extend(d.to_le_bytes());
        }
        self.infos.extend(ty.to_le_bytes());
        self.infos.extend(offset.to_le_bytes());
        if bytes > 0 {
            self.data.resize(self.data.len().max(offset as usize + bytes), 0);
        }
        self.n_tensors += 1;
        self
    }
    fn bytes(&self) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend(self.version.to_le_bytes());
        out.extend(self.n_tensors.to_le_bytes());
        out.extend(self.n_kv.to_le_bytes());
        out.extend(&self.kvs);
        out.extend(&self.infos);
        while out.len() % 32 != 0 {
            out.push(0);
        }
        out.extend(&self.data);
        out
    }
}

fn valid() -> Raw {
    Raw::new().kv_str("general.architecture", "llama").tensor("a.weight", &[32, 2], 0, 0, 256)
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Opening must fail with a message naming the file and containing `needle`.
fn assert_rejects(path: &Path, needle: &str) {
    let err = GgufFile::open(path).expect_err("a bad file must be rejected").to_string();
    assert!(err.contains(&path.display().to_string()), "error does not name the file: {err}");
    assert!(err.to_lowercase().contains(&needle.to_lowercase()), "error {err:?} does not mention {needle:?}");
}

#[test]
fn a_valid_hand_written_file_opens() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "ok.gguf", &valid().bytes());
    let f = GgufFile::open(&p).unwrap();
    assert_eq!(f.tensors[0].dims, vec![2, 32]);
    assert_eq!(f.tensors[0].size, 256);
}

#[test]
fn wrong_magic() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = valid().bytes();
    b[0] = b'X';
    assert_rejects(&write(dir.path(), "magic.gguf", &b), "not a GGUF file");
    assert_rejects(&write(dir.path(), "tiny.gguf", b"GG"), "not a GGUF file");
    assert_rejects(&write(dir.path(), "empty.gguf", b""), "not a GGUF file");
}

#[test]
fn unsupported_version() {
    let dir = tempfile::tempdir().unwrap();
    let r = Raw { version: 1, ..valid() };
    assert_rejects(&write(dir.path(), "v1.gguf", &r.bytes()), "version 1");
}

#[test]
fn truncated_anywhere() {
    let dir = tempfile::tempdir().unwrap();
    let full = valid().bytes();
    for cut in [5, 12, 23, 30, 60, full.len() - 1] {
        let p = write(dir.path(), &format!("cut{cut}.gguf"), &full[..cut]);
        let err = GgufFile::open(&p).expect_err("truncated file accepted").to_string();
        assert!(["truncated", "outside the file", "remain"].iter().any(|w| err.contains(w)), "cut at {cut}: {err}");
    }
}

#[test]
fn absurd_counts_and_lengths_do_not_allocate() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = valid().bytes();
    b[8..16].copy_from_slice(&u64::MAX.to_le_bytes()); // tensor count
    assert_rejects(&write(dir.path(), "ntensors.gguf", &b), "tensor count");
    let mut b = valid().bytes();
    b[16..24].copy_from_slice(&(1u64 << 60).to_le_bytes()); // metadata count
    assert_rejects(&write(dir.path(), "nkv.gguf", &b), "metadata count");
    let mut b = valid().bytes();
    b[24..32].copy_from_slice(&(u64::MAX - 3).to_le_bytes()); // first key's length
    assert_rejects(&write(dir.path(), "keylen.gguf", &b), "metadata key");
    // An array claiming 2^62 items.
    let mut r = Raw::new();
    s(&mut r.kvs, "big");
    r.kvs.extend(9u32.to_le_bytes());
    r.kvs.extend(4u32.to_le_bytes());
    r.kvs.extend((1u64 << 62).to_le_bytes());
    r.n_kv = 1;
    assert_rejects(&write(dir.path(), "array.gguf", &r.bytes()), "big");
}

#[test]
fn tensor_out_of_bounds_or_misaligned() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = valid();
    r = r.tensor("b.weight", &[32, 2], 0, 1 << 40, 0);
    assert_rejects(&write(dir.path(), "far.gguf", &r.bytes()), "outside the file");
    let r = valid().tensor("c.weight", &[32], 0, u64::MAX - 10, 0);
    assert_rejects(&write(dir.path(), "overflow.gguf", &r.bytes()), "c.weight");
    let r = valid().tensor("d.weight", &[8], 0, 260, 32);
    assert_rejects(&write(dir.path(), "misaligned.gguf", &r.bytes()), "not aligned");
    let r = Raw::new().tensor("e.weight", &[1 << 40, 1 << 40], 0, 0, 0);
    assert_rejects(&write(dir.path(), "huge.gguf", &r.bytes()), "e.weight");
    let r = Raw::new().tensor("f.weight", &[u64::MAX, u64::MAX], 0, 0, 0);
    assert_rejects(&write(dir.path(), "dims_overflow.gguf", &r.bytes()), "overflow");
    let r = Raw::new().tensor("g.weight", &[4, 4, 4, 4, 4], 0, 0, 0);
    assert_rejects(&write(dir.path(), "dims.gguf", &r.bytes()), "dimensions");
    let r = valid().tensor("a.weight", &[32, 2], 0, 256, 256);
    assert_rejects(&write(dir.path(), "dup.gguf", &r.bytes()), "twice");
}

#[test]
fn unknown_and_unsupported_tensor_types() {
    let dir = tempfile::tempdir().unwrap();
    let r = Raw::new().tensor("x.weight", &[256], 99, 0, 256);
    assert_rejects(&write(dir.path(), "unknown.gguf", &r.bytes()), "unsupported quantization type unknown (type id 99)");
    let r = Raw::new().tensor("y.weight", &[256], 16, 0, 256);
    assert_rejects(&write(dir.path(), "iq2.gguf", &r.bytes()), "IQ2_XXS");
    let r = Raw::new().tensor("z.weight", &[33], 8, 0, 64);
    assert_rejects(&write(dir.path(), "rowlen.gguf", &r.bytes()), "block size");
}

#[test]
fn unknown_architecture_and_missing_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "mamba.gguf", &Raw::new().kv_str("general.architecture", "mamba").bytes());
    let err = Model::load(&p, &Device::Cpu).err().expect("unknown architecture accepted").to_string();
    assert!(err.contains("unknown architecture \"mamba\"") && err.contains("mamba.gguf"), "{err}");

    let p = write(dir.path(), "noarch.gguf", &valid().bytes()[..]);
    let err = Model::load(&p, &Device::Cpu).err().unwrap().to_string();
    assert!(err.contains("llama.block_count is missing"), "{err}");

    // A real model file with one tensor renamed: the error names the tensor.
    let synth = dir.path().join("synth.gguf");
    common::synth::write(&synth, &common::synth::Synth::new("llama"));
    let mut bytes = std::fs::read(&synth).unwrap();
    let at = bytes.windows(18).position(|w| w == b"blk.1.ffn_up.weigh").unwrap();
    bytes[at + 4] = b'7';
    let p = write(dir.path(), "renamed.gguf", &bytes);
    let err = Model::load(&p, &Device::Cpu).err().unwrap().to_string();
    assert!(err.contains("tensor blk.1.ffn_up.weight is missing"), "{err}");

    let err = Model::load(&dir.path().join("absent.gguf"), &Device::Cpu).err().unwrap().to_string();
    assert!(err.contains("absent.gguf"), "{err}");
}

#[test]
fn wrong_shapes_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("shape.gguf");
    let mut s = common::synth::Synth::new("llama");
    s.n_kv_head = 4;
    common::synth::write(&p, &s);
    // Same weights, but metadata that claims fewer key/value heads.
    let mut bytes = std::fs::read(&p).unwrap();
    let key = b"llama.attention.head_count_kv";
    let at = bytes.windows(key.len()).position(|w| w == key).unwrap() + key.len() + 4;
    bytes[at..at + 4].copy_from_slice(&2u32.to_le_bytes());
    std::fs::write(&p, bytes).unwrap();
    let err = Model::load(&p, &Device::Cpu).err().unwrap().to_string();
    assert!(err.contains("blk.0.attn_k.weight has shape [256, 256], expected [128, 256]"), "{err}");
}

#[test]
fn random_corruption_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let synth = dir.path().join("base.gguf");
    common::synth::write(&synth, &common::synth::Synth { n_layer: 1, ..common::synth::Synth::new("llama") });
    let base = std::fs::read(&synth).unwrap();
    let header_end = 6000.min(base.len());
    let mut state = 0x2545F4914F6CDD1Du64;
    for i in 0..300 {
        let mut b = base.clone();
        for _ in 0..4 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let at = (state as usize) % header_end;
            b[at] = (state >> 32) as u8;
        }
        let p = write(dir.path(), "fuzz.gguf", &b);
        let outcome = std::panic::catch_unwind(|| Model::load(&p, &Device::Cpu).map(|_| ()));
        assert!(outcome.is_ok(), "iteration {i} panicked");
    }
}

/// A synthetic llama file with the 4-byte value of metadata `key` replaced by `value`.
fn patched(dir: &Path, key: &str, value: [u8; 4]) -> PathBuf {
    let p = dir.join(format!("{key}.gguf"));
    common::synth::write(&p, &common::synth::Synth::new("llama"));
    let mut bytes = std::fs::read(&p).unwrap();
    let at = bytes.windows(key.len()).position(|w| w == key.as_bytes()).unwrap() + key.len() + 4;
    bytes[at..at + 4].copy_from_slice(&value);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn absurd_hyper_parameters_are_named_not_obeyed() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, [u8; 4])> = vec![
        ("llama.block_count", 0x7FFF_FFFFu32.to_le_bytes()),
        ("llama.attention.layer_norm_rms_epsilon", f32::NAN.to_le_bytes()),
        ("llama.attention.layer_norm_rms_epsilon", (-1.0f32).to_le_bytes()),
        ("llama.attention.layer_norm_rms_epsilon", f32::INFINITY.to_le_bytes()),
        ("llama.rope.freq_base", 0.0f32.to_le_bytes()),
        ("llama.rope.freq_base", (-1.0f32).to_le_bytes()),
        ("llama.rope.freq_base", f32::NAN.to_le_bytes()),
    ];
    for (key, value) in cases {
        let p = patched(dir.path(), key, value);
        let err = Model::load(&p, &Device::Cpu).err().unwrap_or_else(|| panic!("{key} = {value:?} was accepted")).to_string();
        assert!(err.contains(key) && err.contains(&p.display().to_string()), "{key}: {err}");
    }
}

#[test]
fn overlapping_tensors_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let raw = valid().tensor("b.weight", &[32, 2], 0, 128, 256);
    let p = write(dir.path(), "overlap.gguf", &raw.bytes());
    assert_rejects(&p, "overlap");
}

#[test]
fn non_finite_scales_and_weights_are_named_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("base.gguf");
    common::synth::write(&p, &common::synth::Synth::new("llama"));
    let base = std::fs::read(&p).unwrap();
    let file = GgufFile::open(&p).unwrap();
    let at = |name: &str| file.tensor(name).unwrap().offset;
    // Q8_0's f16 scale opens each 34-byte block; Q4_K's d and dmin open its 144-byte blocks; a
    // norm is plain f32.
    let cases = [
        ("token_embd.weight", at("token_embd.weight") + 3 * 34, half::f16::NAN.to_le_bytes().to_vec(), "block 3 has a NaN or infinite scale"),
        ("blk.1.ffn_gate.weight", at("blk.1.ffn_gate.weight") + 144 + 2, half::f16::INFINITY.to_le_bytes().to_vec(), "block 1 has a NaN or infinite scale"),
        ("blk.0.attn_norm.weight", at("blk.0.attn_norm.weight") + 4 * 5, f32::NAN.to_le_bytes().to_vec(), "value 5 is NaN or infinite"),
    ];
    for (name, offset, value, needle) in cases {
        let mut bytes = base.clone();
        bytes[offset..offset + value.len()].copy_from_slice(&value);
        let q = write(dir.path(), "nan.gguf", &bytes);
        let err = Model::load(&q, &Device::Cpu).err().unwrap_or_else(|| panic!("{name}: a NaN was accepted")).to_string();
        assert!(err.contains(&format!("tensor {name}: {needle}")) && err.contains("nan.gguf"), "{err}");
    }
}
