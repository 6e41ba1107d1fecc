//! How every cluster's client is built: bounded in time (every request but
//! a watch), rate limited (`--kube-api-qps`, `--kube-api-burst`) and counted
//! (`kilo_clustermesh_kube_requests_total`), so that a hung API server holds
//! up only its own cluster's requests, and what the operator costs each API
//! server is visible.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use prometheus_client::metrics::{counter::Counter, family::Family};
use tower::{Layer, Service};

use crate::{
    metrics::RequestLabels,
    rate_limit::{Limits, RateLimitLayer},
};

/// This replica's name: the pod's name in a cluster, else the host's, else
/// one made from the process id.
pub fn identity() -> String {
    std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| format!("kilo-clustermesh-operator-{}", std::process::id()))
}

/// The User-Agent of every request, as API servers' audit logs show it:
/// the binary, its version and this replica's name.
fn user_agent() -> Option<http::HeaderValue> {
    let agent = format!(
        "kilo-clustermesh-operator/{} ({})",
        env!("CARGO_PKG_VERSION"),
        identity()
    );
    http::HeaderValue::from_str(&agent).ok()
}

/// A client for `config` whose requests are rate limited by `limits` and
/// counted in `requests` under the label `client`.
pub fn build(
    mut config: kube::Config,
    limits: Limits,
    requests: &Family<RequestLabels, Counter>,
    client: &str,
) -> Result<kube::Client, kube::Error> {
    let counting = CountLayer {
        requests: requests.clone(),
        client: client.to_owned(),
    };
    if let Some(agent) = user_agent() {
        config.headers.push((http::header::USER_AGENT, agent));
    }
    let builder = kube::client::ClientBuilder::try_from(config)?;
    // Innermost, so that waiting for the rate limit is not counted.
    Ok(builder
        .with_layer(&TimeoutLayer)
        .with_layer(&RateLimitLayer::new(limits))
        .with_layer(&counting)
        .build())
}

/// The verb of a request as the API server's audit log names it, but
/// without telling `get` from `list`: both are a GET whose path alone does
/// not say which for a custom resource.
fn verb<B>(request: &http::Request<B>) -> &'static str {
    let watching = request
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|pair| pair == "watch=true"));
    match *request.method() {
        http::Method::GET if watching => "watch",
        http::Method::GET => "get",
        http::Method::POST => "create",
        http::Method::PATCH => "patch",
        http::Method::PUT => "update",
        http::Method::DELETE => "delete",
        _ => "other",
    }
}

/// How long a request other than a watch may wait for its answer (the
/// watches' own health is the probe's business, `crate::probe`).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Fails every request but a watch that has no answer within
/// [`REQUEST_TIMEOUT`].
#[derive(Clone, Copy)]
struct TimeoutLayer;

impl<S> Layer<S> for TimeoutLayer {
    type Service = Timed<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Timed { inner }
    }
}

#[derive(Clone)]
struct Timed<S> {
    inner: S,
}

impl<S, B> Service<http::Request<B>> for Timed<S>
where
    S: Service<http::Request<B>>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let watch = verb(&request) == "watch";
        let call = self.inner.call(request);
        Box::pin(async move {
            if watch {
                return call.await.map_err(Into::into);
            }
            match tokio::time::timeout(REQUEST_TIMEOUT, call).await {
                Ok(answer) => answer.map_err(Into::into),
                Err(_) => Err(format!(
                    "the API server did not answer within {} s",
                    REQUEST_TIMEOUT.as_secs()
                )
                .into()),
            }
        })
    }
}

/// Counts every request sent through it.
#[derive(Clone)]
struct CountLayer {
    requests: Family<RequestLabels, Counter>,
    client: String,
}

impl<S> Layer<S> for CountLayer {
    type Service = Counted<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Counted {
            inner,
            layer: self.clone(),
        }
    }
}

struct Counted<S> {
    inner: S,
    layer: CountLayer,
}

impl<S, B> Service<http::Request<B>> for Counted<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let labels = RequestLabels {
            client: self.layer.client.clone(),
            verb: verb(&request),
        };
        self.layer.requests.get_or_create(&labels).inc();
        self.inner.call(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn requests_but_watches_time_out() {
        let hanging = tower::service_fn(|_: http::Request<()>| {
            std::future::pending::<Result<(), std::convert::Infallible>>()
        });
        let mut service = TimeoutLayer.layer(hanging);
        let get = service.call(request(http::Method::GET, "/api/v1/nodes?limit=1"));
        let error = get.await.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(error.contains("did not answer within 10 s"), "{error}");
        let watch = service.call(request(http::Method::GET, "/api/v1/nodes?watch=true"));
        let waited = tokio::time::timeout(REQUEST_TIMEOUT * 3, watch).await;
        assert!(waited.is_err(), "a watch is not cut by the request timeout");
    }

    fn request(method: http::Method, uri: &str) -> http::Request<()> {
        http::Request::builder()
            .method(method)
            .uri(uri)
            .body(())
            .unwrap_or_default()
    }

    #[test]
    fn requests_are_counted_by_client_and_verb() {
        let requests = Family::<RequestLabels, Counter>::default();
        let layer = CountLayer {
            requests: requests.clone(),
            client: "kilo-system/b-kubeconfig".into(),
        };
        let mut service = layer.layer(tower::service_fn(|_: http::Request<()>| async {
            Ok::<_, ()>(())
        }));
        for (method, uri) in [
            (
                http::Method::GET,
                "/api/v1/nodes?watch=true&resourceVersion=1",
            ),
            (http::Method::GET, "/api/v1/nodes?limit=500"),
            (
                http::Method::PATCH,
                "/apis/kilo.squat.ai/v1alpha1/peers/a.n?fieldManager=x",
            ),
            (
                http::Method::PATCH,
                "/apis/kilo.squat.ai/v1alpha1/peers/a.m?fieldManager=x",
            ),
        ] {
            drop(service.call(request(method, uri)));
        }
        let count = |verb| {
            requests
                .get_or_create(&RequestLabels {
                    client: "kilo-system/b-kubeconfig".into(),
                    verb,
                })
                .get()
        };
        assert_eq!((count("watch"), count("get"), count("patch")), (1, 1, 2));
    }
}
