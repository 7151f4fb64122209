//! The tools of the `remoteback` binary that are also useful as a library:
//! comparing a primary with its backup, and the proxy's admin API.

pub mod admin;
pub mod compare;
