//! What the benchmark clients share: figures from `/proc` and percentiles.

pub mod measure;
