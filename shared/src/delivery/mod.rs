//! Delivering events: fan-out, envelopes, signatures, the SSRF-safe HTTP client, attempts and
//! the retry policy.

mod cidr;

pub use cidr::{Cidr, CidrList, canonical};
