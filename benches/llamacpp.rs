//! hearth against llama.cpp's `llama-bench` on the same GGUF files, same thread count, alternating
//! runs: prompt processing (pp512) and generation (tg128) tokens/s (median and spread), their
//! ratio, generation's memory traffic against the machine's read bandwidth probed before and after
//! each model's runs, and each process's peak RSS. A benchmark, not a test.
//!
//!   LLAMA_BENCH=/path/to/llama-bench cargo bench --bench llamacpp
//!
//! `HEARTH_BENCH_MODELS` (comma-separated catalog ids, .gguf paths, or `synth:SHAPE:TYPE` for a
//! random-weight file with a real model's shapes, written once by `hearth synth` into
//! `target/synth/`, e.g. `synth:qwen2.5-coder-1.5b:Q4_K_M`; default: the two catalog models), `HEARTH_BENCH_RUNS` (alternating runs per model, median reported; default 3) and
//! `HEARTH_BENCH_THREADS` (default: all cores) adjust it. `scripts/verify-llamacpp.sh` builds
//! llama-bench from the llama-cpp-python source distribution.

use std::process::{Command, Stdio};

/// Runs `cmd`, returning its stdout and peak RSS in bytes.
fn run(cmd: &mut Command) -> (String, u64) {
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("starting a benchmark process");
    let pid = child.id() as libc::pid_t;
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.expect("piped stdout"), &mut out).unwrap();
    let (mut status, mut usage) = (0, unsafe { std::mem::zeroed::<libc::rusage>() });
    // SAFETY: waits for our own child, filling `status` and `usage`.
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert!(rc == pid && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "{cmd:?} failed: {out}");
    (out, usage.ru_maxrss as u64 * 1024)
}

/// The machine's read bandwidth in GB/s with `threads` threads, each summing its share of a
/// 1 GiB buffer; the best of 5 passes. Generation at these sizes is bound by it: each token reads
/// every weight once.
fn bandwidth(threads: usize) -> f64 {
    let buf: Vec<u64> = vec![1; 1 << 27];
    let mut best = 0f64;
    for _ in 0..5 {
        let t = std::time::Instant::now();
        let total: u64 = std::thread::scope(|s| {
            let parts: Vec<_> = buf.chunks(buf.len().div_ceil(threads)).map(|c| s.spawn(move || sum(c))).collect();
            parts.into_iter().map(|p| p.join().unwrap()).sum()
        });
        assert_eq!(total, buf.len() as u64);
        best = best.max((buf.len() * 8) as f64 / t.elapsed().as_secs_f64() / 1e9);
    }
    best
}

/// The sum of `c`, four 512-bit accumulators where the build has AVX-512 (`-C target-cpu=native`
/// on such a CPU), so that loads, not adds, set the pace.
fn sum(c: &[u64]) -> u64 {
    #[cfg(all(target_arch = "x86_64", target_feature = "avx512f"))]
    {
        use std::arch::x86_64::*;
        let blocks = c.chunks_exact(32);
        let rest: u64 = blocks.remainder().iter().fold(0, |a, &x| a.wrapping_add(x));
        // SAFETY: the build enables AVX-512 F; each block holds 32 u64s (four vectors).
        unsafe {
            let mut acc = [_mm512_setzero_si512(); 4];
            for b in blocks {
                for (i, a) in acc.iter_mut().enumerate() {
                    *a = _mm512_add_epi64(*a, _mm512_loadu_si512(b.as_ptr().add(8 * i) as *const _));
                }
            }
            let v = _mm512_add_epi64(_mm512_add_epi64(acc[0], acc[1]), _mm512_add_epi64(acc[2], acc[3]));
            (_mm512_reduce_add_epi64(v) as u64).wrapping_add(rest)
        }
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "avx512f")))]
    c.iter().fold(0u64, |a, &x| a.wrapping_add(x))
}

