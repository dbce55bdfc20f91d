//! Stopping a source on request.
//!
//! A source's task runs while anyone reads its results (an [`Endpoints`](crate::Endpoints)
//! handle or a [`Watcher`](crate::Watcher) exists). A program that shuts down in order, or
//! replaces a target, stops it explicitly with the [`SourceHandle`] its `start` method returned:
//! [`SourceHandle::shutdown`] asks the task to end and waits until it has. Readers keep the last
//! set; watchers end with a [`Closed`](crate::DiscoveryErrorKind::Closed) error after it.
//! Dropping the handle does not stop the source.

use std::fmt;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::endpoints::StopSignal;

/// Stops one source's task: returned with its [`Endpoints`](crate::Endpoints) by the sources'
/// `start` methods.
pub struct SourceHandle {
    task: Option<(StopSignal, Ending)>,
}

/// What ends when the source has stopped.
enum Ending {
    /// The source's own task.
    Task(JoinHandle<()>),
    /// The source's part of a task that serves several sources (a shared Kubernetes watch): the
    /// task drops the sender when it has dropped the source's publisher.
    #[cfg_attr(not(any(feature = "kubernetes", feature = "xds")), allow(dead_code))]
    Part(watch::Receiver<()>),
}

impl SourceHandle {
    /// A handle over `task`, which ends when `stop` is signalled (its publisher's
    /// [`should_stop`](crate::Publisher::should_stop) completes).
    pub fn new(stop: StopSignal, task: JoinHandle<()>) -> Self {
        SourceHandle {
            task: Some((stop, Ending::Task(task))),
        }
    }

    /// A handle over one source of a task that serves several: `ended` closes when the task has
    /// dropped the source's publisher.
    #[cfg(any(feature = "kubernetes", feature = "xds"))]
    pub(crate) fn part(stop: StopSignal, ended: watch::Receiver<()>) -> Self {
        SourceHandle {
            task: Some((stop, Ending::Part(ended))),
        }
    }

    /// The handle of a source without a task (an IP literal, a fixed list): already closed.
    pub fn finished() -> Self {
        SourceHandle { task: None }
    }

    /// Asks the source to stop and waits until its task has ended (and dropped its publisher,
    /// so watchers see the source closed). A task that panicked counts as ended.
    pub async fn shutdown(mut self) {
        if let Some((stop, ending)) = self.task.take() {
            stop.stop();
            match ending {
                Ending::Task(task) => {
                    let _ = task.await;
                }
                Ending::Part(mut ended) => {
                    // Never sent to: completes when the sender is dropped.
                    let _ = ended.changed().await;
                }
            }
        }
    }

    /// `true` when the task has ended (or there is none).
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(|(_, ending)| match ending {
            Ending::Task(task) => task.is_finished(),
            Ending::Part(ended) => ended.has_changed().is_err(),
        })
    }
}

impl fmt::Debug for SourceHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceHandle")
            .field("finished", &self.is_finished())
            .finish()
    }
}
