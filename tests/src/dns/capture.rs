//! A `tracing` subscriber that records events, so a test can check what a source logged.
//!
//! Install it for the current thread with [`Capture::install`]; a current-thread tokio runtime
//! runs every spawned task on that thread, so the source's events land here too.

use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::DefaultGuard;
use tracing::{Event, Level, Metadata, Subscriber};

/// One recorded event.
#[derive(Debug, Clone)]
pub struct CapturedEvent {
    /// Its level.
    pub level: Level,
    /// Its `tracing` target.
    pub target: String,
    /// The message and every field, as `message field=value ...`.
    pub text: String,
}

/// A recording subscriber; clones share the record.
#[derive(Debug, Clone, Default)]
pub struct Capture {
    events: Arc<Mutex<Vec<CapturedEvent>>>,
    next_span: Arc<AtomicU64>,
}

impl Capture {
    /// A new, empty recorder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes this the current thread's default subscriber until the guard is dropped.
    pub fn install(&self) -> DefaultGuard {
        tracing::subscriber::set_default(self.clone())
    }

    /// The events recorded so far.
    pub fn events(&self) -> Vec<CapturedEvent> {
        self.events
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The events at `level` whose text contains `needle`.
    pub fn matching(&self, level: Level, needle: &str) -> Vec<CapturedEvent> {
        self.events()
            .into_iter()
            .filter(|event| event.level == level && event.text.contains(needle))
            .collect()
    }
}

struct Text(String);

impl Visit for Text {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?} ");
        } else {
            let _ = write!(self.0, "{}={value:?} ", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value} ");
        } else {
            let _ = write!(self.0, "{}={value} ", field.name());
        }
    }
}

impl Subscriber for Capture {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.target().starts_with("waypost")
    }

    fn new_span(&self, _span: &Attributes<'_>) -> Id {
        Id::from_u64(self.next_span.fetch_add(1, Ordering::Relaxed) + 1)
    }

    fn record(&self, _span: &Id, _values: &Record<'_>) {}

    fn record_follows_from(&self, _span: &Id, _follows: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut text = Text(String::new());
        event.record(&mut text);
        let captured = CapturedEvent {
            level: *event.metadata().level(),
            target: event.metadata().target().to_owned(),
            text: text.0.trim_end().to_owned(),
        };
        self.events
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(captured);
    }

    fn enter(&self, _span: &Id) {}

    fn exit(&self, _span: &Id) {}
}
