//! Request-path layers, one a file.

pub mod cors;
pub mod ip_allowlist;
pub mod rate_limit;
pub mod request_id;
pub mod security_headers;
