//! Fill-in-the-middle on a small GGUF file whose vocabulary has FIM tokens: the prompt layout,
//! and `/v1/completions` with `suffix` and llama.cpp's `/infill` over real HTTP.

mod common;

use common::server::Server;
use common::synth::{self, Synth};
use hearth::api::ServeConfig;
use hearth::engine::EngineConfig;
use hearth::model::{ContextFile, Fim, GgufFile, Vocab};
use serde_json::json;

/// The synthetic vocabulary: 256 byte tokens, then the specials in order.
const FIM_PRE: u32 = 256 + 3;
const FIM_SUF: u32 = 256 + 4;
const FIM_MID: u32 = 256 + 5;

fn synth_file(dir: &tempfile::TempDir, specials: Vec<&'static str>) -> std::path::PathBuf {
    let path = dir.path().join("fim.gguf");
    let s = Synth { context: 512, specials, ..Synth::new("qwen2") };
    synth::write(&path, &s);
    path
}

#[test]
fn fim_tokens_are_found_and_laid_out_prefix_suffix_middle() {
    let dir = tempfile::tempdir().unwrap();
    let file = GgufFile::open(&synth_file(&dir, Synth::new("qwen2").specials)).unwrap();
    let vocab = Vocab::from_gguf(&file).unwrap();
    let fim = Fim::from_gguf(&file, &vocab).expect("FIM tokens");
    assert_eq!((fim.prefix, fim.suffix, fim.middle), (FIM_PRE, FIM_SUF, FIM_MID));
    assert_eq!((fim.repo, fim.file_sep), (None, None));
    let enc = |s: &str| vocab.encode(s, false).unwrap();
    let ids = fim.prompt(&vocab, "def f(", "):\n", &[]).unwrap();
    let want: Vec<u32> = [vec![FIM_PRE], enc("def f("), vec![FIM_SUF], enc("):\n"), vec![FIM_MID]].concat();
    assert_eq!(ids, want);
    // Context files come first; without a file-separator token, a text separator marks them.
    let ctx = [ContextFile { filename: "a.py".into(), text: "X = 1\n".into() }];
    let ids = fim.prompt(&vocab, "p", "s", &ctx).unwrap();
    let want: Vec<u32> = [enc("\n\n--- snippet ---\n\n"), enc("X = 1\n"), vec![FIM_PRE], enc("p"), vec![FIM_SUF], enc("s"), vec![FIM_MID]].concat();
    assert_eq!(ids, want);
    // With file-separator and repository tokens, each file is named (Qwen2.5-Coder's layout).
    let mut specials = Synth::new("qwen2").specials;
    specials.extend(["<|repo_name|>", "<|file_sep|>"]);
    let dir2 = tempfile::tempdir().unwrap();
    let file = GgufFile::open(&synth_file(&dir2, specials)).unwrap();
    let vocab = Vocab::from_gguf(&file).unwrap();
    let fim = Fim::from_gguf(&file, &vocab).unwrap();
    let (repo, sep) = (fim.repo.unwrap(), fim.file_sep.unwrap());
    let ids = fim.prompt(&vocab, "p", "s", &ctx).unwrap();
    let want: Vec<u32> = [vec![repo], enc("myproject\n"), vec![sep], enc("a.py\n"), enc("X = 1\n"), vec![sep], enc("filename\n"), vec![FIM_PRE], enc("p"), vec![FIM_SUF], enc("s"), vec![FIM_MID]].concat();
    assert_eq!(ids, want);
    // A vocabulary without them has no FIM.
    let dir3 = tempfile::tempdir().unwrap();
    let file = GgufFile::open(&synth_file(&dir3, vec!["<|endoftext|>", "<|im_start|>", "<|im_end|>"])).unwrap();
    let vocab = Vocab::from_gguf(&file).unwrap();
    assert_eq!(Fim::from_gguf(&file, &vocab), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suffix_and_infill_run_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let path = synth_file(&dir, Synth::new("qwen2").specials);
    let s = Server::start(&path, "synth-coder", EngineConfig::default(), ServeConfig::default()).await;
    let (_, models) = s.get("/v1/models").await;
    assert!(models.contains("\"fill_in_the_middle\":true"), "{models}");
    let (prefix, suffix) = ("def add(a, b):\n    return ", "\n\nprint(add(1, 2))\n");
    // 1 + bytes of the prefix + 1 + bytes of the suffix + 1 (one token per byte here).
    let layout = prefix.len() + suffix.len() + 3;
    let (st, _, v) = s.post("/v1/completions", &json!({ "prompt": prefix, "suffix": suffix, "max_tokens": 5, "temperature": 0 })).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["usage"]["prompt_tokens"], layout);
    assert!(v["choices"][0]["text"].is_string());
    let infill = json!({ "input_prefix": prefix, "input_suffix": suffix, "n_predict": 5, "temperature": 0,
                         "input_extra": [{ "filename": "util.py", "text": "X = 1\n" }], "cache_prompt": true, "t_max_predict_ms": 500 });
    let (st, _, v) = s.post("/infill", &infill).await;
    assert_eq!(st, 200, "{v}");
    let snippet = "\n\n--- snippet ---\n\n".len() + "X = 1\n".len();
    assert_eq!(v["tokens_evaluated"], layout + snippet);
    assert_eq!(v["tokens_predicted"].as_u64().unwrap() as usize, v["timings"]["predicted_n"].as_u64().unwrap() as usize);
    assert_eq!(v["stop"], true);
    let whole = v["content"].as_str().unwrap().to_owned();
    // Streaming /infill: llama.cpp's chunks, the same content, and a final object with stop: true.
    let mut stream = infill.clone();
    stream["stream"] = json!(true);
    let events = s.stream("/infill", &stream).await;
    let chunks: Vec<serde_json::Value> = events.iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    let last = chunks.last().unwrap();
    assert_eq!(last["stop"], true);
    assert!(chunks[..chunks.len() - 1].iter().all(|c| c["stop"] == false));
    let streamed: String = chunks.iter().filter_map(|c| c["content"].as_str()).collect();
    assert_eq!(streamed, whole);
}
