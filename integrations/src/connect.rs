//! Opening a connection to one endpoint: TCP, then TLS when configured.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::error::{Error, ErrorKind};

/// A connected byte stream: TCP or TLS over TCP.
pub(crate) trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// Opens connections to endpoints.
#[derive(Clone)]
pub(crate) struct Connector {
    pub(crate) timeout: Duration,
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<crate::tls::TlsConnector>,
}

impl Connector {
    /// `true` when connections use TLS (the scheme is `https`).
    pub(crate) fn is_tls(&self) -> bool {
        #[cfg(feature = "tls")]
        {
            self.tls.is_some()
        }
        #[cfg(not(feature = "tls"))]
        {
            false
        }
    }

    /// Connects to `address` within the connect timeout.
    pub(crate) async fn connect(&self, address: SocketAddr) -> Result<Box<dyn Stream>, Error> {
        let tcp = tokio::time::timeout(self.timeout, TcpStream::connect(address))
            .await
            .map_err(|_| {
                Error::new(
                    ErrorKind::Unreachable,
                    format!("connecting timed out after {:?}", self.timeout),
                )
                .with_endpoint(address)
            })?
            .map_err(|error| {
                Error::new(ErrorKind::Unreachable, "could not connect")
                    .with_endpoint(address)
                    .with_source(error)
            })?;
        let _ = tcp.set_nodelay(true);
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            let stream = tokio::time::timeout(self.timeout, tls.connect(address, tcp))
                .await
                .map_err(|_| {
                    Error::new(ErrorKind::Tls, "the TLS handshake timed out").with_endpoint(address)
                })??;
            return Ok(Box::new(stream));
        }
        Ok(Box::new(tcp))
    }
}

/// Points `request` at an endpoint: its scheme and authority replace the URI's, the path and
/// query stay the caller's (`/` when there is none).
pub(crate) fn aim<B>(
    request: &mut http::Request<B>,
    scheme: &http::uri::Scheme,
    authority: &http::uri::Authority,
    endpoint: SocketAddr,
) -> Result<(), Error> {
    let mut parts = std::mem::take(request.uri_mut()).into_parts();
    parts.scheme = Some(scheme.clone());
    parts.authority = Some(authority.clone());
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    *request.uri_mut() = http::Uri::from_parts(parts).map_err(|error| {
        Error::new(ErrorKind::Transport, "the request URI is invalid")
            .with_endpoint(endpoint)
            .with_source(error)
    })?;
    Ok(())
}

/// `true` when `error` says the server refused the request before processing it: the stream was
/// above the last stream id of the server's graceful GOAWAY (`NO_ERROR`; RFC 9113 section 6.8),
/// or the server reset it with `REFUSED_STREAM` (section 8.7). Such a request may be sent to
/// another endpoint even if it is not idempotent.
pub(crate) fn refused_by_server(error: &(dyn std::error::Error + 'static)) -> bool {
    remote_h2(error).is_some_and(|h2| {
        (h2.is_go_away() && h2.reason() == Some(h2::Reason::NO_ERROR))
            || (h2.is_reset() && h2.reason() == Some(h2::Reason::REFUSED_STREAM))
    })
}

/// `true` when `error` comes from the server's GOAWAY: its connection takes no new streams. A
/// `REFUSED_STREAM` reset alone leaves the connection as it was.
#[cfg(feature = "tonic")]
pub(crate) fn going_away(error: &(dyn std::error::Error + 'static)) -> bool {
    remote_h2(error).is_some_and(h2::Error::is_go_away)
}

/// The HTTP/2 error the server sent, in `error`'s chain.
fn remote_h2<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a h2::Error> {
    let mut source = Some(error);
    while let Some(cause) = source {
        if let Some(h2) = cause.downcast_ref::<h2::Error>() {
            return h2.is_remote().then_some(h2);
        }
        source = cause.source();
    }
    None
}
