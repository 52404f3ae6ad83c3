//! One module per group of commands. Each command function takes its parsed
//! arguments, the `--project` override and the output mode, and returns an
//! error with context rather than printing one.

pub mod access_log;
pub mod audit;
pub mod broker;
pub mod demo;
pub mod experiment;
pub mod functions;
pub mod image;
pub mod jobs;
pub mod keys;
pub mod objects;
pub mod prune;
pub mod queues;
pub mod serve;
pub mod spec;
pub mod state;
pub mod tokens;
