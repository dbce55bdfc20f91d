//! What a [`DnsSource`](super::DnsSource) can be told: refresh timing, the empty-answer
//! confirmation rule, retries, and which resolver configuration to use.
//!
//! Every setting has a default that suits a Kubernetes cluster (CoreDNS answers with a 5 s TTL,
//! kubeadm's configuration with 30 s), so `DnsOptions::default()` is the right start; the
//! setters return the options so they chain.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The shortest wait between two lookups driven by TTLs, by default.
pub const DEFAULT_REFRESH_FLOOR: Duration = Duration::from_secs(1);
/// The longest wait between two lookups driven by TTLs, by default.
pub const DEFAULT_REFRESH_CEILING: Duration = Duration::from_secs(30);
/// The default jitter: each wait is stretched by up to this fraction of itself.
pub const DEFAULT_JITTER: f64 = 0.1;
/// How many negative answers in a row empty the set, by default.
pub const DEFAULT_EMPTY_CONFIRMATIONS: u32 = 2;
/// The default shortest time between the start of one lookup and an early one asked for with
/// [`Endpoints::request_refresh`](crate::Endpoints::request_refresh).
pub const DEFAULT_EARLY_REFRESH_INTERVAL: Duration = Duration::from_secs(2);
/// The default first wait after a failed lookup.
pub const DEFAULT_RETRY_INITIAL: Duration = Duration::from_secs(1);
/// The default longest wait between failed lookups.
pub const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(30);

/// Which address records an address target asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum IpFamilies {
    /// A and AAAA records, asked for in parallel (dual stack). The default.
    #[default]
    Both,
    /// A records only.
    V4Only,
    /// AAAA records only.
    V6Only,
}

impl IpFamilies {
    pub(crate) fn v4(self) -> bool {
        matches!(self, IpFamilies::Both | IpFamilies::V4Only)
    }

    pub(crate) fn v6(self) -> bool {
        matches!(self, IpFamilies::Both | IpFamilies::V6Only)
    }
}

/// Settings of a [`DnsSource`](super::DnsSource).
///
/// ```
/// use std::time::Duration;
/// use waypost_discovery::source::dns::{DnsOptions, IpFamilies};
///
/// let options = DnsOptions::default()
///     .refresh_bounds(Duration::from_secs(2), Duration::from_secs(60))
///     .empty_confirmations(3)
///     .ip_families(IpFamilies::V4Only)
///     .nameserver("127.0.0.1:5353".parse().unwrap());
/// # let _ = options;
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct DnsOptions {
    pub(super) refresh_floor: Duration,
    pub(super) refresh_ceiling: Duration,
    pub(super) jitter: f64,
    pub(super) empty_confirmations: u32,
    pub(super) early_refresh_interval: Duration,
    pub(super) retry_initial: Duration,
    pub(super) retry_max: Duration,
    pub(super) system_config: bool,
    pub(super) nameservers: Vec<SocketAddr>,
    pub(super) search_domains: Option<Vec<String>>,
    pub(super) ndots: Option<usize>,
    pub(super) query_timeout: Option<Duration>,
    pub(super) query_attempts: Option<usize>,
    pub(super) ip_families: IpFamilies,
    pub(super) hosts_file: Option<PathBuf>,
    pub(super) resolv_conf: Option<PathBuf>,
}

impl Default for DnsOptions {
    fn default() -> Self {
        DnsOptions {
            refresh_floor: DEFAULT_REFRESH_FLOOR,
            refresh_ceiling: DEFAULT_REFRESH_CEILING,
            jitter: DEFAULT_JITTER,
            empty_confirmations: DEFAULT_EMPTY_CONFIRMATIONS,
            early_refresh_interval: DEFAULT_EARLY_REFRESH_INTERVAL,
            retry_initial: DEFAULT_RETRY_INITIAL,
            retry_max: DEFAULT_RETRY_MAX,
            system_config: true,
            nameservers: Vec::new(),
            search_domains: None,
            ndots: None,
            query_timeout: None,
            query_attempts: None,
            ip_families: IpFamilies::Both,
            hosts_file: None,
            resolv_conf: None,
        }
    }
}

