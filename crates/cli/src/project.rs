//! A Mayfly project on disk and its opening live in the host crate
//! (`mayfly_host::project`); the commands reach them here.

pub use mayfly_host::project::*;
