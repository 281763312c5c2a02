//! Request-path layers, one a file.

pub mod access_log;
pub mod client_cert;
pub mod cors;
pub mod ip_allowlist;
pub mod limits;
pub mod rate_limit;
pub mod request_id;
pub mod security_headers;
pub mod traceparent;
