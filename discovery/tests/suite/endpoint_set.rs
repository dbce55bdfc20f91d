//! EndpointSet invariants over generated input: sorted, one endpoint per address, ready before
//! terminating, nothing invented or lost, and diffs that rebuild the newer set.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use proptest::prelude::*;
use waypost_discovery::{Endpoint, EndpointSet, Readiness};

fn endpoint() -> impl Strategy<Value = Endpoint> {
    // Few distinct addresses, so duplicates are common.
    (
        0u8..4,
        1u16..12,
        0u32..4,
        any::<bool>(),
        prop::option::of("[a-c]"),
    )
        .prop_map(|(host, port, weight, terminating, zone)| {
            let address = SocketAddr::from(([127, 0, 0, host], port));
            let readiness = if terminating {
                Readiness::Terminating
            } else {
                Readiness::Ready
            };
            let endpoint = Endpoint::new(address)
                .with_weight(weight)
                .with_readiness(readiness);
            match zone {
                Some(zone) => endpoint.with_zone(zone),
                None => endpoint,
            }
        })
}

proptest! {
    #[test]
    fn sorted_unique_and_complete(input in prop::collection::vec(endpoint(), 0..40)) {
        let set = EndpointSet::new(input.clone());
        let addresses: Vec<SocketAddr> = set.addresses().collect();
        prop_assert!(addresses.windows(2).all(|pair| pair[0] < pair[1]), "sorted and unique");
        let given: BTreeSet<SocketAddr> = input.iter().map(Endpoint::address).collect();
        prop_assert_eq!(addresses.iter().copied().collect::<BTreeSet<_>>(), given, "no address lost or invented");
        for endpoint in set.iter() {
            prop_assert!(input.contains(endpoint), "every kept endpoint was given");
            prop_assert_eq!(set.get(&endpoint.address()), Some(endpoint));
        }
        prop_assert_eq!(set.revision(), 0);
    }

    #[test]
    fn duplicates_keep_ready_then_first(input in prop::collection::vec(endpoint(), 0..40)) {
        let set = EndpointSet::new(input.clone());
        let mut expected: BTreeMap<SocketAddr, &Endpoint> = BTreeMap::new();
        for endpoint in &input {
            let keep = match expected.get(&endpoint.address()) {
                None => true,
                Some(kept) => !kept.readiness().is_ready() && endpoint.readiness().is_ready(),
            };
            if keep {
                expected.insert(endpoint.address(), endpoint);
            }
        }
        let expected: Vec<&Endpoint> = expected.into_values().collect();
        prop_assert_eq!(set.iter().collect::<Vec<_>>(), expected);
    }

    #[test]
    fn input_order_does_not_matter_without_duplicates(
        input in prop::collection::vec(endpoint(), 0..40),
        seed in any::<u64>(),
    ) {
        let mut unique: BTreeMap<SocketAddr, Endpoint> = BTreeMap::new();
        for endpoint in input {
            unique.entry(endpoint.address()).or_insert(endpoint);
        }
        let mut shuffled: Vec<Endpoint> = unique.values().cloned().collect();
        // A deterministic shuffle from the seed.
        let mut state = seed | 1;
        for i in (1..shuffled.len()).rev() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            shuffled.swap(i, (state % (i as u64 + 1)) as usize);
        }
        prop_assert_eq!(EndpointSet::new(shuffled), EndpointSet::new(unique.into_values()));
    }

    #[test]
    fn diff_turns_the_old_set_into_the_new_one(
        old in prop::collection::vec(endpoint(), 0..30),
        new in prop::collection::vec(endpoint(), 0..30),
    ) {
        let (old, new) = (EndpointSet::new(old), EndpointSet::new(new));
        let diff = old.diff(&new);
        let mut rebuilt: BTreeMap<SocketAddr, Endpoint> =
            old.iter().map(|e| (e.address(), e.clone())).collect();
        for removed in &diff.removed {
            prop_assert!(rebuilt.remove(&removed.address()).is_some());
        }
        for added in &diff.added {
            prop_assert!(rebuilt.insert(added.address(), (*added).clone()).is_none());
        }
        for (before, after) in &diff.changed {
            prop_assert_ne!(before, after);
            let replaced = rebuilt.insert(after.address(), (*after).clone());
            prop_assert_eq!(replaced.as_ref(), Some(*before));
        }
        prop_assert_eq!(EndpointSet::new(rebuilt.into_values()), new.clone());
        prop_assert_eq!(diff.is_empty(), old.same_endpoints(&new));
    }
}
