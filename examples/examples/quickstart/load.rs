//! Concurrent callers that send requests in a loop and count who answered, how fast, and what
//! failed.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinSet;

/// A failed request: the error text, and the backend when the client knows which one failed.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    /// The backend the request went to, when known.
    pub(crate) backend: Option<SocketAddr>,
    /// What went wrong.
    pub(crate) message: String,
}

/// What the callers saw.
#[derive(Debug, Default, Clone)]
pub(crate) struct Tally {
    /// Successful requests per backend.
    pub(crate) answers: BTreeMap<SocketAddr, u64>,
    /// Failed requests, with the error text of each (at most 50 kept).
    pub(crate) failures: Vec<String>,
    /// Number of failed requests.
    pub(crate) failed: u64,
    /// Failed requests per backend, for those whose backend is known.
    pub(crate) errors: BTreeMap<SocketAddr, u64>,
    /// Latencies of successful requests, per backend.
    pub(crate) latencies: BTreeMap<SocketAddr, Vec<Duration>>,
}

impl Tally {
    /// Successful requests.
    pub(crate) fn succeeded(&self) -> u64 {
        self.answers.values().sum()
    }

    /// The share of successful requests `backend` answered.
    pub(crate) fn share(&self, backend: SocketAddr) -> f64 {
        let total = self.succeeded();
        if total == 0 {
            return 0.0;
        }
        self.answers.get(&backend).copied().unwrap_or(0) as f64 / total as f64
    }
}

/// Callers running until [`Load::stop`].
pub(crate) struct Load {
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<Tally>>,
    tasks: JoinSet<()>,
}

impl Load {
    /// Starts `callers` tasks, each calling `call` in a loop (with `pause` between calls). A
    /// call returns the address of the backend that answered, or an error text.
    pub(crate) fn start<F, Fut, E>(callers: usize, pause: Duration, call: F) -> Load
    where
        F: Fn() -> Fut + Clone + Send + 'static,
        Fut: Future<Output = Result<SocketAddr, E>> + Send + 'static,
        E: Into<Failure> + Send,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Mutex::new(Tally::default()));
        let mut tasks = JoinSet::new();
        for _ in 0..callers {
            let (stop, tally, call) = (Arc::clone(&stop), Arc::clone(&tally), call.clone());
            tasks.spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let started = tokio::time::Instant::now();
                    let result = call().await;
                    let latency = started.elapsed();
                    {
                        let mut tally = tally.lock().expect("no caller panics while holding it");
                        match result {
                            Ok(backend) => {
                                *tally.answers.entry(backend).or_default() += 1;
                                tally.latencies.entry(backend).or_default().push(latency);
                            }
                            Err(error) => {
                                let failure: Failure = error.into();
                                tally.failed += 1;
                                if let Some(backend) = failure.backend {
                                    *tally.errors.entry(backend).or_default() += 1;
                                }
                                if tally.failures.len() < 50 {
                                    tally.failures.push(failure.message);
                                }
                            }
                        }
                    }
                    if !pause.is_zero() {
                        tokio::time::sleep(pause).await;
                    }
                }
            });
        }
        Load { stop, tally, tasks }
    }

    /// A copy of the tally so far.
    pub(crate) fn tally(&self) -> Tally {
        self.tally
            .lock()
            .expect("no caller panics while holding it")
            .clone()
    }

    /// Takes the tally so far and starts a fresh one.
    pub(crate) fn take(&self) -> Tally {
        std::mem::take(
            &mut *self
                .tally
                .lock()
                .expect("no caller panics while holding it"),
        )
    }

    /// Stops the callers, waits for their last requests, and returns the tally.
    pub(crate) async fn stop(mut self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        while let Some(result) = self.tasks.join_next().await {
            if let Err(error) = result
                && error.is_panic()
            {
                std::panic::resume_unwind(error.into_panic());
            }
        }
        self.tally()
    }
}
