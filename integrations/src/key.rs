//! Hash keys for the integrations, chosen at run time (a header name, or a function).

use std::fmt;
use std::sync::Arc;

use waypost_balance::{HashKey, RequestHashKey, hash_key_bytes};

type KeyFunction = dyn Fn(&http::HeaderMap, &http::Extensions) -> Option<u64> + Send + Sync;

/// How an HTTP or gRPC request's hash key is found, for the hashing policies.
#[derive(Clone, Default)]
pub struct RequestKey {
    function: Option<Arc<KeyFunction>>,
}

impl RequestKey {
    /// No key: requests are placed at random by the hashing policies.
    pub fn none() -> Self {
        RequestKey { function: None }
    }

    /// The xxHash64 of a header's value (for gRPC, a metadata entry), or a
    /// [`RequestHashKey`] extension when the request carries one.
    pub fn header(name: http::HeaderName) -> Self {
        RequestKey::function(move |headers, extensions| {
            extensions
                .get::<RequestHashKey>()
                .map(|key| key.0)
                .or_else(|| {
                    headers
                        .get(&name)
                        .map(|value| hash_key_bytes(value.as_bytes()))
                })
        })
    }

    /// A key computed from the request's headers and extensions.
    pub fn function<F>(function: F) -> Self
    where
        F: Fn(&http::HeaderMap, &http::Extensions) -> Option<u64> + Send + Sync + 'static,
    {
        RequestKey {
            function: Some(Arc::new(function)),
        }
    }
}

impl fmt::Debug for RequestKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.function.is_some() {
            "RequestKey(function)"
        } else {
            "RequestKey(none)"
        })
    }
}

impl<B> HashKey<http::Request<B>> for RequestKey {
    #[inline]
    fn hash_key(&self, request: &http::Request<B>) -> Option<u64> {
        match &self.function {
            None => request
                .extensions()
                .get::<RequestHashKey>()
                .map(|key| key.0),
            Some(function) => function(request.headers(), request.extensions()),
        }
    }
}
