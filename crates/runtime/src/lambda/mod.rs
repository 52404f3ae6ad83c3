//! The lambda runtime: warm instances that poll Mayfly's AWS Lambda Runtime
//! API on their own loopback port.

pub(crate) mod api;
mod instance;

pub(crate) use instance::{LambdaInstance, LambdaRun};
