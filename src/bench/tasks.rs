//! `hearth bench --tasks humaneval`: how many coding problems each variant solves and what a
//! solved problem costs here and in the cloud. Completions come from the server's own engine
//! (greedy by default, the problems' stop sequences, several problems batched: the same answers as
//! alone), each is run with the problem's tests in the sandbox, and the ledger's cost model prices
//! the measured energy and busy time.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;

use super::humaneval::{self, Problem};
use super::sandbox::{Limits, RunResult, Sandbox};
use crate::engine::{Engine, EngineConfig, GenRequest, Meter, SamplerConfig, Sampling};
use crate::ledger::{Billed, PriceTable};
use crate::model::Model;

/// A coding benchmark `--tasks` can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Task {
    #[serde(rename = "humaneval")]
    HumanEval,
    #[serde(rename = "humaneval-infill")]
    HumanEvalInfill,
}

impl std::str::FromStr for Task {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "humaneval" => Ok(Task::HumanEval),
            "humaneval-infill" => Ok(Task::HumanEvalInfill),
            other => Err(format!("unknown task `{other}`; known: humaneval, humaneval-infill")),
        }
    }
}

impl Task {
    pub fn name(self) -> &'static str {
        match self {
            Task::HumanEval => "humaneval",
            Task::HumanEvalInfill => "humaneval-infill",
        }
    }
}

#[derive(Debug, Clone)]
pub struct TaskSettings {
    /// Completions per problem: 1 is greedy pass@1; more are sampled at `temperature`.
    pub samples: usize,
    pub temperature: f32,
    pub seed: u64,
    /// The most tokens one completion may take.
    pub max_tokens: usize,
    /// Problems generated at once (batched by the engine).
    pub parallel: usize,
    /// Only the first this many problems.
    pub limit: Option<usize>,
    pub limits: Limits,
}

/// A single-line infilling problem (human-eval-infilling's format): the model writes the line
/// between `prompt` and `suffix` through its fill-in-the-middle tokens.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Infill {
    pub task_id: String,
    pub prompt: String,
    pub suffix: String,
    pub canonical_solution: String,
    pub test: String,
    pub entry_point: String,
}

/// Reads infilling problems from a JSON-lines file (one problem per line).
pub fn load_infill(path: &std::path::Path) -> Result<Vec<Infill>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).map_err(|e| format!("{} line {}: {e}", path.display(), i + 1)))
        .collect()
}

/// `prompt + completion + suffix`, then the tests, as human-eval-infilling checks it.
pub fn infill_program(p: &Infill, completion: &str) -> String {
    format!("{}{}{}\n\n{}\n\ncheck({})\n", p.prompt, completion, p.suffix, p.test, p.entry_point)
}

/// One problem of either task.
#[derive(Debug, Clone)]
pub enum Item {
    Complete(Problem),
    Infill(Infill),
}

impl Item {
    fn task_id(&self) -> &str {
        match self {
            Item::Complete(p) => &p.task_id,
            Item::Infill(p) => &p.task_id,
        }
    }

    /// The prompt's tokens: the problem's text, or the FIM layout of prefix and suffix.
    fn prompt(&self, engine: &Engine) -> Result<Vec<u32>, String> {
        let info = engine.info();
        match self {
            Item::Complete(p) => info.vocab.encode(&p.prompt, true).map_err(|e| e.to_string()),
            Item::Infill(p) => {
                let fim = info.fim.as_ref().ok_or("the model has no fill-in-the-middle tokens")?;
                fim.prompt(&info.vocab, &p.prompt, &p.suffix, &[]).map_err(|e| e.to_string())
            }
        }
    }

    /// Where a completion ends: HumanEval's stop sequences, or the end of the one line.
    fn stops(&self) -> Vec<String> {
        match self {
            Item::Complete(_) => humaneval::STOP.iter().map(|x| x.to_string()).collect(),
            Item::Infill(_) => vec!["\n".into()],
        }
    }

