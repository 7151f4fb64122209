//! The tools of the `remoteback` binary that are also useful as a library:
//! comparing a primary with its backup (`compare`, the test suite's
//! comparator), verifying one (`verify`, the operator's command), and the
//! proxy's admin API (`admin`).

pub mod admin;
pub mod compare;
pub mod verify;
