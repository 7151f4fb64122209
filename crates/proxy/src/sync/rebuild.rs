//! Rebuilding one key on the backup from typed commands read in chunks.
