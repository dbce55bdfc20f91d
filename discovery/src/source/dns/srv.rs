//! SRV targets: `dns:///_grpc._tcp.api.prod.svc.cluster.local`.
//!
//! An SRV record names a host, a port, a priority and a weight (RFC 2782). The source turns an
//! SRV answer into endpoints like this:
//!
//! - Records are grouped by priority, lowest first. The first group that yields at least one
//!   address is the set; the others are fallbacks used only while every lower group has none
//!   (a target that does not exist, or no target with an address).
//! - A record's weight becomes the endpoint's [`weight`](crate::Endpoint::weight). Weight 0
//!   ("a very small chance", RFC 2782) becomes 1, the smallest share an endpoint can have and
//!   still be used: an endpoint weight of 0 means "no new requests" in waypost. Two records
//!   that lead to the same address add up.
//! - The endpoint's [`hostname`](crate::Endpoint::hostname) is the record's target, without
//!   the trailing dot (for a headless Service, the pod's DNS name).
//! - Target addresses come from the answer's additional section when the server put them there
//!   (CoreDNS does), otherwise from follow-up A/AAAA lookups, at most 16 at a time.
//! - A record whose target is `.` says the service is decidedly not available there; it is
//!   skipped.
//! - A target whose follow-up lookup failed keeps the addresses it had in the current set, so
//!   one slow target does not drop its endpoints; the next refresh is then due at the floor.
//!   A group with no address but a failed target fails the whole lookup: falling back to a
//!   higher priority because of a transient failure would move traffic for no reason.
//!
//! The TTL of the outcome is the smallest TTL among the SRV records and the address records
//! used.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use hickory_resolver::lookup::Lookup;
use hickory_resolver::net::NetError;
use hickory_resolver::proto::rr::{Name, RData, RecordType};

use super::options::IpFamilies;
use super::resolve::{
    Addresses, Answer, Negative, Outcome, SharedResolver, Step, answered_records, describe,
    display_name, lookup_addresses, negative,
};
use crate::endpoint::Endpoint;
use crate::error::{DiscoveryError, DiscoveryErrorKind};
use crate::set::EndpointSet;

/// How many follow-up address lookups run at once.
const CONCURRENT_TARGET_LOOKUPS: usize = 16;

/// One SRV record, as used here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SrvRecord {
    pub(crate) priority: u16,
    pub(crate) weight: u16,
    pub(crate) port: u16,
    /// Lower-cased, fully qualified.
    pub(crate) target: Name,
    pub(crate) ttl: u32,
}

/// What is known about the addresses of one SRV target.
#[derive(Debug)]
pub(crate) enum TargetAddresses {
    Found { ips: Vec<IpAddr>, ttl: Duration },
    Missing,
    Failed(NetError),
}

/// What one priority group gave.
#[derive(Debug)]
pub(crate) enum GroupResult {
    Endpoints {
        endpoints: Vec<Endpoint>,
        ttl: Duration,
    },
    Empty,
    Failed {
        target: Name,
        error: NetError,
    },
}

/// How many CNAMEs [`through_alias`] follows.
const MAX_ALIASES: usize = 8;

/// The SRV records of the name `alias` is a CNAME for, following a chain of them: `None` when
/// `alias` is no CNAME. hickory's SRV lookup of an alias answered with the CNAME and the
/// target's SRV records together (as authoritative servers answer for data they hold) asks
/// again for the last SRV target's name and reports that name's NODATA, so an SRV name that is
/// an alias looked like a name without SRV records.
async fn through_alias(resolver: &SharedResolver, alias: &Name) -> Option<Step<Lookup>> {
    let mut name = alias.clone();
    for _ in 0..MAX_ALIASES {
        let cname = resolver.lookup(&name, RecordType::CNAME).await.ok()?;
        let target = cname
            .answers()
            .iter()
            .find_map(|record| match &record.data {
                RData::CNAME(target) if record.name == name => Some(target.0.clone()),
                _ => None,
            })?;
        name = target;
        match resolver.lookup(&name, RecordType::SRV).await {
            Ok(lookup) => return Some(Step::Answer(lookup)),
            Err(error) => match negative(&error, &name, RecordType::SRV) {
                // Another alias, perhaps.
                Some(found) if !found.nxdomain => continue,
                Some(found) => return Some(Step::Negative(found)),
                None => return Some(Step::Failed(error)),
            },
        }
    }
    None
}

