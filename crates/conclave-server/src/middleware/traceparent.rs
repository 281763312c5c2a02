//! W3C Trace Context (`traceparent`): the caller's trace is continued when its header is valid
//! (version `00`, a 32-hex trace id and a 16-hex parent id, neither all zeros, 2-hex flags), a
//! new trace starts otherwise. This server's span gets a fresh id; the response and the model
//! provider request carry `00-<trace id>-<this span>-<flags>`.

use conclave_core::records::hex;
use std::fmt;

use rand::RngCore as _;

pub const TRACEPARENT: &str = "traceparent";

/// One hop of a trace: the trace id, this hop's span id and the flags (`01`: sampled).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub flags: u8,
}

fn hex_bytes<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

impl TraceParent {
    /// A header value, if it is a valid version-00 `traceparent` (lowercase hex, as the
    /// specification requires; all-zero ids are invalid).
    pub fn parse(value: &str) -> Option<TraceParent> {
        let mut parts = value.trim().split('-');
        let (version, trace, parent, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if version != "00" || parts.next().is_some() {
            return None;
        }
        let trace_id = hex_bytes::<16>(trace).filter(|t| t.iter().any(|b| *b != 0))?;
        let span_id = hex_bytes::<8>(parent).filter(|s| s.iter().any(|b| *b != 0))?;
        let [flags] = hex_bytes::<1>(flags)?;
        Some(TraceParent { trace_id, span_id, flags })
    }

    /// A new trace, sampled.
    pub fn new_trace() -> TraceParent {
        let mut trace_id = [0u8; 16];
        while trace_id.iter().all(|b| *b == 0) {
            rand::thread_rng().fill_bytes(&mut trace_id);
        }
        TraceParent { trace_id, span_id: new_span_id(), flags: 1 }
    }

    /// This server's hop in the same trace: same trace id and flags, a new span id.
    pub fn child(&self) -> TraceParent {
        TraceParent { trace_id: self.trace_id, span_id: new_span_id(), flags: self.flags }
    }

    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }
}

fn new_span_id() -> [u8; 8] {
    let mut span_id = [0u8; 8];
    while span_id.iter().all(|b| *b == 0) {
        rand::thread_rng().fill_bytes(&mut span_id);
    }
    span_id
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "00-{}-{}-{:02x}", hex(&self.trace_id), hex(&self.span_id), self.flags)
    }
}

#[cfg(test)]
mod tests {
    use super::TraceParent;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_header_is_read_and_written_back_unchanged() {
        let t = TraceParent::parse(VALID).expect("valid");
        assert_eq!(t.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.flags, 1);
        assert_eq!(t.to_string(), VALID);
    }

    #[test]
    fn invalid_headers_are_refused() {
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-zz",
            "00-4bf92f3577b34da6a3ce929d0e0e47+6-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_child_keeps_the_trace_and_flags_with_a_new_span() {
        let parent = TraceParent::parse(VALID).unwrap();
        let child = parent.child();
        assert_eq!(child.trace_id, parent.trace_id);
        assert_eq!(child.flags, parent.flags);
        assert_ne!(child.span_id, parent.span_id);
        assert_ne!(child.span_id, [0; 8]);
        assert_eq!(TraceParent::parse(&child.to_string()), Some(child));
    }

    #[test]
    fn a_new_trace_is_valid_and_sampled() {
        let t = TraceParent::new_trace();
        assert_eq!(TraceParent::parse(&t.to_string()), Some(t));
        assert_eq!(t.flags, 1);
    }
}
