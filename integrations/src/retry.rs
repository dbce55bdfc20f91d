//! The retry budget shared by the clients: how many requests that may already have been
//! processed can be sent again.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tower::retry::budget::{Budget, TpsBudget};
use waypost_balance::Pushback;
use waypost_balance::metrics::ClientMetrics;

use crate::error::{Error, ErrorKind};

/// A retry budget for idempotent requests: retries may add at most `retry_percent` of the
/// recent request rate, plus `min_per_second` (tower's `TpsBudget` over a 10 s window).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryBudget {
    /// Extra retries allowed per second regardless of traffic. Default 10.
    pub min_per_second: u32,
    /// Retries allowed as a share of requests. Default 0.2.
    pub retry_percent: f32,
    /// Sends of one request in all: the first, resends of a request that never reached a
    /// server, and retries after it may have been processed. Default 5.
    pub max_attempts: usize,
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget {
            min_per_second: 10,
            retry_percent: 0.2,
            max_attempts: 5,
        }
    }
}

impl RetryBudget {
    /// Checks every field: `retry_percent` from 0 to 1000 (a finite number), `min_per_second`
    /// below `i32::MAX`, `max_attempts` at least 1. The error is a
    /// [`Config`](ErrorKind::Config) error naming the field.
    pub fn validate(&self) -> Result<(), Error> {
        if !(self.retry_percent.is_finite() && (0.0..=1000.0).contains(&self.retry_percent)) {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "`RetryBudget::retry_percent` must be a number from 0 to 1000, not {}",
                    self.retry_percent
                ),
            ));
        }
        if self.min_per_second >= i32::MAX as u32 {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "`RetryBudget::min_per_second` must be below {}, not {}",
                    i32::MAX,
                    self.min_per_second
                ),
            ));
        }
        if self.max_attempts == 0 {
            return Err(Error::new(
                ErrorKind::Config,
                "`RetryBudget::max_attempts` must be at least 1 (the first attempt counts)",
            ));
        }
        Ok(())
    }
}

/// A live budget shared by a client's clones.
#[derive(Clone)]
pub(crate) struct Retries {
    budget: Arc<TpsBudget>,
    pub(crate) max_attempts: usize,
}

impl Retries {
    /// A live budget; the error names the field of `budget` that cannot work.
    pub(crate) fn new(budget: RetryBudget) -> Result<Self, Error> {
        budget.validate()?;
        Ok(Retries {
            budget: Arc::new(TpsBudget::new(
                Duration::from_secs(10),
                budget.min_per_second,
                budget.retry_percent,
            )),
            max_attempts: budget.max_attempts,
        })
    }

    /// Records a request that may be retried.
    pub(crate) fn deposit(&self) {
        self.budget.deposit();
    }
}

/// What one send of a request came back with, as the retry engine sees it.
pub(crate) enum Sent<Request, Response> {
    /// An answer; `refusing` when it is a server refusing work (HTTP 503, a trailers-only
    /// gRPC `UNAVAILABLE`), which an idempotent request may be sent again after, no sooner
    /// than the server's `pushback` (`Retry-After`, `grpc-retry-pushback-ms`) says.
    Answer {
        response: Response,
        refusing: bool,
        pushback: Option<Pushback>,
    },
    /// The request never reached a server (no connection, refused unprocessed by a GOAWAY);
    /// the request itself when the endpoint gave it back.
    NotProcessed {
        request: Option<Request>,
        error: Error,
    },
    /// The request may have been processed.
    Failed(Error),
    /// Nothing to send it to, or another reason to stop now.
    Final(Error),
}

/// How many sends one request may take, and whether it may be sent again after it may have
/// been processed.
#[derive(Clone)]
pub(crate) struct Plan {
    /// Sends in all, the first and every resend (unsent ones included).
    pub(crate) max_sends: usize,
    /// The budget for resends after a send that may have been processed; `None` for requests
    /// that are not idempotent.
    pub(crate) retries: Option<Retries>,
    /// When the request's deadline passes: a retry the server's pushback would put after it is
    /// not made, and the refusing answer is returned instead.
    pub(crate) deadline: Option<Instant>,
    /// Where resends are counted (feature `metrics`).
    pub(crate) metrics: ClientMetrics,
}