/// Looks up the SRV records of `name` and the addresses of their targets.
pub(crate) async fn resolve(
    resolver: &SharedResolver,
    target: &Arc<str>,
    name: &Name,
    families: IpFamilies,
    current: &EndpointSet,
) -> Outcome {
    // The search list is walked as for addresses (see `resolve::SearchList`): the first name
    // with an answer is used, a SERVFAIL moves on but fails the walk if nothing answers.
    let step = resolver
        .walk(name, |candidate| async move {
            match resolver.lookup(&candidate, RecordType::SRV).await {
                Ok(lookup) => Step::Answer(lookup),
                Err(error) => match negative(&error, &candidate, RecordType::SRV) {
                    Some(negative) if !negative.nxdomain => {
                        match through_alias(resolver, &candidate).await {
                            Some(step) => step,
                            None => Step::Negative(negative),
                        }
                    }
                    Some(negative) => Step::Negative(negative),
                    None => Step::Failed(error),
                },
            }
        })
        .await;
    let lookup = match step {
        Step::Answer(lookup) => lookup,
        Step::Negative(negative) => return Outcome::Missing(negative),
        Step::Failed(error) => return Outcome::Failed(srv_error(target, name, error)),
    };
    let answered = display_name(lookup.query().name());
    let mut records = Vec::new();
    let mut decidedly_unavailable = false;
    // The smallest TTL of the SRV records, usable or not: how long an answer without a usable
    // record stands.
    let mut srv_ttl: Option<u32> = None;
    for record in answered_records(lookup.query().name(), lookup.answers()) {
        if let RData::SRV(srv) = &record.data {
            srv_ttl = Some(srv_ttl.map_or(record.ttl, |ttl| ttl.min(record.ttl)));
            if srv.target.is_root() {
                decidedly_unavailable = true;
                continue;
            }
            if srv.port == 0 {
                // No service can listen on port 0: a broken record, skipped alone.
                tracing::debug!(
                    target: "waypost::discovery::dns",
                    name = %answered,
                    srv_target = %srv.target,
                    "ignoring an SRV record with port 0"
                );
                continue;
            }
            let mut target = srv.target.to_lowercase();
            target.set_fqdn(true);
            records.push(SrvRecord {
                priority: srv.priority,
                weight: srv.weight,
                port: srv.port,
                target,
                ttl: record.ttl,
            });
        }
    }
    if records.is_empty() {
        return Outcome::Missing(Negative {
            nxdomain: false,
            ttl: srv_ttl.map(|ttl| Duration::from_secs(u64::from(ttl))),
            detail: if decidedly_unavailable {
                format!("`{answered}` says the service is not available (SRV target `.`)")
            } else {
                format!("`{answered}` has no usable SRV record")
            },
        });
    }
    let mut known = additional_addresses(lookup.additionals(), families);
    for group in priority_groups(&mut records) {
        let wanted: Vec<Name> = unique_targets(group)
            .into_iter()
            .filter(|target| !known.contains_key(target))
            .collect();
        let looked_up: Vec<(Name, TargetAddresses)> = futures_util::stream::iter(wanted)
            .map(|target| async move {
                let hostname = display_name(&target);
                let held = |v4: bool| {
                    current.iter().any(|endpoint| {
                        endpoint.hostname() == Some(hostname.as_str())
                            && endpoint.address().is_ipv4() == v4
                    })
                };
                let (has_v4, has_v6) = (held(true), held(false));
                let addresses =
                    match lookup_addresses(resolver, &target, families, has_v4, has_v6).await {
                        Addresses::Found { ips, ttl, .. } => TargetAddresses::Found { ips, ttl },
                        Addresses::Missing(_) => TargetAddresses::Missing,
                        Addresses::Failed(error) => TargetAddresses::Failed(error),
                    };
                (target, addresses)
            })
            .buffer_unordered(CONCURRENT_TARGET_LOOKUPS)
            .collect()
            .await;
        known.extend(looked_up);
        match build_group(group, &known, current) {
            GroupResult::Endpoints { endpoints, ttl } => {
                return Outcome::Found(Answer {
                    endpoints,
                    ttl,
                    name: answered,
                });
            }
            GroupResult::Empty => continue,
            GroupResult::Failed {
                target: failed,
                error,
            } => {
                return Outcome::Failed(DiscoveryError::with_source(
                    Arc::clone(target),
                    DiscoveryErrorKind::Resolve,
                    format!(
                        "address lookup of SRV target `{}` (from `{answered}`) failed: {}",
                        display_name(&failed),
                        describe(&error)
                    ),
                    error,
                ));
            }
        }
    }
    Outcome::Missing(Negative {
        nxdomain: false,
        ttl: records
            .iter()
            .map(|record| Duration::from_secs(u64::from(record.ttl)))
            .min(),
        detail: format!("no SRV target of `{answered}` has an address"),
    })
}