impl DnsOptions {
    /// The defaults: the system resolver configuration, refresh between 1 s and 30 s with 10%
    /// jitter, two negative answers to empty the set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bounds the wait before the next lookup: an answer's TTL shorter than `floor` waits
    /// `floor`, one longer than `ceiling` waits `ceiling`. A `ceiling` below `floor` is raised
    /// to `floor`; a zero `floor` is raised to 10 ms so that a TTL of 0 cannot spin.
    #[must_use]
    pub fn refresh_bounds(mut self, floor: Duration, ceiling: Duration) -> Self {
        self.refresh_floor = floor.max(Duration::from_millis(10));
        self.refresh_ceiling = ceiling.max(self.refresh_floor);
        self
    }

    /// Stretches each wait by a random amount up to `fraction` of it (0.1 = up to 10% longer),
    /// so that many clients started together do not query in lockstep. Clamped to `0.0..=1.0`;
    /// 0 turns jitter off.
    #[must_use]
    pub fn jitter(mut self, fraction: f64) -> Self {
        self.jitter = if fraction.is_finite() {
            fraction.clamp(0.0, 1.0)
        } else {
            DEFAULT_JITTER
        };
        self
    }

    /// How many negative answers in a row (NXDOMAIN, or no record of the asked type) it takes to
    /// empty a set that has endpoints. Failures in between (timeouts, SERVFAIL) neither count
    /// nor reset the count; any positive answer resets it. At least 1.
    #[must_use]
    pub fn empty_confirmations(mut self, answers: u32) -> Self {
        self.empty_confirmations = answers.max(1);
        self
    }

    /// The shortest time from the start of one lookup to an early one asked for through
    /// [`Endpoints::request_refresh`](crate::Endpoints::request_refresh). Requests that come
    /// sooner are not dropped: they move the next lookup to that earliest time.
    #[must_use]
    pub fn early_refresh_interval(mut self, interval: Duration) -> Self {
        self.early_refresh_interval = interval;
        self
    }

