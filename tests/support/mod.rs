//! Helpers shared by the integration tests.

pub mod fake_llm;
pub mod fake_zoho;
pub mod intake;
pub mod process;
pub mod redis;
pub mod review;
pub mod tools;
