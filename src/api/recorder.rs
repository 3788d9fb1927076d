//! Writing each answered request to the cost ledger: a finished one is priced and committed
//! before its response (or final stream chunk) goes out, so a reported cost is already durable;
//! one whose client left is recorded as cancelled when its reply is dropped.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderMap};
use sha2::{Digest, Sha256};

use crate::engine::{FinishReason, Meter, ModelInfo};
use crate::ledger::{Cost, Ledger, Outcome, PromptText, Record};

use super::respond::{Choice, Reply};

/// What the ledger needs to know about a request beyond its events.
pub struct Recorder {
    ledger: Arc<Ledger>,
    endpoint: &'static str,
    key_hash: Option<String>,
    quantization: String,
    device: String,
    energy_method: &'static str,
    meters: Vec<Arc<Meter>>,
    cloud_prompt: Option<PromptText>,
    recorded: bool,
    /// The name the client asked for, when it is not the served model's.
    pub asked_model: Option<String>,
}

impl Recorder {
    pub fn new(ledger: Arc<Ledger>, endpoint: &'static str, headers: &HeaderMap, info: &ModelInfo) -> Self {
        Recorder {
            ledger,
            endpoint,
            key_hash: key_hash(headers),
            quantization: info.quantization.clone(),
            device: info.device.clone(),
            energy_method: info.energy_method.as_str(),
            meters: Vec::new(),
            cloud_prompt: None,
            recorded: false,
            asked_model: None,
        }
    }

    pub fn attach(&mut self, meters: Vec<Arc<Meter>>, cloud_prompt: PromptText) {
        self.meters = meters;
        self.cloud_prompt = Some(cloud_prompt);
    }

    /// Records a request refused before it reached the engine (after `took` of validation): no
    /// tokens, no energy.
    pub async fn refused(self, model: &str, took: Duration) {
        let record = Record {
            id: format!("refused-{:016x}", rand::random::<u64>()),
            endpoint: self.endpoint.to_owned(),
            model: model.to_owned(),
            quantization: self.quantization.clone(),
            device: self.device.clone(),
            outcome: Outcome::Error,
            finish_reason: None,
            prompt_tokens: 0,
            cached_tokens: 0,
            generated_tokens: 0,
            queue_ms: 0.0,
            ttft_ms: None,
            total_ms: took.as_secs_f64() * 1e3,
            energy_j: 0.0,
            energy_method: self.energy_method.to_owned(),
            busy_s: 0.0,
            api_key_hash: self.key_hash.clone(),
            tool_calls: 0,
            asked_model: None,
        };
        commit(self.ledger, record, None, String::new()).await;
    }
}

/// Prices and stores `record` off the async runtime; a ledger that cannot write is logged, and
/// the answer goes out all the same.
async fn commit(ledger: Arc<Ledger>, record: Record, prompt: Option<PromptText>, completion: String) -> Option<Cost> {
    let id = record.id.clone();
    match tokio::task::spawn_blocking(move || ledger.record(record, prompt.as_ref(), &completion)).await {
        Ok(Ok(cost)) => Some(cost),
        Ok(Err(e)) => {
            tracing::error!("could not record request {id} in the ledger: {e}");
            None
        }
        Err(e) => {
            tracing::error!("recording request {id} panicked: {e}");
            None
        }
    }
}

/// A short, stable digest of the bearer token, so rows can be grouped by key without storing it.
fn key_hash(headers: &HeaderMap) -> Option<String> {
    let token = headers.get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ")?;
    let digest = Sha256::digest(token.as_bytes());
    Some(digest.iter().take(8).map(|b| format!("{b:02x}")).collect())
}

/// The outcome of a request whose every choice finished with these reasons.
pub fn outcome_of(finishes: impl IntoIterator<Item = Option<FinishReason>>) -> Outcome {
    let mut out = Outcome::Ok;
    for f in finishes {
        match f {
            Some(FinishReason::Stop | FinishReason::StopSequence) => {}
            Some(FinishReason::Length | FinishReason::ContextFull) => out = Outcome::Stopped,
            None => return Outcome::Cancelled,
        }
    }
    out
}

impl Reply {
    /// The ledger record for this request as it stands.
    fn record_of(&self, r: &Recorder, outcome: Outcome) -> Record {
        let u = self.usage();
        let mut reasons: Vec<&str> = self.choices.iter().filter_map(Choice::finish_reason).collect();
        reasons.dedup();
        let queue = self.choices.iter().map(|c| c.queue).max().unwrap_or_default();
        Record {
            id: self.id.clone(),
            endpoint: r.endpoint.to_owned(),
            model: self.served.clone(),
            quantization: r.quantization.clone(),
            device: r.device.clone(),
            outcome,
            finish_reason: (!reasons.is_empty()).then(|| reasons.join(",")),
            prompt_tokens: u.prompt_tokens as u64,
            cached_tokens: u.prompt_tokens_details.cached_tokens as u64,
            generated_tokens: u.completion_tokens as u64,
            queue_ms: queue.as_secs_f64() * 1e3,
            ttft_ms: self.first_token.map(|d| d.as_secs_f64() * 1e3),
            total_ms: self.started.elapsed().as_secs_f64() * 1e3,
            energy_j: r.meters.iter().map(|m| m.joules()).sum(),
            energy_method: r.energy_method.to_owned(),
            busy_s: r.meters.iter().map(|m| m.busy_secs()).sum(),
            api_key_hash: r.key_hash.clone(),
            asked_model: r.asked_model.clone(),
            tool_calls: self.choices.iter().filter_map(|c| c.calls.as_ref()).map(|p| p.calls().len() as u64).sum(),
        }
    }

    /// Everything the choices wrote, re-counted by the cloud tokenizers.
    fn completion(&self) -> String {
        self.choices.iter().map(|c| c.text.as_str()).collect()
    }

    /// Records the request with `outcome` (once) and keeps its cost for the usage and headers.
    /// A ledger that cannot write is logged; the answer still goes out.
    pub async fn record(&mut self, outcome: Outcome) {
        let Some(r) = self.recorder.as_mut().filter(|r| !r.recorded) else { return };
        r.recorded = true;
        let r = self.recorder.as_ref().expect("checked above");
        let (ledger, record, prompt) = (r.ledger.clone(), self.record_of(r, outcome), r.cloud_prompt.clone());
        self.cost = commit(ledger, record, prompt, self.completion()).await;
    }

    /// The outcome the choices' finish reasons add up to.
    pub fn outcome(&self) -> Outcome {
        outcome_of(self.choices.iter().map(|c| c.finish))
    }
}

impl Drop for Reply {
    /// A reply dropped before it was recorded belongs to a client that left.
    fn drop(&mut self) {
        let Some(r) = self.recorder.as_ref().filter(|r| !r.recorded) else { return };
        let (ledger, record, prompt, completion) = (r.ledger.clone(), self.record_of(r, Outcome::Cancelled), r.cloud_prompt.clone(), self.completion());
        // Not on the async runtime, which may itself be stopping: Ledger::flush waits for it.
        ledger.record_detached(record, prompt, completion);
    }
}
