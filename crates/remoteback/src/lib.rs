//! The tools of the `remoteback` binary that are also useful as a library:
//! comparing a primary with its backup, and the status endpoints
//! (`/metrics`, `/health`) both services serve.

pub mod compare;
pub mod status;
