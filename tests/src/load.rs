//! A steady stream of requests from several concurrent callers, counting who answered and what
//! failed, for end-to-end tests and the quickstart.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinSet;

/// A failed request: the error text, and the backend when the client knows which one failed.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The backend the request went to, when known.
    pub backend: Option<SocketAddr>,
    /// What went wrong.
    pub message: String,
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure {
            backend: None,
            message,
        }
    }
}

/// What the callers saw.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// Successful requests per backend.
    pub answers: BTreeMap<SocketAddr, u64>,
    /// Failed requests, with the error text of each (at most 50 kept).
    pub failures: Vec<String>,
    /// Number of failed requests.
    pub failed: u64,
    /// Failed requests per backend, for those whose backend is known.
    pub errors: BTreeMap<SocketAddr, u64>,
    /// Latencies of successful requests, per backend.
    pub latencies: BTreeMap<SocketAddr, Vec<Duration>>,
}

impl Tally {
    /// Successful requests.
    pub fn succeeded(&self) -> u64 {
        self.answers.values().sum()
    }

    /// The share of successful requests `backend` answered.
    pub fn share(&self, backend: SocketAddr) -> f64 {
        let total = self.succeeded();
        if total == 0 {
            return 0.0;
        }
        self.answers.get(&backend).copied().unwrap_or(0) as f64 / total as f64
    }
}

/// Callers running until [`Load::stop`].
pub struct Load {
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<Tally>>,
    sent: Arc<AtomicU64>,
    tasks: JoinSet<()>,
}

impl Load {
    /// Starts `callers` tasks, each calling `call` in a loop (with `pause` between calls). A
    /// call returns the address of the backend that answered, or an error text.
    pub fn start<F, Fut, E>(callers: usize, pause: Duration, call: F) -> Load
    where
        F: Fn() -> Fut + Clone + Send + 'static,
        Fut: Future<Output = Result<SocketAddr, E>> + Send + 'static,
        E: Into<Failure> + Send,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Mutex::new(Tally::default()));
        let sent = Arc::new(AtomicU64::new(0));
        let mut tasks = JoinSet::new();
        for _ in 0..callers {
            let (stop, tally, sent, call) = (
                Arc::clone(&stop),
                Arc::clone(&tally),
                Arc::clone(&sent),
                call.clone(),
            );
            tasks.spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let started = tokio::time::Instant::now();
                    let result = call().await;
                    let latency = started.elapsed();
                    sent.fetch_add(1, Ordering::Relaxed);
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
        Load {
            stop,
            tally,
            sent,
            tasks,
        }
    }

    /// Requests completed so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// A copy of the tally so far.
    pub fn tally(&self) -> Tally {
        self.tally
            .lock()
            .expect("no caller panics while holding it")
            .clone()
    }

    /// Takes the tally so far and starts a fresh one.
    pub fn take(&self) -> Tally {
        std::mem::take(
            &mut *self
                .tally
                .lock()
                .expect("no caller panics while holding it"),
        )
    }

    /// Waits until at least `n` more requests completed.
    pub async fn wait_for(&self, n: u64) {
        let target = self.sent() + n;
        while self.sent() < target {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Stops the callers, waits for their last requests, and returns the tally.
    pub async fn stop(mut self) -> Tally {
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
