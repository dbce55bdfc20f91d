//! Keeping a copy of a call's message while it is sent, for the case where the server refuses
//! the stream unprocessed (a GOAWAY's last stream id below it) after hyper consumed the body.
//!
//! [`read_ready`] first reads what the body has ready without waiting: a unary call's message
//! is all there, so it is kept whole ([`Ready::Whole`]) and every send gets it, whenever the
//! server refuses the stream (even before hyper read the body to its end). Otherwise
//! [`Recording`] passes the body through and keeps each data frame (a reference-counted
//! `Bytes`, not a copy of the bytes) up to [`MAX_BUFFERED_MESSAGE`]; once the body has ended,
//! [`Recorded::replay`] gives the same message again. A body that is longer, carries trailers or
//! has not ended (a streaming call still sending) cannot be replayed, and its call fails as
//! before.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

use crate::tonic::MAX_BUFFERED_MESSAGE;

/// A body read as far as it was ready.
pub(crate) enum Ready<B: Body> {
    /// The whole message (data only, within [`MAX_BUFFERED_MESSAGE`]): it can be sent as often
    /// as needed.
    Whole(Bytes),
    /// Not all there (a streaming call), too long, or with trailers: the frames read so far,
    /// then the rest of the body.
    Partial(Prefixed<B>),
}

/// Reads the frames `body` has ready now, without waiting (a body that is not ready is polled
/// again, with the real waker, by whoever sends it).
pub(crate) fn read_ready<B>(mut body: B) -> Ready<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    let mut context = Context::from_waker(std::task::Waker::noop());
    let mut frames = VecDeque::new();
    let mut len = 0usize;
    let mut data_only = true;
    loop {
        if !data_only || len > MAX_BUFFERED_MESSAGE {
            break;
        }
        match Pin::new(&mut body).poll_frame(&mut context) {
            Poll::Ready(None) => {
                // Data frames only, so far: the message is their concatenation.
                let mut chunks: Vec<Bytes> = frames
                    .into_iter()
                    .filter_map(|frame: Result<Frame<Bytes>, B::Error>| {
                        frame.ok().and_then(|frame| frame.into_data().ok())
                    })
                    .collect();
                let whole = match chunks.len() {
                    0 => Bytes::new(),
                    1 => chunks.swap_remove(0),
                    _ => Bytes::from(chunks.concat()),
                };
                return Ready::Whole(whole);
            }
            Poll::Ready(Some(Ok(frame))) => {
                match frame.data_ref() {
                    Some(data) => len = len.saturating_add(data.len()),
                    None => data_only = false,
                }
                frames.push_back(Ok(frame));
            }
            Poll::Ready(Some(Err(error))) => {
                frames.push_back(Err(error));
                data_only = false;
            }
            Poll::Pending => break,
        }
    }
    Ready::Partial(Prefixed {
        frames,
        inner: body,
    })
}

/// The frames read ahead, then the rest of the body.
pub(crate) struct Prefixed<B: Body> {
    frames: VecDeque<Result<Frame<Bytes>, B::Error>>,
    inner: B,
}

// Nothing in it is pinned: the read-ahead frames are moved out, the body is `Unpin`.
impl<B: Body + Unpin> Unpin for Prefixed<B> {}

impl<B> Body for Prefixed<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        match this.frames.pop_front() {
            Some(frame) => Poll::Ready(Some(frame)),
            None => Pin::new(&mut this.inner).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let ahead: u64 = self
            .frames
            .iter()
            .filter_map(|frame| frame.as_ref().ok().and_then(Frame::data_ref))
            .map(|data| data.len() as u64)
            .sum();
        let rest = self.inner.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower().saturating_add(ahead));
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper.saturating_add(ahead));
        }
        hint
    }
}

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

    /// A body that yields its ready frames, then what is sent on its channel.
    struct Streaming {
        ready: VecDeque<Bytes>,
        rest: tokio::sync::mpsc::Receiver<Bytes>,
    }

    impl Body for Streaming {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            let this = self.get_mut();
            if let Some(frame) = this.ready.pop_front() {
                return Poll::Ready(Some(Ok(Frame::data(frame))));
            }
            this.rest
                .poll_recv(cx)
                .map(|frame| frame.map(|frame| Ok(Frame::data(frame))))
        }
    }

    fn streaming(frames: Vec<&'static [u8]>) -> (Streaming, tokio::sync::mpsc::Sender<Bytes>) {
        let (sender, rest) = tokio::sync::mpsc::channel(4);
        let ready = frames.into_iter().map(Bytes::from_static).collect();
        (Streaming { ready, rest }, sender)
    }

    #[tokio::test]
    async fn a_message_that_is_all_there_is_kept_whole() {
        let body = http_body_util::Full::new(Bytes::from_static(b"hello"));
        assert!(matches!(read_ready(body), Ready::Whole(message) if message == "hello"));
        let empty = http_body_util::Empty::<Bytes>::new();
        assert!(matches!(read_ready(empty), Ready::Whole(message) if message.is_empty()));
        let (body, sender) = streaming(vec![b"a", b"b"]);
        drop(sender);
        assert!(matches!(read_ready(body), Ready::Whole(message) if message == "ab"));
    }

    #[tokio::test]
    async fn a_body_still_sending_is_passed_on_whole_from_where_it_was_read() {
        let (body, sender) = streaming(vec![b"a", b"b"]);
        let Ready::Partial(body) = read_ready(body) else {
            panic!("the body is not all there");
        };
        assert_eq!(body.size_hint().lower(), 2, "the frames read ahead count");
        assert!(!body.is_end_stream());
        let rest = tokio::spawn(async move {
            sender.send(Bytes::from_static(b"c")).await.unwrap();
        });
        let sent = body.collect().await.unwrap().to_bytes();
        rest.await.unwrap();
        assert_eq!(sent, "abc");
    }

    #[tokio::test]
    async fn a_message_longer_than_can_be_buffered_is_not_kept() {
        let long = Bytes::from(vec![7u8; MAX_BUFFERED_MESSAGE + 1]);
        let body = http_body_util::Full::new(long.clone());
        let Ready::Partial(body) = read_ready(body) else {
            panic!("too long to keep");
        };
        assert_eq!(body.collect().await.unwrap().to_bytes(), long);
    }
}
