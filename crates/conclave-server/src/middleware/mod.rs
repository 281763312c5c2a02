//! Request-path layers, one a file.

pub mod cors;
pub mod rate_limit;
pub mod request_id;
pub mod security_headers;
