//! Plain HTTP requests on the gRPC port get an answer that says where they went wrong,
//! instead of a closed connection: people point curl or a browser at port 9095.

use std::task::{Context, Poll};

use futures::future::{Either, Ready, ready};
use http::{Request, Response, StatusCode, header};
use tonic::body::Body;
use tower::{Layer, Service};

const HINT: &str = "This is a Tributary broker's gRPC port: use the `tributary` CLI, the Rust \
client, or another gRPC client. Health and metrics are served over plain HTTP on the \
broker's --http-listen address (default port 8080): /healthz, /readyz, /metrics.\n";

#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcOnlyLayer;

impl<S> Layer<S> for GrpcOnlyLayer {
    type Service = GrpcOnly<S>;

    fn layer(&self, inner: S) -> GrpcOnly<S> {
        GrpcOnly { inner }
    }
}

#[derive(Debug, Clone)]
pub struct GrpcOnly<S> {
    inner: S,
}

impl<S> Service<Request<Body>> for GrpcOnly<S>
where
    S: Service<Request<Body>, Response = Response<Body>>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Either<S::Future, Ready<Result<Response<Body>, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let grpc = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/grpc"));
        if grpc {
            return Either::Left(self.inner.call(request));
        }
        let mut response = Response::new(Body::new(http_body_util::Full::new(
            bytes::Bytes::from_static(HINT.as_bytes()),
        )));
        *response.status_mut() = StatusCode::BAD_REQUEST;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        Either::Right(ready(Ok(response)))
    }
}
