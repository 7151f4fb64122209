//! The tools of the `remoteback` binary that are also useful as a library:
//! comparing a primary with its backup (`compare`, the test suite's
//! comparator) and verifying one (`verify`, the operator's command).

pub mod compare;
pub mod verify;
