//! Choosing the next token from logits: greedy or random with temperature, top-k, top-p and min-p,
//! after repetition, presence and frequency penalties; seeded so output can be reproduced.

use std::collections::HashMap;

use rand::distr::{weighted::WeightedIndex, Distribution};
use rand::rngs::StdRng;
use rand::SeedableRng;

/// How to pick among candidates. A closed enum: greedy has no knobs to set wrongly.
#[derive(Debug, Clone, PartialEq)]
pub enum Sampling {
    Greedy,
    Random { temperature: f32, top_k: Option<usize>, top_p: Option<f32>, min_p: Option<f32> },
}

/// Penalties on tokens already seen. `repetition` 1.0 and the others 0.0 mean none.
#[derive(Debug, Clone, PartialEq)]
pub struct Penalties {
    pub repetition: f32,
    pub presence: f32,
    pub frequency: f32,
    /// How many of the latest tokens count as "seen".
    pub last_n: usize,
}

impl Default for Penalties {
    fn default() -> Self {
        Self { repetition: 1.0, presence: 0.0, frequency: 0.0, last_n: 64 }
    }
}

impl Penalties {
    fn is_neutral(&self) -> bool {
        self.repetition == 1.0 && self.presence == 0.0 && self.frequency == 0.0
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SamplerConfig {
    pub sampling: Sampling,
    pub penalties: Penalties,
    pub seed: Option<u64>,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        Self { sampling: Sampling::Greedy, penalties: Penalties::default(), seed: None }
    }
}

impl SamplerConfig {
    /// Builds a config from user-facing knobs, naming the field and its limits when one is out of range.
    /// A temperature of 0 means greedy.
    pub fn from_params(
        temperature: f32,
        top_k: Option<usize>,
        top_p: Option<f32>,
        min_p: Option<f32>,
        penalties: Penalties,
        seed: Option<u64>,
    ) -> Result<Self, String> {
        if !(0.0..=2.0).contains(&temperature) {
            return Err(format!("`temperature` must be between 0 and 2, got {temperature}"));
        }
        if let Some(p) = top_p.filter(|p| !(*p > 0.0 && *p <= 1.0)) {
            return Err(format!("`top_p` must be in (0, 1], got {p}"));
        }
        if let Some(p) = min_p.filter(|p| !(0.0..=1.0).contains(p)) {
            return Err(format!("`min_p` must be between 0 and 1, got {p}"));
        }
        if top_k == Some(0) {
            return Err("`top_k` must be at least 1".into());
        }
        if !(penalties.repetition > 0.0 && penalties.repetition <= 10.0) {
            return Err(format!("`repetition_penalty` must be in (0, 10], got {}", penalties.repetition));
        }
        for (name, v) in [("presence_penalty", penalties.presence), ("frequency_penalty", penalties.frequency)] {
            if !(-2.0..=2.0).contains(&v) {
                return Err(format!("`{name}` must be between -2 and 2, got {v}"));
            }
        }
        let sampling = if temperature == 0.0 || top_k == Some(1) {
            Sampling::Greedy
        } else {
            Sampling::Random { temperature, top_k, top_p, min_p }
        };
        Ok(Self { sampling, penalties, seed })
    }
}

pub struct Sampler {
    cfg: SamplerConfig,
    rng: StdRng,
}

impl Sampler {
    pub fn new(cfg: SamplerConfig) -> Self {
        let rng = match cfg.seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => StdRng::from_os_rng(),
        };
        Self { cfg, rng }
    }

    /// Picks a token. `history` is the sequence so far (penalties look at its tail).
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> u32 {
        let pen = &self.cfg.penalties;
        if !pen.is_neutral() {
            let tail = &history[history.len().saturating_sub(pen.last_n)..];
            let mut counts: HashMap<u32, u32> = HashMap::new();
            for &t in tail {
                *counts.entry(t).or_default() += 1;
            }
            for (&t, &c) in &counts {
                let Some(l) = logits.get_mut(t as usize) else { continue };
                if *l > 0.0 {
                    *l /= pen.repetition;
                } else {
                    *l *= pen.repetition;
                }
                *l -= pen.presence + pen.frequency * c as f32;
            }
        }
        match self.cfg.sampling.clone() {
            Sampling::Greedy => argmax(logits),
            Sampling::Random { temperature, top_k, top_p, min_p } => {
                self.random(logits, temperature, top_k, top_p, min_p)
            }
        }
    }

    fn random(&mut self, logits: &[f32], temp: f32, top_k: Option<usize>, top_p: Option<f32>, min_p: Option<f32>) -> u32 {
        let mut cand: Vec<(u32, f32)> =
            logits.iter().enumerate().filter(|(_, l)| l.is_finite()).map(|(i, &l)| (i as u32, l / temp)).collect();
        if cand.is_empty() {
            return argmax(logits);
        }
        let by_logit = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1);
        if let Some(k) = top_k.filter(|&k| k < cand.len()) {
            cand.select_nth_unstable_by(k - 1, by_logit);
            cand.truncate(k);
        }
        cand.sort_unstable_by(by_logit);
        let max = cand[0].1;
        let mut probs: Vec<f32> = cand.iter().map(|c| (c.1 - max).exp()).collect();
        let sum: f32 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= sum);
        let mut keep = probs.len();
        if let Some(m) = min_p {
            let floor = probs[0] * m;
            keep = keep.min(probs.iter().take_while(|&&p| p >= floor).count().max(1));
        }
        if let Some(p) = top_p {
            let mut acc = 0.0;
            let n = probs.iter().take_while(|&&q| {
                let before = acc;
                acc += q;
                before < p
            });
            keep = keep.min(n.count().max(1));
        }
        match WeightedIndex::new(&probs[..keep]) {
            Ok(dist) => cand[dist.sample(&mut self.rng)].0,
            Err(_) => cand[0].0,
        }
    }
}

/// Index of the largest value (the first among equals); 0 for an empty slice.
pub fn argmax(xs: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in xs.iter().enumerate() {
        if x > xs[best] {
            best = i;
        }
    }
    best as u32
}