    /// The wait after a first failed lookup, doubled after each further failure up to `max`;
    /// each wait is jittered into `[wait / 2, wait]` ([`Backoff`](crate::backoff::Backoff)).
    #[must_use]
    pub fn retry_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.retry_initial = initial.max(Duration::from_millis(10));
        self.retry_max = max.max(self.retry_initial);
        self
    }

    /// Asks this nameserver (IP and port) instead of the system's. Search domains and ndots
    /// still come from the system configuration unless set here. A nameserver in the target
    /// (`dns://10.0.0.10:53/api:80`) takes precedence.
    #[must_use]
    pub fn nameserver(self, address: SocketAddr) -> Self {
        self.nameservers([address])
    }

    /// Asks these nameservers instead of the system's; see [`nameserver`](Self::nameserver).
    #[must_use]
    pub fn nameservers(mut self, addresses: impl IntoIterator<Item = SocketAddr>) -> Self {
        self.nameservers = addresses.into_iter().collect();
        self
    }

    /// Uses these search domains instead of the system's (resolv.conf's last `search` or
    /// `domain` line, else the domain of the host's name); an empty list turns the search off.
    #[must_use]
    pub fn search_domains<I, S>(mut self, domains: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.search_domains = Some(domains.into_iter().map(Into::into).collect());
        self
    }

    /// Uses this `ndots` instead of the system's: a name with fewer dots is tried with the
    /// search domains first. Kubernetes pods have `ndots:5`, so `api.prod.svc.cluster.local`
    /// (four dots) walks the search list before it is asked as is; write the name with a
    /// trailing dot to skip the walk.
    #[must_use]
    pub fn ndots(mut self, ndots: usize) -> Self {
        self.ndots = Some(ndots);
        self
    }

    /// How long one try of a query waits for an answer (the system's `timeout`, 5 s when
    /// unset). Zero counts as one second, as resolv.conf's `timeout:0` does.
    #[must_use]
    pub fn query_timeout(mut self, timeout: Duration) -> Self {
        self.query_timeout = Some(timeout);
        self
    }

    /// How many times one query is tried in all, the first try included, as resolv.conf's
    /// `attempts` means (the system's value, 2 when unset). At least 1.
    ///
    /// A lookup that gets no answer fails after about `query_timeout` x `attempts`: with the
    /// defaults, 5 s x 2 = 10 s (A and AAAA are asked at the same time, so asking both takes no
    /// longer). The source then keeps the last good set and retries after its backoff.
    #[must_use]
    pub fn query_attempts(mut self, attempts: usize) -> Self {
        self.query_attempts = Some(attempts.max(1));
        self
    }

    /// Which address records to ask for; both by default.
    #[must_use]
    pub fn ip_families(mut self, families: IpFamilies) -> Self {
        self.ip_families = families;
        self
    }

    /// Does not read the system configuration (resolv.conf, and the hosts file unless
    /// [`hosts_file`](Self::hosts_file) names one): nameservers must then be given here or in
    /// the target, and search domains and ndots default to none and 1.
    #[must_use]
    pub fn without_system_config(mut self) -> Self {
        self.system_config = false;
        self
    }

    /// Reads the system configuration from `path` (the format of resolv.conf) instead of
    /// `/etc/resolv.conf`, and reads the system configuration again if
    /// [`without_system_config`](Self::without_system_config) came before. The file is read as
    /// glibc reads resolv.conf: the first three nameservers (port 53, over TCP alone with
    /// `options use-vc`; `127.0.0.1` when it names none), the last `search` or `domain` line
    /// (else the domain of the host's name), `ndots` (at most 15), `timeout` (1 to 30 s),
    /// `attempts` (at most 5), `rotate` and `edns0`. Read when the source starts.
    #[must_use]
    pub fn resolv_conf(mut self, path: impl Into<PathBuf>) -> Self {
        self.resolv_conf = Some(path.into());
        self.system_config = true;
        self
    }

    /// Reads host names from `path` (the format of `/etc/hosts`) instead of the system's hosts
    /// file. As glibc does (`hosts: files dns`), a name found there is answered from it, as
    /// given and before any search domain, and DNS is not asked; by default that file is
    /// `/etc/hosts` with the system configuration and none without it. The file is read when
    /// the source starts; an unreadable file counts as empty.
    #[must_use]
    pub fn hosts_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.hosts_file = Some(path.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_kept_consistent() {
        let options = DnsOptions::default()
            .refresh_bounds(Duration::ZERO, Duration::ZERO)
            .retry_backoff(Duration::from_secs(5), Duration::from_secs(1))
            .empty_confirmations(0)
            .jitter(f64::NAN);
        assert_eq!(options.refresh_floor, Duration::from_millis(10));
        assert_eq!(options.refresh_ceiling, Duration::from_millis(10));
        assert_eq!(options.retry_initial, Duration::from_secs(5));
        assert_eq!(options.retry_max, Duration::from_secs(5));
        assert_eq!(options.empty_confirmations, 1);
        assert_eq!(options.jitter, DEFAULT_JITTER);
        assert_eq!(DnsOptions::default().jitter(7.0).jitter, 1.0);
    }

    #[test]
    fn defaults_suit_a_cluster() {
        let options = DnsOptions::new();
        assert_eq!(options.refresh_floor, Duration::from_secs(1));
        assert_eq!(options.refresh_ceiling, Duration::from_secs(30));
        assert_eq!(options.empty_confirmations, 2);
        assert!(options.system_config);
        assert!(options.nameservers.is_empty());
        assert_eq!(options.ip_families, IpFamilies::Both);
    }
}
