//! `hearth bench --tasks humaneval` through the binary on SmolLM2: the pass@1 and cost-per-solved
//! tables, CSV, JSON and chart; the same answer from two runs (greedy, batched: deterministic);
//! clear refusals of what cannot run. The sandbox and the dataset are tested in tests/sandbox.rs.

mod common;

use std::process::Command;

fn hearth() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hearth"))
}

/// One `--tasks-only` run on the first `problems` problems; its tasks.json.
fn run(model: &str, problems: usize, out: &std::path::Path) -> (serde_json::Value, String) {
    let o = hearth()
        .args(["bench", "--tasks", "humaneval", "--tasks-only", "--problems", &problems.to_string(), "--task-parallel", "4", "-m", model, "--out"])
        .arg(out)
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned());
    assert!(o.status.success(), "{stdout}\n{stderr}");
    (serde_json::from_str(&std::fs::read_to_string(out.join("tasks.json")).unwrap()).unwrap(), stdout)
}

#[test]
fn humaneval_pass_at_1_is_priced_and_the_same_twice() {
    let model = common::model_path("smollm2-135m-instruct-q4_1");
    let model = model.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (a, table) = run(model, 12, &dir.path().join("a"));
    let (b, _) = run(model, 12, &dir.path().join("b"));
    let r = &a[0];
    assert_eq!((r["task"].as_str(), r["problems"].as_u64(), r["samples"].as_u64()), (Some("humaneval"), Some(12), Some(1)), "{r}");
    let solved = r["solved"].as_u64().unwrap();
    assert_eq!(r["solved_ids"].as_array().unwrap().len() as u64, solved);
    assert!((r["pass_at_1"].as_f64().unwrap() - solved as f64 / 12.0).abs() < 1e-12);
    assert!(r["generated_tokens"].as_u64().unwrap() > 12, "{r}");
    assert!(r["local_cost"].as_f64().unwrap() > 0.0 && r["energy_j"].as_f64().unwrap() > 0.0, "{r}");
    // The cloud comparators with a published pass@1 get a cost per solved problem; the others none.
    let cloud = r["cloud"].as_array().unwrap();
    let mini = cloud.iter().find(|c| c["model"] == "gpt-4o-mini").unwrap();
    assert_eq!(mini["pass_at_1"].as_f64(), Some(0.872));
    let per = mini["per_solved"].as_f64().unwrap();
    assert!((per - mini["cost"].as_f64().unwrap() / (0.872 * 12.0)).abs() < 1e-15, "{mini}");
    assert!(cloud.iter().filter(|c| c["pass_at_1"].is_null()).all(|c| c["per_solved"].is_null()));
    // Greedy decoding, batched or not, gives the same completions: the same problems pass.
    for k in ["solved", "solved_ids", "generated_tokens", "prompt_tokens", "pass_at_1"] {
        assert_eq!(a[0][k], b[0][k], "{k} differs between two runs");
    }
    assert!(table.contains("pass@1") && table.contains("gpt-4o-mini") && table.contains("87.2%"), "{table}");
    let csv = std::fs::read_to_string(dir.path().join("a/tasks.csv")).unwrap();
    assert_eq!(csv.lines().count(), 2, "{csv}");
    let svg = std::fs::read_to_string(dir.path().join("a/pass1_vs_cost.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("pass@1"), "{}", &svg[..svg.len().min(200)]);
}

#[test]
fn tasks_that_cannot_run_are_refused_clearly() {
    let o = hearth().args(["bench", "--tasks", "mbpp", "--tasks-only", "-m", "x"]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("humaneval"), "{err}");
    let model = common::model_path("smollm2-135m-instruct-q4_1");
    let o = hearth().args(["bench", "--tasks", "humaneval-infill", "--tasks-only", "-m"]).arg(&model).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("humaneval-infill") && err.contains("--infill-data"), "{err}");
}

/// Two single-line infilling problems in human-eval-infilling's format; a model with FIM tokens
/// (synthetic) fills them through the FIM prompt, and SmolLM2 (none) is skipped saying why.
#[test]
fn infilling_runs_through_the_fim_path_where_the_model_has_fim_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("fim.gguf");
    let s = common::synth::Synth { context: 512, specials: vec!["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"], ..common::synth::Synth::new("qwen2") };
    common::synth::write(&model, &s);
    let data = dir.path().join("infill.jsonl");
    let problems = [
        serde_json::json!({ "task_id": "t/0", "prompt": "def add(a, b):\n", "suffix": "", "canonical_solution": "    return a + b\n", "test": "def check(f):\n    assert f(1, 2) == 3\n", "entry_point": "add" }),
        serde_json::json!({ "task_id": "t/1", "prompt": "def neg(a):\n", "suffix": "\n", "canonical_solution": "    return -a\n", "test": "def check(f):\n    assert f(1) == -1\n", "entry_point": "neg" }),
    ];
    std::fs::write(&data, problems.iter().map(|p| p.to_string() + "\n").collect::<String>()).unwrap();
    let smollm2 = common::model_path("smollm2-135m-instruct-q4_1");
    let o = hearth()
        .args(["bench", "--tasks", "humaneval-infill", "--tasks-only", "--task-max-tokens", "16", "--infill-data"])
        .arg(&data)
        .arg("-m")
        .arg(&model)
        .arg("-m")
        .arg(&smollm2)
        .arg("--out")
        .arg(dir.path().join("out"))
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("no fill-in-the-middle tokens"), "{stderr}");
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("out/tasks.json")).unwrap()).unwrap();
    assert_eq!(r.as_array().unwrap().len(), 1, "only the FIM model ran: {r}");
    assert_eq!((r[0]["task"].as_str(), r[0]["problems"].as_u64()), (Some("humaneval-infill"), Some(2)));
    assert!(r[0]["generated_tokens"].as_u64().unwrap() > 0);
}
