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
    /// Added to the logits of these tokens before anything else (OpenAI's `logit_bias`).
    pub logit_bias: Vec<(u32, f32)>,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        Self { sampling: Sampling::Greedy, penalties: Penalties::default(), seed: None, logit_bias: Vec::new() }
    }
}

/// A sampling knob. Each wire protocol names it in its own way (see [`Knob::name`] for the
/// OpenAI / llama.cpp names), so errors carry the knob, not a field name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Knob {
    Temperature,
    TopK,
    TopP,
    MinP,
    RepeatPenalty,
    PresencePenalty,
    FrequencyPenalty,
}

impl Knob {
    /// The knob's name in OpenAI's and llama.cpp's requests.
    pub fn name(self) -> &'static str {
        match self {
            Knob::Temperature => "temperature",
            Knob::TopK => "top_k",
            Knob::TopP => "top_p",
            Knob::MinP => "min_p",
            Knob::RepeatPenalty => "repeat_penalty",
            Knob::PresencePenalty => "presence_penalty",
            Knob::FrequencyPenalty => "frequency_penalty",
        }
    }
}

/// A knob outside its range; `reason` states the limit and the value given ("must be …, got …").
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("`{}` {reason}", knob.name())]
pub struct SamplerError {
    pub knob: Knob,
    pub reason: String,
}

