//! Same request, same answer: on both catalog models, 32 prompts (code and chat, a few tokens to
//! over 1,000) give bit-identical tokens and logprobs alone, batched with 3 and 7 other requests,
//! after their prompt (or a longer one sharing its prefix) is in the prefix cache, and with prompt
//! chunks of 7, 64 and 512 tokens; greedy and with a seed at temperature 0.8.

mod common;

use std::collections::HashMap;

use candle_core::Device;
use hearth::engine::{Engine, EngineConfig, Event, GenRequest, SamplerConfig, Sampling};
use hearth::model::{ChatMessage, Model};

const NEW_TOKENS: usize = 12;

/// What a request gave: each token with its logprob's bits.
type Answer = Vec<(u32, u32)>;

fn prompts(model: &Model) -> Vec<Vec<u32>> {
    let code = [
        "import json\n\ndef load(path):",
        "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
        "fn main() {\n    let v: Vec<i32> = ",
        "#include <stdio.h>\n\nint main(void) {\n",
        "SELECT name, COUNT(*) FROM orders",
        "class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, x):",
        "const express = require('express');\nconst app = express();\n",
        "x",
    ];
    let chat = [
        "Write a Python function that reverses a string.",
        "What is a closure in JavaScript?",
        "Explain the difference between a process and a thread.",
        "hi",
        "Translate 'good morning' to French.",
        "List three sorting algorithms.",
        "How do I read a file line by line in Rust?",
        "What does HTTP 418 mean?",
    ];
    let long_code: String = (0..80).map(|i| format!("def f{i}(x):\n    return x * {i} + {}\n\n", i * i)).collect();
    let long_text = "The quick brown fox jumps over the lazy dog while the compiler checks every borrow. ".repeat(80);
    let encode = |t: &str| model.vocab.encode(t, true).unwrap();
    let chat_of = |q: &str| {
        let text = model.prompt.render(&[ChatMessage::new("user", q)], true).unwrap();
        model.vocab.encode(&text, !model.prompt.starts_with_bos(&text)).unwrap()
    };
    let mut out: Vec<Vec<u32>> = code.iter().map(|t| encode(t)).collect();
    out.extend(chat.iter().map(|q| chat_of(q)));
    // Long ones: over 1,000 tokens, and their cut versions.
    for (i, long) in [long_code.as_str(), long_text.as_str()].into_iter().enumerate() {
        let full = encode(long);
        assert!(full.len() > 1000, "a long prompt has only {} tokens", full.len());
        for cut in [full.len(), full.len() * 3 / 4, full.len() / 2, 300 + i * 7, 129, 64, 33, 17] {
            out.push(full[..cut].to_vec());
        }
    }
    out
}

fn request(prompt: &[u32], seeded: bool) -> GenRequest {
    let sampler = if seeded {
        SamplerConfig { sampling: Sampling::Random { temperature: 0.8, top_k: None, top_p: None, min_p: None }, seed: Some(7), ..SamplerConfig::default() }
    } else {
        SamplerConfig::default()
    };
    let mut r = GenRequest::new(prompt.to_vec(), NEW_TOKENS, sampler);
    r.logprobs = Some(0);
    r
}

/// Submits all of `prompts` at once (they share steps) and waits for every answer.
fn run_together(engine: &Engine, prompts: &[&[u32]], seeded: bool) -> Vec<Answer> {
    let mut rxs: Vec<_> = prompts.iter().map(|p| engine.submit(request(p, seeded)).unwrap()).collect();
    rxs.iter_mut()
        .map(|rx| {
            let mut answer = Answer::new();
            while let Some(event) = rx.blocking_recv() {
                match event {
                    Event::Token { token, logprob, .. } => answer.push((token, logprob.expect("asked for logprobs").logprob.to_bits())),
                    Event::Done { .. } => break,
                    Event::Error { message, .. } => panic!("{message}"),
                    _ => {}
                }
            }
            answer
        })
        .collect()
}

fn engine(path: &std::path::Path, step_tokens: usize, prefix_cache: usize) -> Engine {
    let model = Model::load(path, &Device::Cpu).unwrap();
    Engine::start(model, String::new(), EngineConfig { step_tokens, prefix_cache, max_running: 8, ..EngineConfig::default() })
}

fn check(id: &str) {
    let path = common::model_path(id);
    let model = Model::load(&path, &Device::Cpu).unwrap();
    let prompts = prompts(&model);
    drop(model);
    let mut failures = Vec::new();
    for seeded in [false, true] {
        let mut compare = |how: &str, i: usize, got: &Answer, alone: &Answer| {
            if got != alone {
                let at = got.iter().zip(alone).position(|(a, b)| a != b).unwrap_or(got.len().min(alone.len()));
                failures.push(format!("{id} seeded={seeded} prompt {i} ({} tokens) {how}: differs at token {at}", prompts[i].len()));
            }
        };
        // Alone, nothing cached.
        let fresh = engine(&path, 512, 0);
        let alone: Vec<Answer> = prompts.iter().map(|p| run_together(&fresh, &[p], seeded).remove(0)).collect();
        // Batched with others: groups of 4 and 8, each prompt beside different neighbours.
        for group in [4, 8] {
            let mut order: Vec<usize> = (0..prompts.len()).collect();
            order.rotate_left(group / 2);
            for ids in order.chunks(group) {
                let ps: Vec<&[u32]> = ids.iter().map(|&i| prompts[i].as_slice()).collect();
                for (&i, got) in ids.iter().zip(run_together(&fresh, &ps, seeded)) {
                    compare(&format!("in a batch of {}", ids.len()), i, &got, &alone[i]);
                }
            }
        }
        drop(fresh);
        // Prompt chunks of other sizes.
        for step in [7, 64] {
            let e = engine(&path, step, 0);
            for (i, p) in prompts.iter().enumerate() {
                compare(&format!("with --batch-tokens {step}"), i, &run_together(&e, &[p], seeded).remove(0), &alone[i]);
            }
        }
        // From the prefix cache: the same prompt again, and after a longer prompt sharing its prefix.
        let cached = engine(&path, 512, 8);
        let mut longer: HashMap<usize, Vec<u32>> = HashMap::new();
        for (i, p) in prompts.iter().enumerate() {
            run_together(&cached, &[p], seeded);
            compare("again, from the prefix cache", i, &run_together(&cached, &[p], seeded).remove(0), &alone[i]);
            let mut l = p.clone();
            l.extend_from_slice(&prompts[(i + 1) % prompts.len()][..4.min(prompts[(i + 1) % prompts.len()].len())]);
            longer.insert(i, l);
        }
        for (i, p) in prompts.iter().enumerate() {
            run_together(&cached, &[&longer[&i]], seeded);
            compare("after a longer prompt with its prefix", i, &run_together(&cached, &[p], seeded).remove(0), &alone[i]);
        }
    }
    assert!(failures.is_empty(), "{} differences:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn smollm2_gives_the_same_answer_however_a_request_runs() {
    check("smollm2-135m-instruct-q4_1");
}

#[test]
fn gemma3_gives_the_same_answer_however_a_request_runs() {
    check("gemma3-270m-q4_k_m");
}
