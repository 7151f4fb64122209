//! Copying the primary's existing dataset to the backup through the log,
//! while clients keep writing (`remoteback sync`).

mod rebuild;
mod stream;

#[cfg(test)]
mod live_tests;