    fn check(&self, sandbox: &Sandbox, completion: &str, limits: &Limits) -> RunResult {
        match self {
            Item::Complete(p) => humaneval::check(sandbox, p, completion, limits),
            // The line without its end (the stop), which the suffix does not carry.
            Item::Infill(p) => sandbox.run_python(&infill_program(p, &format!("{completion}\n")), limits),
        }
    }
}

/// A cloud model's cost for the same problems, per problem it would solve.
#[derive(Debug, Clone, Serialize)]
pub struct CloudPerSolved {
    pub model: String,
    /// The same prompt and completion tokens at its prices, in the display currency.
    pub cost: f64,
    /// Its published pass@1 on this benchmark, and where that comes from.
    pub pass_at_1: Option<f64>,
    pub source: Option<String>,
    /// `cost` ÷ (its pass@1 × problems); none without a published pass@1.
    pub per_solved: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TaskResult {
    pub task: Task,
    pub variant: String,
    pub problems: usize,
    pub samples: usize,
    /// Problems whose first (greedy) completion passed.
    pub solved: usize,
    pub pass_at_1: f64,
    /// pass@k for k in 1, 10, 100 up to `samples` (the unbiased estimator), when sampling.
    pub pass_at_k: Vec<(usize, f64)>,
    pub prompt_tokens: u64,
    pub generated_tokens: u64,
    pub wall_s: f64,
    pub busy_s: f64,
    pub energy_j: f64,
    /// Local cost of the generations, in the display currency, and per solved problem.
    pub local_cost: f64,
    pub local_per_solved: Option<f64>,
    pub currency: String,
    pub cloud: Vec<CloudPerSolved>,
    /// The task ids solved (first completion), for diffs between variants and runs.
    pub solved_ids: Vec<String>,
}

/// What one completion of one problem gave.
struct Done {
    problem: usize,
    passed: bool,
    prompt_tokens: u64,
    generated: u64,
}

/// Generates `settings.samples` completions for each problem with `model`, runs them with the
/// problem's tests in `sandbox`, and prices the run. `progress(done, total, task_id)` follows it.
pub fn run(
    task: Task,
    variant: &str,
    model: Model,
    problems: &[Item],
    settings: &TaskSettings,
    prices: &PriceTable,
    sandbox: &Sandbox,
    progress: &(dyn Fn(usize, usize, &str) + Sync),
) -> Result<TaskResult, String> {
    let problems = &problems[..settings.limit.unwrap_or(problems.len()).min(problems.len())];
    let context = model.decoder.spec.context_length;
    let cfg = EngineConfig { max_running: settings.parallel.max(1), queue: 1024, prefix_cache: 0, ..EngineConfig::default() };
    let engine = Engine::start(model, variant.to_owned(), cfg);
    let jobs: Vec<(usize, usize)> = (0..problems.len()).flat_map(|p| (0..settings.samples.max(1)).map(move |s| (p, s))).collect();
    let (next, finished) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let meter = Arc::new(Meter::default());
    let results: Mutex<Vec<Done>> = Mutex::new(Vec::with_capacity(jobs.len()));
    let failure: Mutex<Option<String>> = Mutex::new(None);
    let start = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..settings.parallel.max(1) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(&(p, sample)) = jobs.get(i) else { return };
                if failure.lock().unwrap_or_else(|e| e.into_inner()).is_some() {
                    return;
                }
                match complete(&engine, &problems[p], sample, settings, context, &meter) {
                    Ok((completion, prompt_tokens, generated)) => {
                        let run = problems[p].check(sandbox, &completion, &settings.limits);
                        // The sandbox failing is not the code failing: stop rather than miscount.
                        if let Some(e) = run.sandbox_error {
                            *failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(format!("{}: the sandbox failed: {e}", problems[p].task_id()));
                            return;
                        }
                        results.lock().unwrap_or_else(|e| e.into_inner()).push(Done { problem: p, passed: run.passed, prompt_tokens, generated });
                        progress(finished.fetch_add(1, Ordering::SeqCst) + 1, jobs.len(), problems[p].task_id());
                    }
                    Err(e) => *failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(format!("{}: {e}", problems[p].task_id())),
                }
            });
        }
    });
    if let Some(e) = failure.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(e);
    }
    let wall_s = start.elapsed().as_secs_f64();
    let done = results.into_inner().unwrap_or_else(|e| e.into_inner());
    Ok(summarize(task, variant, problems, settings, prices, &done, wall_s, meter.joules(), meter.busy_secs()))
}

