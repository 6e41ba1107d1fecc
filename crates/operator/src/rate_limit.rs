//! Client-side request rate limiting (`--kube-api-qps`, `--kube-api-burst`),
//! as client-go's QPS and burst: a token bucket in front of every request a
//! client sends, so a large mesh cannot flood an API server.

use std::{
    future::Future,
    num::NonZeroU32,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tower::{Layer, Service};

/// Requests per second and the burst allowed above it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub qps: NonZeroU32,
    pub burst: NonZeroU32,
}

/// A layer that delays requests beyond `qps` (after a burst of `burst`).
#[derive(Clone)]
pub struct RateLimitLayer {
    limiter: Arc<DefaultDirectRateLimiter>,
}

impl RateLimitLayer {
    pub fn new(limits: Limits) -> Self {
        let quota = Quota::per_second(limits.qps).allow_burst(limits.burst);
        Self {
            limiter: Arc::new(RateLimiter::direct(quota)),
        }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimited<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimited {
            inner,
            limiter: self.limiter.clone(),
        }
    }
}

/// A service whose requests wait for a token of the bucket.
pub struct RateLimited<S> {
    inner: S,
    limiter: Arc<DefaultDirectRateLimiter>,
}

impl<S, R> Service<R> for RateLimited<S>
where
    S: Service<R>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        // The inner future sends nothing until it is polled, so waiting for
        // a token before polling it delays the request itself.
        let response = self.inner.call(request);
        let limiter = self.limiter.clone();
        Box::pin(async move {
            limiter.until_ready().await;
            response.await
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    #[tokio::test]
    async fn requests_beyond_the_burst_wait_for_the_rate() {
        let limits = Limits {
            qps: NonZeroU32::new(20).unwrap(),
            burst: NonZeroU32::new(5).unwrap(),
        };
        let mut service = RateLimitLayer::new(limits)
            .layer(tower::service_fn(|n: u32| async move { Ok::<_, ()>(n) }));
        let started = Instant::now();
        for n in 0..5 {
            assert_eq!(service.call(n).await, Ok(n));
        }
        assert!(
            started.elapsed() < Duration::from_millis(40),
            "the burst passes at once"
        );
        for n in 0..4 {
            service.call(n).await.unwrap();
        }
        // 4 more at 20/s need about 200 ms; allow a slow machine its slack.
        assert!(
            started.elapsed() >= Duration::from_millis(150),
            "{:?}",
            started.elapsed()
        );
    }
}