fn srv_error(target: &Arc<str>, name: &Name, error: NetError) -> DiscoveryError {
    DiscoveryError::with_source(
        Arc::clone(target),
        DiscoveryErrorKind::Resolve,
        format!(
            "SRV lookup of `{}` failed: {}",
            display_name(name),
            describe(&error)
        ),
        error,
    )
}

/// The A/AAAA records of the additional section, by owner name (lower-cased, fully qualified).
pub(crate) fn additional_addresses<'a>(
    additionals: impl IntoIterator<Item = &'a hickory_resolver::proto::rr::Record>,
    families: IpFamilies,
) -> HashMap<Name, TargetAddresses> {
    let mut known: HashMap<Name, TargetAddresses> = HashMap::new();
    for record in additionals {
        let ip = match &record.data {
            RData::A(a) if families.v4() => IpAddr::V4(a.0),
            RData::AAAA(aaaa) if families.v6() => IpAddr::V6(aaaa.0),
            _ => continue,
        };
        if !crate::target::is_destination(ip) {
            continue;
        }
        let mut owner = record.name.to_lowercase();
        owner.set_fqdn(true);
        let ttl = Duration::from_secs(u64::from(record.ttl));
        match known.entry(owner).or_insert(TargetAddresses::Found {
            ips: Vec::new(),
            ttl,
        }) {
            TargetAddresses::Found {
                ips,
                ttl: known_ttl,
            } => {
                ips.push(ip);
                *known_ttl = (*known_ttl).min(ttl);
            }
            TargetAddresses::Missing | TargetAddresses::Failed(_) => {}
        }
    }
    known
}

/// Sorts the records by priority and returns the groups of equal priority, lowest first.
pub(crate) fn priority_groups(records: &mut [SrvRecord]) -> Vec<&[SrvRecord]> {
    records.sort_by_key(|record| record.priority);
    records.chunk_by(|a, b| a.priority == b.priority).collect()
}

fn unique_targets(group: &[SrvRecord]) -> Vec<Name> {
    let mut targets: Vec<Name> = group.iter().map(|record| record.target.clone()).collect();
    targets.sort();
    targets.dedup();
    targets
}

/// The endpoints of one priority group, given what is known of its targets' addresses.
pub(crate) fn build_group(
    group: &[SrvRecord],
    known: &HashMap<Name, TargetAddresses>,
    current: &EndpointSet,
) -> GroupResult {
    let mut weights: BTreeMap<SocketAddr, (u32, String)> = BTreeMap::new();
    let mut ttl = group
        .iter()
        .map(|record| Duration::from_secs(u64::from(record.ttl)))
        .min()
        .unwrap_or_default();
    let mut unresolved: Option<(Name, &NetError)> = None;
    let mut carried = false;
    // Identical records, and an address listed twice for one target, count once (RFC 2181
    // §5: an RRset holds no duplicates); different records reaching one address add up.
    let mut seen: HashSet<(u16, u16, &Name)> = HashSet::new();
    for record in group {
        if !seen.insert((record.weight, record.port, &record.target)) {
            continue;
        }
        let hostname = display_name(&record.target);
        let weight = u32::from(record.weight.max(1));
        let mut added: HashSet<SocketAddr> = HashSet::new();
        let mut add = |address: SocketAddr| {
            if !added.insert(address) {
                return;
            }
            let entry = weights
                .entry(address)
                .or_insert_with(|| (0, hostname.clone()));
            entry.0 = entry.0.saturating_add(weight);
            // Of several targets reaching one address, the smallest name, whatever the
            // answer's order: a server that rotates its records changes nothing.
            if hostname < entry.1 {
                entry.1.clone_from(&hostname);
            }
        };
        match known.get(&record.target) {
            Some(TargetAddresses::Found { ips, ttl: found }) => {
                ttl = ttl.min(*found);
                for ip in ips {
                    add(SocketAddr::new(*ip, record.port));
                }
            }
            Some(TargetAddresses::Missing) => {}
            Some(TargetAddresses::Failed(error)) => {
                let before = current
                    .iter()
                    .filter(|endpoint| {
                        endpoint.hostname() == Some(hostname.as_str())
                            && endpoint.address().port() == record.port
                    })
                    .map(Endpoint::address)
                    .collect::<Vec<_>>();
                if before.is_empty() {
                    unresolved.get_or_insert((record.target.clone(), error));
                } else {
                    carried = true;
                    tracing::debug!(
                        target: "waypost::discovery::dns",
                        srv_target = %hostname,
                        %error,
                        "address lookup of an SRV target failed; keeping its known addresses"
                    );
                    for address in before {
                        add(address);
                    }
                }
            }
            None => {
                unresolved.get_or_insert((
                    record.target.clone(),
                    &NetError::Message("SRV target was not looked up"),
                ));
            }
        }
    }
    if weights.is_empty() {
        return match unresolved {
            Some((target, error)) => GroupResult::Failed {
                target,
                error: error.clone(),
            },
            None => GroupResult::Empty,
        };
    }
    if carried || unresolved.is_some() {
        // Part of the group is stale: look again soon.
        ttl = Duration::ZERO;
    }
    GroupResult::Endpoints {
        endpoints: weights
            .into_iter()
            .map(|(address, (weight, hostname))| {
                Endpoint::new(address)
                    .with_weight(weight)
                    .with_hostname(hostname)
            })
            .collect(),
        ttl,
    }
}