/// One completion: the text, prompt tokens and generated tokens.
fn complete(engine: &Engine, p: &Item, sample: usize, s: &TaskSettings, context: usize, meter: &Arc<Meter>) -> Result<(String, u64, u64), String> {
    let prompt = p.prompt(engine)?;
    if prompt.len() >= context {
        return Err(format!("the prompt has {} tokens; the context holds {context}", prompt.len()));
    }
    let sampling = if s.samples <= 1 || s.temperature == 0.0 {
        Sampling::Greedy
    } else {
        Sampling::Random { temperature: s.temperature, top_k: None, top_p: Some(0.95), min_p: None }
    };
    let sampler = SamplerConfig { sampling, seed: Some(s.seed + sample as u64), ..SamplerConfig::default() };
    let max_tokens = s.max_tokens.min(context - prompt.len());
    let req = GenRequest { stop: p.stops(), meter: meter.clone(), ..GenRequest::new(prompt, max_tokens, sampler) };
    let g = engine.generate(req, |_| {}).map_err(|e| e.to_string())?;
    Ok((g.text, g.prompt_tokens as u64, g.tokens.len() as u64))
}

#[allow(clippy::too_many_arguments)]
fn summarize(task: Task, variant: &str, problems: &[Item], s: &TaskSettings, prices: &PriceTable, done: &[Done], wall_s: f64, energy_j: f64, busy_s: f64) -> TaskResult {
    let n = s.samples.max(1);
    let mut correct = vec![0usize; problems.len()];
    let mut first = vec![false; problems.len()];
    let mut seen = vec![0usize; problems.len()];
    let (mut prompt_tokens, mut generated_tokens) = (0u64, 0u64);
    let mut cloud_cost = vec![0.0; prices.compare.len()];
    for d in done {
        correct[d.problem] += usize::from(d.passed);
        if seen[d.problem] == 0 {
            first[d.problem] = d.passed;
        }
        seen[d.problem] += 1;
        prompt_tokens += d.prompt_tokens;
        generated_tokens += d.generated;
        for (cost, id) in cloud_cost.iter_mut().zip(&prices.compare) {
            if let Some(m) = prices.model(id) {
                *cost += m.cost(Billed { prompt: d.prompt_tokens, cached: 0, completion: d.generated }) * prices.to_display(&m.currency);
            }
        }
    }
    let solved = first.iter().filter(|&&f| f).count();
    let pass_at_1 = if n == 1 {
        solved as f64 / problems.len().max(1) as f64
    } else {
        correct.iter().map(|&c| humaneval::pass_at_k(n, c, 1)).sum::<f64>() / problems.len().max(1) as f64
    };
    let pass_at_k = [1usize, 10, 100]
        .into_iter()
        .filter(|&k| n > 1 && k <= n)
        .map(|k| (k, correct.iter().map(|&c| humaneval::pass_at_k(n, c, k)).sum::<f64>() / problems.len().max(1) as f64))
        .collect();
    let (electricity, hardware) = prices.local.cost(energy_j, busy_s);
    let local_cost = (electricity + hardware) * prices.to_display(&prices.local.currency);
    let expected_solved = pass_at_1 * problems.len() as f64;
    let per = |cost: f64, solved: f64| (solved > 0.0).then(|| cost / solved);
    let cloud = prices
        .compare
        .iter()
        .zip(cloud_cost)
        .map(|(id, cost)| {
            let score = prices.model(id).and_then(|m| m.score(task.name()));
            CloudPerSolved {
                model: id.clone(),
                cost,
                pass_at_1: score.map(|s| s.pass_at_1),
                source: score.map(|s| format!("{} ({})", s.source, s.published)),
                per_solved: score.and_then(|s| per(cost, s.pass_at_1 * problems.len() as f64)),
            }
        })
        .collect();
    TaskResult {
        task,
        variant: variant.to_owned(),
        problems: problems.len(),
        samples: n,
        solved,
        pass_at_1,
        pass_at_k,
        prompt_tokens,
        generated_tokens,
        wall_s,
        busy_s,
        energy_j,
        local_cost,
        local_per_solved: per(local_cost, expected_solved),
        currency: prices.currency.display.clone(),
        cloud,
        solved_ids: problems.iter().zip(&first).filter(|(_, &f)| f).map(|(p, _)| p.task_id().to_owned()).collect(),
    }
}

