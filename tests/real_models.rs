//! End-to-end checks on the two real models: greedy output against candle-transformers,
//! chat templates, tokenization and perplexity.

mod common;

use candle_core::Device;
use hearth::model::{ChatMessage, Model};

const SMOL: &str = "smollm2-135m-instruct-q4_1";
const GEMMA: &str = "gemma3-270m-q4_k_m";

#[test]
fn smollm2_greedy_matches_candle_for_32_tokens() {
    let path = common::model_path(SMOL);
    let model = Model::load(&path, &Device::Cpu).unwrap();
    let text = model.prompt.render(&[ChatMessage::new("user", "Write a Python function that reverses a string.")], true).unwrap();
    let prompt = model.vocab.encode(&text, true).unwrap();
    eprintln!("{text:?} -> {prompt:?}");
    let ours = common::hearth_greedy(&model, &prompt, 32);
    let theirs = common::reference_greedy(&path, &prompt, 32);
    eprintln!("ours:   {:?}\ntheirs: {:?}", model.vocab.decode(&ours), model.vocab.decode(&theirs));
    assert_eq!(ours, theirs);
}

