//! Conformance tests every backend passes.