#[cfg(test)]
mod tests {
    use hickory_resolver::proto::rr::Record;
    use hickory_resolver::proto::rr::rdata::{A, AAAA};

    use super::*;

    fn name(text: &str) -> Name {
        let mut name = Name::from_str_relaxed(text).unwrap().to_lowercase();
        name.set_fqdn(true);
        name
    }

    fn record(priority: u16, weight: u16, port: u16, target: &str) -> SrvRecord {
        SrvRecord {
            priority,
            weight,
            port,
            target: name(target),
            ttl: 30,
        }
    }

    fn found(ips: &[&str], ttl: u64) -> TargetAddresses {
        TargetAddresses::Found {
            ips: ips.iter().map(|ip| ip.parse().unwrap()).collect(),
            ttl: Duration::from_secs(ttl),
        }
    }

    #[test]
    fn groups_come_lowest_priority_first() {
        let mut records = vec![
            record(20, 1, 80, "c.test"),
            record(10, 1, 80, "a.test"),
            record(10, 1, 80, "b.test"),
        ];
        let groups = priority_groups(&mut records);
        assert_eq!(groups.len(), 2);
        assert!(groups[0].iter().all(|record| record.priority == 10));
        assert_eq!(groups[0].len(), 2);
        assert_eq!(groups[1][0].target, name("c.test"));
    }

    #[test]
    fn weights_map_to_endpoint_weights_and_zero_becomes_one() {
        let group = [
            record(0, 60, 8080, "a.test"),
            record(0, 0, 8080, "b.test"),
            record(0, 20, 9090, "a.test"),
        ];
        let known = HashMap::from([
            (name("a.test"), found(&["127.0.0.1"], 5)),
            (name("b.test"), found(&["127.0.0.2", "::1"], 10)),
        ]);
        let GroupResult::Endpoints { endpoints, ttl } =
            build_group(&group, &known, &EndpointSet::empty())
        else {
            panic!("expected endpoints");
        };
        assert_eq!(ttl, Duration::from_secs(5));
        let by_address: HashMap<SocketAddr, &Endpoint> = endpoints
            .iter()
            .map(|endpoint| (endpoint.address(), endpoint))
            .collect();
        assert_eq!(by_address.len(), 4);
        let a = by_address[&"127.0.0.1:8080".parse().unwrap()];
        assert_eq!(a.weight(), 60);
        assert_eq!(a.hostname(), Some("a.test"));
        assert_eq!(by_address[&"127.0.0.1:9090".parse().unwrap()].weight(), 20);
        assert_eq!(by_address[&"127.0.0.2:8080".parse().unwrap()].weight(), 1);
        assert_eq!(by_address[&"[::1]:8080".parse().unwrap()].weight(), 1);
    }

    #[test]
    fn duplicate_records_add_their_weights() {
        let group = [record(0, 3, 80, "a.test"), record(0, 4, 80, "a.test")];
        let known = HashMap::from([(name("a.test"), found(&["127.0.0.1"], 5))]);
        let GroupResult::Endpoints { endpoints, .. } =
            build_group(&group, &known, &EndpointSet::empty())
        else {
            panic!("expected endpoints");
        };
        assert_eq!(endpoints.len(), 1);
        assert_eq!(endpoints[0].weight(), 7);
    }

