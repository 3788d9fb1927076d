//! The engine: sampling, stopping and generation over a loaded model. (The request queue and
//! batch scheduler of the server build on these.)

pub mod generate;
pub mod sampler;
pub mod stop;

pub use generate::{generate, FinishReason, GenerateParams, Generation};
pub use sampler::{Penalties, Sampler, SamplerConfig, Sampling};
pub use stop::StopStrings;