impl Plan {
    /// The plan for a request: idempotent ones with a budget may take the budget's
    /// `max_attempts` sends; others `unsent_sends`, all of them resends of unsent requests.
    pub(crate) fn new(unsent_sends: usize, retries: Option<Retries>) -> Self {
        Plan {
            max_sends: retries
                .as_ref()
                .map_or(unsent_sends, |retries| retries.max_attempts),
            retries,
            deadline: None,
            metrics: ClientMetrics::detached(),
        }
    }

    /// The same plan, counting its resends in `metrics`.
    pub(crate) fn counted(mut self, metrics: ClientMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// The same plan for a request whose deadline is `timeout` from now.
    pub(crate) fn within(mut self, timeout: Option<Duration>) -> Self {
        self.deadline = timeout.and_then(|timeout| Instant::now().checked_add(timeout));
        self
    }
}

/// The one retry engine of the clients: sends `request` through `send`, and again while the
/// outcome allows it, within `plan`. A request that was not processed is sent again (the copy
/// from the endpoint, else `copy()`); one that may have been processed, or a refusing answer,
/// only when the plan has a retry budget that allows it. A refusing answer's pushback is
/// honoured: no resend sooner than it says, none when it says never or when it ends after the
/// plan's deadline. Every send counts against `plan.max_sends`.
pub(crate) async fn run<S, Request, Response>(
    mut send: S,
    request: Request,
    plan: Plan,
    mut copy: impl FnMut() -> Option<Request>,
) -> Result<Response, Error>
where
    S: tower::Service<Request, Response = Sent<Request, Response>>,
    S::Error: Into<crate::BoxError>,
{
    use tower::ServiceExt;
    if let Some(retries) = &plan.retries {
        retries.deposit();
    }
    let may_retry = |plan: &Plan| plan.retries.as_ref().is_some_and(|r| r.budget.withdraw());
    let mut request = request;
    let mut sends = 0;
    loop {
        sends += 1;
        let last = sends >= plan.max_sends;
        let sent = match send.ready().await {
            Ok(ready) => ready.call(request).await,
            Err(error) => Err(error),
        };
        let sent = sent.unwrap_or_else(|error| {
            Sent::Final(Error::new(ErrorKind::Transport, "the request failed").with_source(error))
        });
        let next = match sent {
            Sent::Answer {
                response,
                refusing,
                pushback,
            } => {
                if !refusing || last {
                    return Ok(response);
                }
                let wait = match pushback {
                    None => Duration::ZERO,
                    Some(Pushback::Never) => return Ok(response),
                    Some(Pushback::After(wait)) => wait,
                };
                let resend_at = Instant::now().checked_add(wait);
                if plan
                    .deadline
                    .is_some_and(|deadline| resend_at.is_none_or(|at| at >= deadline))
                {
                    return Ok(response);
                }
                if !may_retry(&plan) {
                    return Ok(response);
                }
                tracing::debug!(target: "waypost::retry", sends, ?wait, "refused work; sending again after the server's pushback");
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
                plan.metrics.retried();
                copy()
            }
            Sent::NotProcessed { request, error } => {
                if last {
                    return Err(error);
                }
                tracing::debug!(target: "waypost::retry", sends, %error, "not processed; sending to another endpoint");
                match request.or_else(&mut copy) {
                    Some(request) => {
                        plan.metrics.resent_unsent();
                        Some(request)
                    }
                    None => return Err(error),
                }
            }
            Sent::Failed(error) => {
                if last || !may_retry(&plan) {
                    return Err(error);
                }
                tracing::debug!(target: "waypost::retry", sends, %error, "failed; sending an idempotent request again");
                match copy() {
                    Some(request) => {
                        plan.metrics.retried();
                        Some(request)
                    }
                    None => return Err(error),
                }
            }
            Sent::Final(error) => return Err(error),
        };
        match next {
            Some(next) => request = next,
            None => {
                return Err(Error::new(
                    ErrorKind::Transport,
                    "the request could not be copied to send it again",
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use tower_test::mock;

    use super::*;

    type Outcome = Sent<String, &'static str>;

    fn budget(max_attempts: usize) -> Option<Retries> {
        Some(
            Retries::new(RetryBudget {
                max_attempts,
                ..RetryBudget::default()
            })
            .unwrap(),
        )
    }

    fn unreachable() -> Error {
        Error::new(ErrorKind::Unreachable, "no connection")
    }

    fn reset() -> Error {
        Error::new(ErrorKind::Transport, "connection reset")
    }

    /// Runs the engine against a mock endpoint that answers the n-th send with `answers[n]`;
    /// returns the result and the requests it received, in order.
    async fn run_script(
        plan: Plan,
        answers: Vec<Outcome>,
    ) -> (Result<&'static str, Error>, Vec<String>, usize) {
        let (service, mut handle) = mock::pair::<String, Outcome>();
        let copies = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&copies);
        let copy = move || {
            let n = counted.fetch_add(1, Ordering::SeqCst);
            Some(format!("copy {}", n + 1))
        };
        let engine = tokio::spawn(run(service, "call".to_owned(), plan, copy));
        let mut seen = Vec::new();
        for answer in answers {
            let Some((request, respond)) = handle.next_request().await else {
                break;
            };
            seen.push(request);
            respond.send_response(answer);
        }
        let result = engine.await.unwrap();
        // Nothing more was sent than the script answered.
        drop(handle);
        (result, seen, copies.load(Ordering::SeqCst))
    }

    fn answer(refusing: bool) -> Outcome {
        Sent::Answer {
            response: if refusing { "unavailable" } else { "ok" },
            refusing,
            pushback: None,
        }
    }

    fn pushed_back(pushback: Pushback) -> Outcome {
        Sent::Answer {
            response: "unavailable",
            refusing: true,
            pushback: Some(pushback),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_pushback_delays_the_retry_by_what_the_server_asked() {
        let started = Instant::now();
        let (service, mut handle) = mock::pair::<String, Outcome>();
        let engine = tokio::spawn(run(
            service,
            "call".to_owned(),
            Plan::new(3, budget(3)),
            || Some("copy".to_owned()),
        ));
        let (_, respond) = handle.next_request().await.unwrap();
        respond.send_response(pushed_back(Pushback::After(Duration::from_millis(1500))));
        let (request, respond) = handle.next_request().await.unwrap();
        assert_eq!(request, "copy");
        assert_eq!(
            started.elapsed(),
            Duration::from_millis(1500),
            "not sooner, not later"
        );
        respond.send_response(answer(false));
        assert_eq!(engine.await.unwrap().unwrap(), "ok");
    }

    #[tokio::test(start_paused = true)]
    async fn a_pushback_of_never_or_past_the_deadline_returns_the_answer() {
        let (result, seen, _) =
            run_script(Plan::new(3, budget(3)), vec![pushed_back(Pushback::Never)]).await;
        assert_eq!(result.unwrap(), "unavailable");
        assert_eq!(seen.len(), 1, "never retried");

        let plan = Plan::new(3, budget(3)).within(Some(Duration::from_secs(1)));
        let started = Instant::now();
        let (result, seen, _) = run_script(
            plan,
            vec![pushed_back(Pushback::After(Duration::from_secs(2)))],
        )
        .await;
        assert_eq!(result.unwrap(), "unavailable");
        assert_eq!(seen.len(), 1, "a retry after the deadline is not made");
        assert_eq!(started.elapsed(), Duration::ZERO, "nor waited for");

        // Within the deadline it is made.
        let plan = Plan::new(3, budget(3)).within(Some(Duration::from_secs(5)));
        let (result, seen, _) = run_script(
            plan,
            vec![
                pushed_back(Pushback::After(Duration::from_secs(2))),
                answer(false),
            ],
        )
        .await;
        assert_eq!(result.unwrap(), "ok");
        assert_eq!(seen.len(), 2);
    }

    #[tokio::test]
    async fn an_unsent_request_goes_again_itself() {
        let (result, seen, copies) = run_script(
            Plan::new(3, None),
            vec![
                Sent::NotProcessed {
                    request: Some("call (returned)".to_owned()),
                    error: unreachable(),
                },
                answer(false),
            ],
        )
        .await;
        assert_eq!(result.unwrap(), "ok");
        assert_eq!(seen, ["call", "call (returned)"]);
        assert_eq!(copies, 0, "the endpoint gave the request back");
    }

    #[tokio::test]
    async fn a_goaway_refused_request_goes_again_as_a_copy() {
        let (result, seen, _) = run_script(
            Plan::new(3, None),
            vec![
                Sent::NotProcessed {
                    request: None,
                    error: unreachable(),
                },
                answer(false),
            ],
        )
        .await;
        assert_eq!(result.unwrap(), "ok");
        assert_eq!(seen, ["call", "copy 1"]);
    }

    #[tokio::test]
    async fn a_request_that_may_have_been_processed_is_not_sent_again_without_a_budget() {
        let (result, seen, _) = run_script(Plan::new(3, None), vec![Sent::Failed(reset())]).await;
        assert!(result.unwrap_err().to_string().contains("connection reset"));
        assert_eq!(seen, ["call"]);
    }

    #[tokio::test]
    async fn an_idempotent_request_is_sent_again_after_a_failure_within_the_budget() {
        let (result, seen, _) = run_script(
            Plan::new(3, budget(3)),
            vec![Sent::Failed(reset()), answer(false)],
        )
        .await;
        assert_eq!(result.unwrap(), "ok");
        assert_eq!(seen, ["call", "copy 1"]);
    }

    #[tokio::test]
    async fn a_trailers_only_unavailable_or_503_is_retried_only_when_idempotent() {
        // A refusing answer (HTTP 503, trailers-only gRPC UNAVAILABLE) is what both clients
        // report as `refusing`.
        let (result, seen, _) = run_script(Plan::new(3, None), vec![answer(true)]).await;
        assert_eq!(result.unwrap(), "unavailable", "returned as it is");
        assert_eq!(seen, ["call"]);

        let (result, seen, _) =
            run_script(Plan::new(3, budget(3)), vec![answer(true), answer(false)]).await;
        assert_eq!(result.unwrap(), "ok");
        assert_eq!(seen, ["call", "copy 1"]);
    }

    #[tokio::test]
    async fn every_send_counts_unsent_ones_included() {
        // Not idempotent: three sends, all unsent, then the error.
        let unsent = || Sent::NotProcessed {
            request: None,
            error: unreachable(),
        };
        let (result, seen, _) = run_script(
            Plan::new(3, None),
            vec![unsent(), unsent(), unsent(), answer(false)],
        )
        .await;
        assert_eq!(result.unwrap_err().kind(), ErrorKind::Unreachable);
        assert_eq!(seen.len(), 3);

        // Idempotent with 3 attempts: an unsent send, a failure and a refusal are three sends,
        // not three rounds of three.
        let (result, seen, _) = run_script(
            Plan::new(3, budget(3)),
            vec![unsent(), Sent::Failed(reset()), answer(true), answer(false)],
        )
        .await;
        assert_eq!(result.unwrap(), "unavailable", "the third send's answer");
        assert_eq!(seen, ["call", "copy 1", "copy 2"]);
    }

    #[tokio::test]
    async fn an_exhausted_budget_stops_retries_but_not_unsent_resends() {
        let empty = Retries::new(RetryBudget {
            min_per_second: 0,
            retry_percent: 0.0,
            max_attempts: 5,
        })
        .unwrap();
        let (result, seen, _) = run_script(
            Plan::new(3, Some(empty.clone())),
            vec![Sent::Failed(reset()), answer(false)],
        )
        .await;
        assert!(result.is_err(), "no budget for a retry");
        assert_eq!(seen, ["call"]);

        let (result, seen, _) = run_script(
            Plan::new(3, Some(empty)),
            vec![
                Sent::NotProcessed {
                    request: None,
                    error: unreachable(),
                },
                answer(false),
            ],
        )
        .await;
        assert_eq!(result.unwrap(), "ok", "an unsent resend needs no budget");
        assert_eq!(seen, ["call", "copy 1"]);
    }

    #[tokio::test]
    async fn a_final_outcome_stops_at_once() {
        let (result, seen, _) = run_script(
            Plan::new(3, budget(3)),
            vec![Sent::Final(Error::new(
                ErrorKind::NoEndpoints,
                "no endpoints",
            ))],
        )
        .await;
        assert_eq!(result.unwrap_err().kind(), ErrorKind::NoEndpoints);
        assert_eq!(seen, ["call"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_ends_the_resends() {
        // The endpoint never answers: the caller's deadline (the clients' timeout around the
        // engine) ends the call with one send made, none after it.
        let (service, mut handle) = mock::pair::<String, Outcome>();
        let engine = run(service, "call".to_owned(), Plan::new(3, budget(3)), || {
            Some("copy".to_owned())
        });
        let deadline = tokio::time::timeout(Duration::from_secs(1), engine);
        let ((), elapsed) = tokio::join!(
            async {
                let (request, _respond) = handle.next_request().await.unwrap();
                assert_eq!(request, "call");
                // Hold the answer past the deadline.
                tokio::time::sleep(Duration::from_secs(5)).await;
            },
            deadline
        );
        assert!(elapsed.is_err(), "the deadline ended the call");
    }
}