    #[test]
    fn identical_records_and_repeated_addresses_count_once() {
        let group = [
            record(0, 3, 80, "a.test"),
            record(0, 3, 80, "a.test"),
            record(0, 2, 80, "b.test"),
        ];
        let known = HashMap::from([
            (name("a.test"), found(&["127.0.0.1", "127.0.0.1"], 5)),
            (name("b.test"), found(&["127.0.0.2"], 5)),
        ]);
        let GroupResult::Endpoints { endpoints, .. } =
            build_group(&group, &known, &EndpointSet::empty())
        else {
            panic!("expected endpoints");
        };
        let weights: Vec<(SocketAddr, u32)> = endpoints
            .iter()
            .map(|endpoint| (endpoint.address(), endpoint.weight()))
            .collect();
        assert_eq!(
            weights,
            [
                ("127.0.0.1:80".parse().unwrap(), 3),
                ("127.0.0.2:80".parse().unwrap(), 2)
            ]
        );
    }

    #[test]
    fn targets_reaching_one_address_give_it_the_smallest_name_in_any_order() {
        let known = HashMap::from([
            (name("a.test"), found(&["127.0.0.1"], 5)),
            (name("b.test"), found(&["127.0.0.1"], 5)),
        ]);
        for group in [
            [record(0, 1, 80, "b.test"), record(0, 1, 80, "a.test")],
            [record(0, 1, 80, "a.test"), record(0, 1, 80, "b.test")],
        ] {
            let GroupResult::Endpoints { endpoints, .. } =
                build_group(&group, &known, &EndpointSet::empty())
            else {
                panic!("expected endpoints");
            };
            assert_eq!(endpoints.len(), 1);
            assert_eq!(endpoints[0].hostname(), Some("a.test"));
            assert_eq!(endpoints[0].weight(), 2);
        }
    }

    #[test]
    fn a_group_without_addresses_is_empty_unless_a_lookup_failed() {
        let group = [record(0, 1, 80, "gone.test")];
        let known = HashMap::from([(name("gone.test"), TargetAddresses::Missing)]);
        assert!(matches!(
            build_group(&group, &known, &EndpointSet::empty()),
            GroupResult::Empty
        ));
        let known = HashMap::from([(
            name("gone.test"),
            TargetAddresses::Failed(NetError::Timeout),
        )]);
        assert!(matches!(
            build_group(&group, &known, &EndpointSet::empty()),
            GroupResult::Failed { .. }
        ));
    }

    #[test]
    fn a_failed_target_keeps_its_known_addresses() {
        let group = [record(0, 5, 80, "a.test"), record(0, 5, 80, "b.test")];
        let current = EndpointSet::new([
            Endpoint::new("127.0.0.9:80".parse().unwrap()).with_hostname("b.test"),
            Endpoint::new("127.0.0.1:80".parse().unwrap()).with_hostname("a.test"),
        ]);
        let known = HashMap::from([
            (name("a.test"), found(&["127.0.0.2"], 30)),
            (name("b.test"), TargetAddresses::Failed(NetError::Timeout)),
        ]);
        let GroupResult::Endpoints { endpoints, ttl } = build_group(&group, &known, &current)
        else {
            panic!("expected endpoints");
        };
        let addresses: Vec<SocketAddr> = endpoints.iter().map(Endpoint::address).collect();
        assert_eq!(
            addresses,
            [
                "127.0.0.2:80".parse::<SocketAddr>().unwrap(),
                "127.0.0.9:80".parse().unwrap()
            ]
        );
        assert_eq!(
            ttl,
            Duration::ZERO,
            "a stale target makes the next refresh due soon"
        );
    }

    #[test]
    fn additional_records_are_keyed_by_lower_case_owner() {
        let records = [
            Record::from_rdata(
                Name::from_ascii("Pod-0.API.test.").unwrap(),
                7,
                RData::A(A("127.0.0.5".parse().unwrap())),
            ),
            Record::from_rdata(
                Name::from_ascii("pod-0.api.test.").unwrap(),
                3,
                RData::AAAA(AAAA("::1".parse().unwrap())),
            ),
        ];
        let known = additional_addresses(&records, IpFamilies::Both);
        let Some(TargetAddresses::Found { ips, ttl }) = known.get(&name("pod-0.api.test")) else {
            panic!("expected the additional addresses");
        };
        assert_eq!(ips.len(), 2);
        assert_eq!(*ttl, Duration::from_secs(3));
        let known = additional_addresses(&records, IpFamilies::V4Only);
        let Some(TargetAddresses::Found { ips, .. }) = known.get(&name("pod-0.api.test")) else {
            panic!("expected the additional addresses");
        };
        assert_eq!(ips.len(), 1);
    }
}
