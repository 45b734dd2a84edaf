//! Running a router as a Lambda function. Like `lambda_http::run`, plus a clear error for
//! events of a shape Kelp does not serve (lambda_http's own is a serde message about an
//! untagged enum).

use axum::Router;
use lambda_http::request::LambdaRequest;
use lambda_http::{service_fn, tower::Service, Adapter, LambdaEvent, StreamAdapter};
use serde_json::Value;

/// The event sources the functions accept.
pub const ACCEPTED_SOURCES: &str =
    "API Gateway HTTP API (payload format 2.0), API Gateway REST API (1.0), Application Load Balancer and Lambda Function URL events";

/// An event of another source (S3, SQS, a hand-written test event...).
#[derive(Debug, thiserror::Error)]
#[error("unsupported event: Kelp's {function} function accepts {ACCEPTED_SOURCES}; this event (top-level keys: {keys}) is none of them")]
pub struct UnsupportedEvent {
    function: &'static str,
    keys: String,
}

fn parse(function: &'static str, payload: Value) -> Result<LambdaRequest, UnsupportedEvent> {
    let keys = payload
        .as_object()
        .map(|o| o.keys().cloned().collect::<Vec<_>>().join(", "))
        .unwrap_or_else(|| "not an object".into());
    // lambda_http is built without its pass-through mode, so any other shape fails here.
    serde_json::from_value::<LambdaRequest>(payload).map_err(|_| UnsupportedEvent { function, keys })
}

/// Serve `app` as a buffered Lambda function (gateway, admin API).
pub async fn run(function: &'static str, app: Router) -> Result<(), lambda_http::Error> {
    lambda_http::lambda_runtime::run(checked(function, Adapter::from(app))).await
}

/// Serve `app` with Lambda response streaming (the debug relay behind a Function URL with
/// `InvokeMode: RESPONSE_STREAM`).
pub async fn run_streaming(function: &'static str, app: Router) -> Result<(), lambda_http::Error> {
    lambda_http::lambda_runtime::run(checked(function, StreamAdapter::from(app))).await
}

/// `adapter` (buffered or streaming) behind the event-shape check: an event of another
/// source is refused with [`UnsupportedEvent`] before it reaches the router.
fn checked<A>(
    function: &'static str,
    adapter: A,
) -> impl Service<
    LambdaEvent<Value>,
    Response = A::Response,
    Error = lambda_http::Error,
    Future = impl std::future::Future<Output = Result<A::Response, lambda_http::Error>>,
>
where
    A: Service<LambdaEvent<LambdaRequest>, Error = std::convert::Infallible> + Clone,
{
    service_fn(move |event: LambdaEvent<Value>| {
        let mut adapter = adapter.clone();
        async move {
            let request = parse(function, event.payload)?;
            adapter.call(LambdaEvent::new(request, event.context)).await.map_err(|e| match e {})
        }
    })
}