/// The file `id` names; a `synth:SHAPE:TYPE` file is written first if it is not there yet.
fn model_path(hearth: &str, id: &str) -> std::path::PathBuf {
    if let Some(spec) = id.strip_prefix("synth:") {
        let (shape, ty) = spec.split_once(':').unwrap_or((spec, "Q4_K_M"));
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/synth");
        let path = dir.join(format!("{shape}-{ty}.gguf"));
        if !path.exists() {
            std::fs::create_dir_all(&dir).expect("target/synth");
            let ok = Command::new(hearth).args(["synth", shape]).arg(&path).args(["--type", ty]).status().expect("hearth synth");
            assert!(ok.success(), "hearth synth {shape} --type {ty}");
        }
        return path;
    }
    if id.ends_with(".gguf") {
        std::path::PathBuf::from(id)
    } else {
        hearth::catalog::resolve(id).expect("a pulled model")
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let Ok(llama_bench) = std::env::var("LLAMA_BENCH") else {
        eprintln!("set LLAMA_BENCH to a llama-bench binary (scripts/verify-llamacpp.sh builds one)");
        std::process::exit(2);
    };
    let hearth = env!("CARGO_BIN_EXE_hearth");
    let threads = std::env::var("HEARTH_BENCH_THREADS").unwrap_or_else(|_| std::thread::available_parallelism().map_or(1, |n| n.get()).to_string());
    let runs: usize = std::env::var("HEARTH_BENCH_RUNS").ok().and_then(|r| r.parse().ok()).unwrap_or(3);
    let models = std::env::var("HEARTH_BENCH_MODELS").unwrap_or_else(|_| "smollm2-135m-instruct-q4_1,gemma3-270m-q4_k_m".into());
    // Measured in a child process: a child's peak RSS counts its parent's at the time it was
    // spawned, so this process must never hold the probe's buffer.
    if let Ok(t) = std::env::var("HEARTH_BENCH_BANDWIDTH_PROBE") {
        println!("{}", bandwidth(t.parse().expect("a thread count")));
        return;
    }
    // This VM's bandwidth drifts by a third within minutes, so each model's runs are bracketed
    // by a probe, and its traffic is put against the faster of the two.
    let probe = || -> f64 {
        let out = Command::new(std::env::current_exe().expect("this benchmark's path")).env("HEARTH_BENCH_BANDWIDTH_PROBE", &threads).output().expect("the bandwidth probe");
        String::from_utf8_lossy(&out.stdout).trim().parse().expect("the bandwidth probe's GB/s")
    };
    println!("threads {threads}, {runs} alternating runs each, median (lowest–highest); tok/s; read bandwidth probed before and after each model's runs");
    println!("| model | pp512 hearth | pp512 llama.cpp | ratio | tg128 hearth | tg128 llama.cpp | ratio | tg GB/s hearth / llama.cpp (% of the probe, GB/s) | peak RSS hearth MiB | llama.cpp MiB |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for id in models.split(',') {
        let path = model_path(hearth, id);
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        let before = probe();
        for _ in 0..runs {
            let (out, rss) = run(Command::new(hearth).env("RAYON_NUM_THREADS", &threads).args(["speed", "-r", "1", "--json", "-m"]).arg(&path));
            let v: serde_json::Value = serde_json::from_str(out.trim()).expect("hearth speed --json");
            ours.push((v["pp_tps"].as_f64().unwrap(), v["tg_tps"].as_f64().unwrap(), rss));
            let (out, rss) = run(Command::new(&llama_bench).args(["-p", "512", "-n", "128", "-r", "1", "-o", "json", "-t", &threads, "-m"]).arg(&path));
            let v: serde_json::Value = serde_json::from_str(&out).expect("llama-bench -o json");
            let ts = |pp: bool| v.as_array().unwrap().iter().find(|t| (t["n_prompt"].as_u64() > Some(0)) == pp).map(|t| t["avg_ts"].as_f64().unwrap()).unwrap();
            theirs.push((ts(true), ts(false), rss));
        }
        let bw = before.max(probe());
        let m = |v: &[(f64, f64, u64)], f: fn(&(f64, f64, u64)) -> f64| median(v.iter().map(f).collect());
        let (opp, otg, orss) = (m(&ours, |r| r.0), m(&ours, |r| r.1), m(&ours, |r| r.2 as f64));
        let (tpp, ttg, trss) = (m(&theirs, |r| r.0), m(&theirs, |r| r.1), m(&theirs, |r| r.2 as f64));
        let name = path.file_name().unwrap().to_string_lossy();
        // The median, then the spread (lowest–highest run) where there are several runs.
        let show = |med: f64, v: &[(f64, f64, u64)], f: fn(&(f64, f64, u64)) -> f64| {
            let (lo, hi) = v.iter().map(f).fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(x), hi.max(x)));
            if v.len() > 1 { format!("{med:.1} ({lo:.1}–{hi:.1})") } else { format!("{med:.1}") }
        };
        // Each generated token reads the file's weights once (all but the unread embedding rows).
        let gb = std::fs::metadata(&path).map_or(0.0, |m| m.len() as f64 / 1e9);
        let (ogb, tgb) = (otg * gb, ttg * gb);
        let traffic = format!("{ogb:.1} ({:.0}%) / {tgb:.1} ({:.0}%) of {bw:.1}", 100.0 * ogb / bw, 100.0 * tgb / bw);
        println!(
            "| {name} | {} | {} | {:.2} | {} | {} | {:.2} | {traffic} | {:.0} | {:.0} |",
            show(opp, &ours, |r| r.0),
            show(tpp, &theirs, |r| r.0),
            opp / tpp,
            show(otg, &ours, |r| r.1),
            show(ttg, &theirs, |r| r.1),
            otg / ttg,
            orss / 1048576.0,
            trss / 1048576.0
        );
    }
}
