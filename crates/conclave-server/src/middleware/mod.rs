//! Request-path layers, one a file.

pub mod request_id;
