//! Golden vectors: where the hashing policies place fixed keys. A change here means every
//! deployment's placement moves, so it must be deliberate.

use std::convert::Infallible;
use std::net::SocketAddr;

use waypost_balance::{Balance, BalanceConfig, Policy, hash_key_bytes};
use waypost_discovery::{Endpoint, Publisher};

fn ports(policy: Policy, endpoints: &[Endpoint], keys: &[u64]) -> Vec<u16> {
    let mut publisher = Publisher::new("golden");
    publisher.publish(endpoints.iter().cloned());
    let mut balance = Balance::builder(publisher.endpoints())
        .config(BalanceConfig {
            seed: Some(1),
            ..BalanceConfig::with_policy(policy)
        })
        .build(|_: &Endpoint| tower::service_fn(|_: ()| async { Ok::<_, Infallible>(()) }))
        .unwrap();
    keys.iter()
        .map(|&key| balance.pick(Some(key)).unwrap().port())
        .collect()
}

fn five() -> Vec<Endpoint> {
    (1..=5)
        .map(|i| Endpoint::new(SocketAddr::from(([127, 0, 0, 1], 8000 + i))))
        .collect()
}

fn keys() -> Vec<u64> {
    (0..16u64)
        .map(|i| hash_key_bytes(format!("user-{i}").as_bytes()))
        .collect()
}

#[tokio::test]
async fn maglev_placement_is_pinned() {
    let got = ports(Policy::maglev(), &five(), &keys());
    assert_eq!(got, GOLDEN_MAGLEV, "Maglev placement changed");
}

#[tokio::test]
async fn fixed_size_maglev_placement_is_pinned() {
    let policy = Policy::maglev_with_table_size(65_537).unwrap();
    let got = ports(policy, &five(), &keys());
    assert_eq!(
        got, GOLDEN_MAGLEV_65_537,
        "fixed-size Maglev placement changed"
    );
}

#[tokio::test]
async fn ring_hash_placement_is_pinned() {
    let got = ports(Policy::ring_hash(), &five(), &keys());
    assert_eq!(got, GOLDEN_RING, "ring hash placement changed");
}

#[tokio::test]
async fn ring_sized_for_a_target_placement_is_pinned() {
    let policy =
        Policy::ring_hash_with(0.10, waypost_balance::policy::DEFAULT_MAX_RING_SIZE).unwrap();
    let got = ports(policy, &five(), &keys());
    assert_eq!(
        got, GOLDEN_RING_10_PERCENT,
        "sized ring hash placement changed"
    );
}

#[tokio::test]
async fn hash_keys_survive_address_changes() {
    // StatefulSet pods keep their names when their IPs change: placement follows the name.
    let named = |port: u16, name: &str| {
        Endpoint::new(SocketAddr::from(([127, 0, 0, 2], port))).with_hash_key(name)
    };
    let before: Vec<Endpoint> = (0..5)
        .map(|i| named(9000 + i, &format!("db-{i}")))
        .collect();
    let after: Vec<Endpoint> = (0..5)
        .map(|i| named(9100 + i, &format!("db-{i}")))
        .collect();
    for policy in [Policy::maglev(), Policy::ring_hash()] {
        let a = ports(policy, &before, &keys());
        let b = ports(policy, &after, &keys());
        let a: Vec<u16> = a.iter().map(|p| p - 9000).collect();
        let b: Vec<u16> = b.iter().map(|p| p - 9100).collect();
        assert_eq!(a, b, "{policy:?}");
    }
}

#[tokio::test]
async fn hash_key_bytes_is_xxhash64() {
    // xxHash64 of the empty input with seed 0, from the reference implementation.
    assert_eq!(hash_key_bytes(b""), 0xEF46_DB37_51D8_E999);
}

/// The default Maglev policy over five endpoints. Re-pinned when the default table size began to
/// depend on the number of endpoints: five endpoints now get 1 031 slots instead of 65 537, a
/// different table, so these keys moved once, deliberately.
const GOLDEN_MAGLEV: [u16; 16] = [
    8001, 8002, 8003, 8005, 8004, 8004, 8001, 8003, 8005, 8001, 8003, 8003, 8005, 8004, 8005, 8005,
];
/// A fixed 65 537-slot table over five endpoints: the default policy's placement until the table
/// was sized from the number of endpoints, unchanged.
const GOLDEN_MAGLEV_65_537: [u16; 16] = [
    8002, 8002, 8003, 8005, 8003, 8002, 8005, 8002, 8004, 8001, 8005, 8001, 8005, 8002, 8002, 8004,
];
/// The default ring over five endpoints. Re-pinned, deliberately, when the ring changed twice
/// at once: its points became one `u64` each (a 32-bit hash derived from xxHash64 of the
/// endpoint's key, and the owner), looked up by the top 32 bits of the request's key, and the
/// default ring went from a size targeting a 10% imbalance (322 points per endpoint at N = 5)
/// to 160 points per endpoint, as in ketama. Until then it was
/// `[8002, 8001, 8002, 8005, 8001, 8005, 8004, 8003, 8001, 8004, 8002, 8004, 8004, 8004, 8003,
/// 8003]`.
const GOLDEN_RING: [u16; 16] = [
    8003, 8002, 8003, 8005, 8002, 8002, 8004, 8002, 8005, 8001, 8005, 8001, 8005, 8002, 8005, 8005,
];
/// `Policy::ring_hash_with(0.10, DEFAULT_MAX_RING_SIZE)` over five endpoints (the former
/// default's sizing, in the current point format), pinned when the default changed.
const GOLDEN_RING_10_PERCENT: [u16; 16] = [
    8005, 8004, 8003, 8005, 8002, 8002, 8004, 8002, 8005, 8001, 8001, 8001, 8003, 8005, 8005, 8005,
];
