//! The W3C `traceparent` of the request being served, carried to the work it starts (a reply
//! generated in the background, a gateway call) so outgoing provider requests continue the
//! caller's trace. Set by the HTTP layer; read by the model provider clients.

use std::future::Future;

tokio::task_local! {
    static TRACEPARENT: String;
}

/// Runs `fut` with `traceparent` as the current trace context.
pub fn scope<F: Future>(traceparent: String, fut: F) -> impl Future<Output = F::Output> {
    TRACEPARENT.scope(traceparent, fut)
}

/// The current `traceparent` header value, if a request set one.
pub fn current() -> Option<String> {
    TRACEPARENT.try_with(Clone::clone).ok()
}

/// `fut` with the caller's trace context and log span (its lines keep naming the request and
/// the trace), for a task spawned while serving a request. No bigger than `fut` and its span
/// (no `async` block that would hold `fut` twice): thousands of replies wait in these at once.
pub fn carried<F: Future>(fut: F) -> impl Future<Output = F::Output> {
    use futures::future::Either;
    let fut = tracing::Instrument::instrument(fut, tracing::Span::current());
    match current() {
        Some(t) => Either::Left(TRACEPARENT.scope(t, fut)),
        None => Either::Right(fut),
    }
}
