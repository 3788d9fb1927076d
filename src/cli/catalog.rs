//! `hearth pull` and `hearth list`: fetching catalog models and showing what is downloaded.

use anyhow::Result;

use crate::catalog;

pub fn pull(models: &[String]) -> Result<()> {
    for m in models {
        let path = catalog::pull(m, |msg| eprintln!("{m}: {msg}"))?;
        println!("{m}: {}", path.display());
    }
    Ok(())
}

pub fn list() -> Result<()> {
    let default = catalog::Catalog::builtin()?.default;
    println!("{:<28} {:<8} {:<8} {:>9}  {}", "ID", "ARCH", "QUANT", "SIZE", "PATH");
    for (e, path) in catalog::list()? {
        let mark = if e.id == default { " (default)" } else { "" };
        let at = path.map_or("not downloaded".to_string(), |p| p.display().to_string());
        println!("{:<28} {:<8} {:<8} {:>7.0}MB  {at}{mark}", e.id, e.arch, e.quant, e.size as f64 / 1e6);
    }
    Ok(())
}
