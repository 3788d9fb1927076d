//! A fleet on loopback with real parts: PostgreSQL from Debian's package, two `hearth serve`
//! replicas on SmolLM2 sharing its ledger, and the LiteLLM proxy (pinned, from PyPI) in front with
//! deploy/litellm.yaml. tests/python/fleet.py drives it with the official openai client: 40 mixed
//! requests as 40 rows across both instances, a replica SIGKILLed under load, PostgreSQL down for
//! 20 requests, SIGTERM during 4 streams (see that file for every check).

mod common;

use std::path::PathBuf;
use std::process::Command;

/// LiteLLM's proxy and what it needs, pinned; the openai client comes with it.
const PACKAGES: [&str; 3] = ["litellm[proxy]==1.108.7", "prisma==0.15.0", "openai==3.63.0"];

/// A virtual environment with [`PACKAGES`] (LiteLLM runs as its own program, so it gets its own
/// environment rather than a PYTHONPATH folder).
fn venv() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fleet-venv");
    let marker = dir.join(format!("{}.installed", PACKAGES.join(" ").replace(['[', ']', '=', ' '], "_")));
    if !marker.exists() {
        let made = Command::new("python3").args(["-m", "venv", "--clear"]).arg(&dir).status().expect("python3 is needed for this test");
        assert!(made.success(), "python3 -m venv failed: scripts/test.sh installs python3-venv");
        let pip = Command::new(dir.join("bin/pip")).args(["install", "--quiet", "--disable-pip-version-check"]).args(PACKAGES).status().unwrap();
        assert!(pip.success(), "pip could not install {PACKAGES:?}");
        std::fs::write(&marker, "").unwrap();
    }
    dir
}

#[test]
fn a_fleet_behind_litellm_shares_one_postgres_ledger() {
    let model = common::model_path("smollm2-135m-instruct-q4_1");
    let python = venv().join("bin/python");
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new(python)
        .arg(format!("{root}/tests/python/fleet.py"))
        .arg(env!("CARGO_BIN_EXE_hearth"))
        .arg(&model)
        .arg(format!("{root}/deploy/litellm.yaml"))
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    eprintln!("{stderr}");
    assert!(out.status.success() && stdout.trim() == "ok", "the fleet checks failed:\n{stdout}\n{stderr}");
}
