//! Where consistent hashing finds a request's key.
//!
//! A [`HashKey`] turns a request into an optional 64-bit key. Requests without a key are placed
//! at random by the hashing policies (and the key is ignored by the others).
//!
//! - [`NoHashKey`] (the default): no key.
//! - [`HeaderKey`]: the value of an HTTP header (say `x-user-id`), hashed with xxHash64.
//! - [`ExtensionKey`]: a [`RequestHashKey`] the caller put in the request's extensions.
//! - [`KeyFn`]: any function of the request.
//!
//! ```
//! use waypost_balance::{HashKey, HeaderKey, RequestHashKey, ExtensionKey, hash_key_bytes};
//!
//! let request = http::Request::builder().header("x-user-id", "42").body(()).unwrap();
//! assert_eq!(HeaderKey::new("x-user-id").hash_key(&request), Some(hash_key_bytes(b"42")));
//!
//! let mut request = http::Request::new(());
//! request.extensions_mut().insert(RequestHashKey(7));
//! assert_eq!(ExtensionKey.hash_key(&request), Some(7));
//! ```

use xxhash_rust::xxh64::xxh64;

/// Extracts a request's hash key.
pub trait HashKey<Request>: Clone + Send + Sync + 'static {
    /// The key, or `None` for "anywhere".
    fn hash_key(&self, request: &Request) -> Option<u64>;
}

/// The stable 64-bit hash of key bytes used by the provided extractors (xxHash64, seed 0). Use
/// it in your own [`HashKey`] to place requests the same way.
pub fn hash_key_bytes(bytes: &[u8]) -> u64 {
    xxh64(bytes, 0)
}

/// No request carries a key.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoHashKey;

impl<Request> HashKey<Request> for NoHashKey {
    #[inline]
    fn hash_key(&self, _: &Request) -> Option<u64> {
        None
    }
}

/// The hash of an HTTP header's value.
#[derive(Debug, Clone)]
pub struct HeaderKey {
    name: http::HeaderName,
}

impl HeaderKey {
    /// Hash the value of the header `name`.
    ///
    /// # Panics
    ///
    /// When `name` is not a valid header name; use [`HeaderKey::from_name`] for names read at
    /// run time.
    pub fn new(name: &'static str) -> Self {
        HeaderKey {
            name: http::HeaderName::from_static(name),
        }
    }

    /// Hash the value of the header `name`.
    pub fn from_name(name: http::HeaderName) -> Self {
        HeaderKey { name }
    }
}

impl<B> HashKey<http::Request<B>> for HeaderKey {
    fn hash_key(&self, request: &http::Request<B>) -> Option<u64> {
        request
            .headers()
            .get(&self.name)
            .map(|value| hash_key_bytes(value.as_bytes()))
    }
}

/// A key set by the caller in the request's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestHashKey(pub u64);

/// Reads a [`RequestHashKey`] from the request's extensions.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExtensionKey;

impl<B> HashKey<http::Request<B>> for ExtensionKey {
    fn hash_key(&self, request: &http::Request<B>) -> Option<u64> {
        request
            .extensions()
            .get::<RequestHashKey>()
            .map(|key| key.0)
    }
}

/// A key computed by a function of the request.
#[derive(Clone)]
pub struct KeyFn<F>(pub F);

impl<F> std::fmt::Debug for KeyFn<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyFn(..)")
    }
}

impl<F, Request> HashKey<Request> for KeyFn<F>
where
    F: Fn(&Request) -> Option<u64> + Clone + Send + Sync + 'static,
{
    fn hash_key(&self, request: &Request) -> Option<u64> {
        (self.0)(request)
    }
}
