//! The subscriber domain of `newsletter`: value types parsed from outside input, the commands and
//! events of a subscriber's lifecycle, and the pure decider that holds every rule.
//!
//! Nothing here does I/O, reads a clock or draws random numbers: callers pass time and ids in.

pub mod codec;
pub mod decider;

pub use codec::{DecodeError, EventCodec};
pub use decider::Decider;
