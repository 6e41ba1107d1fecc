//! How every cluster's client is built: rate limited (`--kube-api-qps`,
//! `--kube-api-burst`) and counted (`kilo_clustermesh_kube_requests_total`),
//! so that what the operator costs each API server is visible.

use std::task::{Context, Poll};

use prometheus_client::metrics::{counter::Counter, family::Family};
use tower::{Layer, Service};

use crate::{
    metrics::RequestLabels,
    rate_limit::{Limits, RateLimitLayer},
};

/// A client for `config` whose requests are rate limited by `limits` and
/// counted in `requests` under the label `client`.
pub fn build(
    config: kube::Config,
    limits: Limits,
    requests: &Family<RequestLabels, Counter>,
    client: &str,
) -> Result<kube::Client, kube::Error> {
    let counting = CountLayer {
        requests: requests.clone(),
        client: client.to_owned(),
    };
    let builder = kube::client::ClientBuilder::try_from(config)?;
    Ok(builder
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
