//! Deterministic tests of the core with virtual time (see below).
