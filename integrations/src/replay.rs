//! Keeping a copy of a call's message while it is sent, for the case where the server refuses
//! the stream unprocessed (a GOAWAY's last stream id below it) after hyper consumed the body.
//!
//! [`Recording`] passes the body through and keeps each data frame (a reference-counted
//! `Bytes`, not a copy of the bytes) up to [`MAX_BUFFERED_MESSAGE`]; once the body has ended,
//! [`Recorded::replay`] gives the same message again. A body that is longer, carries trailers or
//! has not ended (a streaming call still sending) cannot be replayed, and its call fails as
//! before.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

use crate::tonic::MAX_BUFFERED_MESSAGE;

#[derive(Debug, Default)]
struct Record {
    chunks: Vec<Bytes>,
    len: usize,
    ended: bool,
    /// Too long, or trailers: not replayable.
    given_up: bool,
}

/// The shared record of a body being sent.
#[derive(Debug, Clone, Default)]
pub(crate) struct Recorded {
    record: Arc<Mutex<Record>>,
}

impl Recorded {
    /// Wraps `body` so that its frames are recorded here.
    pub(crate) fn wrap<B>(&self, body: B) -> Recording<B> {
        Recording {
            inner: body,
            record: Arc::clone(&self.record),
        }
    }

    /// The whole message again, when the body ended and was recorded in full.
    pub(crate) fn replay(&self) -> Option<http_body_util::Full<Bytes>> {
        let record = self.record.lock().ok()?;
        if !record.ended || record.given_up {
            return None;
        }
        let message = match record.chunks.as_slice() {
            [] => Bytes::new(),
            [one] => one.clone(),
            many => Bytes::from(many.concat()),
        };
        Some(http_body_util::Full::new(message))
    }
}

/// A body that records what it yields; see the [module docs](self).
#[derive(Debug)]
pub(crate) struct Recording<B> {
    inner: B,
    record: Arc<Mutex<Record>>,
}

impl<B> Body for Recording<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Ok(mut record) = self.record.lock() {
            match &polled {
                Poll::Ready(Some(Ok(frame))) => {
                    match frame.data_ref() {
                        Some(data) if !record.given_up => {
                            record.len = record.len.saturating_add(data.len());
                            if record.len > MAX_BUFFERED_MESSAGE {
                                record.given_up = true;
                                record.chunks = Vec::new();
                            } else {
                                record.chunks.push(data.clone());
                            }
                        }
                        Some(_) => {}
                        None => record.given_up = true,
                    }
                    // hyper ends the stream on this frame without polling again when it can.
                    if self.inner.is_end_stream() {
                        record.ended = true;
                    }
                }
                Poll::Ready(Some(Err(_))) => record.given_up = true,
                Poll::Ready(None) => record.ended = true,
                Poll::Pending => {}
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn a_recorded_body_replays_the_same_message() {
        let recorded = Recorded::default();
        assert!(recorded.replay().is_none(), "nothing ended yet");
        let body = recorded.wrap(http_body_util::Full::new(Bytes::from_static(b"hello")));
        let sent = body.collect().await.unwrap().to_bytes();
        assert_eq!(sent, "hello");
        let again = recorded
            .replay()
            .unwrap()
            .collect()
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(again, "hello");
    }

    #[tokio::test]
    async fn a_body_that_did_not_end_is_not_replayed() {
        let recorded = Recorded::default();
        let body = recorded.wrap(http_body_util::Full::new(Bytes::from_static(b"hello")));
        drop(body);
        assert!(recorded.replay().is_none());
    }
}