impl SamplerConfig {
    /// Builds a config from user-facing knobs; an out-of-range one is named with its limits.
    /// A temperature of 0 means greedy.
    pub fn from_params(
        temperature: f32,
        top_k: Option<usize>,
        top_p: Option<f32>,
        min_p: Option<f32>,
        penalties: Penalties,
        seed: Option<u64>,
    ) -> Result<Self, SamplerError> {
        let bad = |knob, reason: String| Err(SamplerError { knob, reason });
        if !(0.0..=2.0).contains(&temperature) {
            return bad(Knob::Temperature, format!("must be between 0 and 2, got {temperature}"));
        }
        if let Some(p) = top_p.filter(|p| !(*p > 0.0 && *p <= 1.0)) {
            return bad(Knob::TopP, format!("must be in (0, 1], got {p}"));
        }
        if let Some(p) = min_p.filter(|p| !(0.0..=1.0).contains(p)) {
            return bad(Knob::MinP, format!("must be between 0 and 1, got {p}"));
        }
        if top_k == Some(0) {
            return bad(Knob::TopK, "must be at least 1, got 0".into());
        }
        if !(penalties.repetition > 0.0 && penalties.repetition <= 10.0) {
            return bad(Knob::RepeatPenalty, format!("must be in (0, 10], got {}", penalties.repetition));
        }
        for (knob, v) in [(Knob::PresencePenalty, penalties.presence), (Knob::FrequencyPenalty, penalties.frequency)] {
            if !(-2.0..=2.0).contains(&v) {
                return bad(knob, format!("must be between -2 and 2, got {v}"));
            }
        }
        let sampling = if temperature == 0.0 || top_k == Some(1) {
            Sampling::Greedy
        } else {
            Sampling::Random { temperature, top_k, top_p, min_p }
        };
        Ok(Self { sampling, penalties, seed, logit_bias: Vec::new() })
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
        for &(t, b) in &self.cfg.logit_bias {
            if let Some(l) = logits.get_mut(t as usize) {
                *l += b;
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(t: f32, k: Option<usize>, p: Option<f32>, m: Option<f32>, seed: u64) -> SamplerConfig {
        SamplerConfig::from_params(t, k, p, m, Penalties::default(), Some(seed)).unwrap()
    }

    fn logits() -> Vec<f32> {
        vec![1.0, 3.0, 2.5, -1.0, 0.0, 2.9]
    }

    #[test]
    fn greedy_takes_the_largest() {
        let mut s = Sampler::new(cfg(0.0, None, None, None, 1));
        assert_eq!(s.sample(&mut logits(), &[]), 1);
        assert_eq!(cfg(0.7, Some(1), None, None, 1).sampling, Sampling::Greedy);
    }

    #[test]
    fn same_seed_same_tokens_other_seed_other_tokens() {
        let run = |seed| {
            let mut s = Sampler::new(cfg(1.5, None, None, None, seed));
            (0..64).map(|_| s.sample(&mut logits(), &[])).collect::<Vec<_>>()
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
    }

    #[test]
    fn frequencies_follow_the_softmax() {
        let mut s = Sampler::new(cfg(1.0, None, None, None, 9));
        let l = logits();
        let z: f32 = l.iter().map(|x| x.exp()).sum();
        let mut counts = [0usize; 6];
        let n = 20_000;
        for _ in 0..n {
            counts[s.sample(&mut l.clone(), &[]) as usize] += 1;
        }
        for (i, &c) in counts.iter().enumerate() {
            let want = l[i].exp() / z;
            let got = c as f32 / n as f32;
            assert!((want - got).abs() < 0.015, "token {i}: want {want}, got {got}");
        }
    }

    #[test]
    fn top_k_top_p_and_min_p_cut_the_tail() {
        let mut s = Sampler::new(cfg(1.0, Some(2), None, None, 3));
        assert!((0..500).all(|_| [1, 5].contains(&s.sample(&mut logits(), &[]))));
        // p(1) ≈ 0.37, p(5) ≈ 0.33: top_p 0.5 keeps those two only.
        let mut s = Sampler::new(cfg(1.0, None, Some(0.5), None, 3));
        assert!((0..500).all(|_| [1, 5].contains(&s.sample(&mut logits(), &[]))));
        let mut s = Sampler::new(cfg(1.0, None, Some(0.01), None, 3));
        assert!((0..100).all(|_| s.sample(&mut logits(), &[]) == 1));
        // min_p 0.8: only tokens with p >= 0.8 * p(max) survive: 1 and 5 (2.9 vs 3.0).
        let mut s = Sampler::new(cfg(1.0, None, None, Some(0.8), 3));
        assert!((0..500).all(|_| [1, 5].contains(&s.sample(&mut logits(), &[]))));
    }

    #[test]
    fn penalties_push_seen_tokens_down() {
        let pen = |repetition, presence, frequency| Penalties { repetition, presence, frequency, last_n: 64 };
        let mut s = Sampler::new(SamplerConfig { penalties: pen(2.0, 0.0, 0.0), ..SamplerConfig::default() });
        let mut l = logits();
        assert_eq!(s.sample(&mut l, &[1]), 5);
        assert_eq!(l[1], 1.5);
        let mut s = Sampler::new(SamplerConfig { penalties: pen(1.0, 0.5, 0.25), ..SamplerConfig::default() });
        let mut l = logits();
        s.sample(&mut l, &[1, 1, 3]);
        assert_eq!(l[1], 3.0 - 0.5 - 0.5);
        assert_eq!(l[3], -1.0 - 0.5 - 0.25);
        assert_eq!(l[2], 2.5);
        // Only the last `last_n` tokens count.
        let mut s = Sampler::new(SamplerConfig { penalties: Penalties { last_n: 1, ..pen(2.0, 0.0, 0.0) }, ..SamplerConfig::default() });
        let mut l = logits();
        s.sample(&mut l, &[1, 2]);
        assert_eq!((l[1], l[2]), (3.0, 1.25));
    }

    #[test]
    fn out_of_range_knobs_name_the_knob() {
        let p = Penalties::default;
        let knob = |r: Result<SamplerConfig, SamplerError>| r.unwrap_err().knob;
        assert_eq!(knob(SamplerConfig::from_params(-1.0, None, None, None, p(), None)), Knob::Temperature);
        assert_eq!(knob(SamplerConfig::from_params(1.0, None, Some(1.5), None, p(), None)), Knob::TopP);
        assert_eq!(knob(SamplerConfig::from_params(1.0, None, Some(0.0), None, p(), None)), Knob::TopP);
        assert_eq!(knob(SamplerConfig::from_params(1.0, Some(0), None, None, p(), None)), Knob::TopK);
        assert_eq!(knob(SamplerConfig::from_params(1.0, None, None, Some(2.0), p(), None)), Knob::MinP);
        let bad = Penalties { presence: 3.0, ..p() };
        assert_eq!(knob(SamplerConfig::from_params(1.0, None, None, None, bad, None)), Knob::PresencePenalty);
        let bad = Penalties { frequency: -3.0, ..p() };
        assert_eq!(knob(SamplerConfig::from_params(1.0, None, None, None, bad, None)), Knob::FrequencyPenalty);
        let nan = Penalties { repetition: f32::NAN, ..p() };
        assert_eq!(knob(SamplerConfig::from_params(1.0, None, None, None, nan, None)), Knob::RepeatPenalty);
        assert_eq!(knob(SamplerConfig::from_params(f32::NAN, None, None, None, p(), None)), Knob::Temperature);
        let e = SamplerConfig::from_params(1.0, None, None, None, Penalties { repetition: 0.0, ..p() }, None).unwrap_err();
        assert_eq!(e.to_string(), "`repeat_penalty` must be in (0, 10], got 0");
    }

    #[test]
    fn logit_bias_moves_the_choice() {
        let mut s = Sampler::new(SamplerConfig { logit_bias: vec![(1, -100.0), (3, 5.0)], ..SamplerConfig::default() });
        assert_eq!(s.sample(&mut logits(), &[]), 3);
    }

    #[test]
    fn non_finite_logits_are_never_chosen() {
        let mut s = Sampler::new(cfg(1.0, None, None, None, 5));
        let l = vec![f32::NEG_INFINITY, 0.0, f32::NAN, f32::NEG_INFINITY];
        assert!((0..50).all(|_| s.sample(&mut l.clone(), &[]) == 1));
    }
}
