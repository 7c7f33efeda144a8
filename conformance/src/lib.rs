//! Conformance suite for IRI runtimes (cases, runner, reports); the `irictl` binary lives in `src/bin/irictl`.
