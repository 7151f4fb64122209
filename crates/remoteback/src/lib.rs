//! The tools of the `remoteback` binary that are also useful as a library:
//! comparing a primary with its backup.

pub mod compare;
