//! Tests of the merge module as a whole: unit tests per rule and property
//! tests.

mod files;
mod patch;
mod props;
mod strategies;
mod value;
mod yaml;