/// The results as a markdown table: one row per variant, then the cloud models with a published
/// pass@1 as points of comparison.
pub fn to_markdown(results: &[TaskResult]) -> String {
    let Some(r0) = results.first() else { return String::new() };
    let cur = &r0.currency;
    let mut out = format!(
        "\n{} ({} problems{}):\n\n| variant | pass@1 | solved | generated tokens | wall s | local cost ({cur}) | local per solved ({cur}) |\n|---|---|---|---|---|---|---|\n",
        r0.task.name(),
        r0.problems,
        if r0.samples > 1 { format!(", {} samples each", r0.samples) } else { ", greedy".into() }
    );
    for r in results {
        let k: String = r.pass_at_k.iter().filter(|(k, _)| *k > 1).map(|(k, v)| format!(", pass@{k} {:.1}%", v * 100.0)).collect();
        out += &format!(
            "| {} | {:.1}%{k} | {}/{} | {} | {:.1} | {:.6} | {} |\n",
            r.variant,
            r.pass_at_1 * 100.0,
            r.solved,
            r.problems,
            r.generated_tokens,
            r.wall_s,
            r.local_cost,
            r.local_per_solved.map_or("—".into(), |v| format!("{v:.6}"))
        );
    }
    out += &format!("\n| cloud model, same tokens as {} | published pass@1 | cost ({cur}) | per solved ({cur}) | source |\n|---|---|---|---|---|\n", r0.variant);
    for c in &r0.cloud {
        out += &format!(
            "| {} | {} | {:.6} | {} | {} |\n",
            c.model,
            c.pass_at_1.map_or("—".into(), |p| format!("{:.1}%", p * 100.0)),
            c.cost,
            c.per_solved.map_or("—".into(), |v| format!("{v:.6}")),
            c.source.as_deref().unwrap_or("no published figure in the price table")
        );
    }
    out
}

pub fn to_csv(results: &[TaskResult]) -> String {
    let mut out = String::from("task,variant,problems,samples,solved,pass_at_1,prompt_tokens,generated_tokens,wall_s,busy_s,energy_j,local_cost,local_per_solved,currency\n");
    for r in results {
        out += &format!(
            "{},{},{},{},{},{:.6},{},{},{:.3},{:.3},{:.3},{:.9},{},{}\n",
            r.task.name(),
            r.variant,
            r.problems,
            r.samples,
            r.solved,
            r.pass_at_1,
            r.prompt_tokens,
            r.generated_tokens,
            r.wall_s,
            r.busy_s,
            r.energy_j,
            r.local_cost,
            r.local_per_solved.map_or(String::new(), |v| format!("{v:.9}")),
            r.currency
        );
    }
    out
}
