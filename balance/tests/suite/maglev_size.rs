//! The default Maglev policy's table size follows the number of endpoints: it steps only at the
//! documented points (`maglev::next_table_size`), a step remaps the whole table, and a set that
//! oscillates across a step's boundary keeps its size. The size is observed through placement:
//! a sized balancer places every key exactly as a fixed-size one of the expected size does.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use waypost_balance::policy::maglev::{self, SLOTS_PER_ENDPOINT, TABLE_SIZES};
use waypost_balance::{Balance, BalanceConfig, Policy, hash_key_bytes};
use waypost_discovery::{Endpoint, Publisher};

type Ready = std::future::Ready<Result<(), Infallible>>;
type Noop = tower::util::ServiceFn<fn(()) -> Ready>;

fn ok(_: ()) -> Ready {
    std::future::ready(Ok(()))
}

fn noop(_: &Endpoint) -> Noop {
    tower::service_fn(ok as fn(()) -> Ready)
}

fn endpoints(n: usize) -> Vec<Endpoint> {
    (0..n)
        .map(|i| Endpoint::new(SocketAddr::from(([127, 0, 0, 1], 8000 + i as u16))))
        .collect()
}

fn keys() -> Vec<u64> {
    (0..2_000u64)
        .map(|i| hash_key_bytes(format!("user-{i}").as_bytes()))
        .collect()
}

fn balancer(publisher: &Publisher, policy: Policy) -> Balance<Noop> {
    Balance::builder(publisher.endpoints())
        .config(BalanceConfig {
            seed: Some(1),
            ..BalanceConfig::with_policy(policy)
        })
        .build(noop)
        .unwrap()
}

fn placement(balance: &mut Balance<Noop>) -> Vec<SocketAddr> {
    keys()
        .into_iter()
        .map(|key| balance.pick(Some(key)).unwrap())
        .collect()
}

/// Where a balancer with a fixed table of `size` slots over `n` endpoints places the keys.
fn fixed(n: usize, size: u32) -> Vec<SocketAddr> {
    let mut publisher = Publisher::new("fixed");
    publisher.publish(endpoints(n));
    let policy = Policy::maglev_with_table_size(size).unwrap();
    placement(&mut balancer(&publisher, policy))
}

/// The share of keys placed differently.
fn moved(a: &[SocketAddr], b: &[SocketAddr]) -> f64 {
    a.iter().zip(b).filter(|(a, b)| a != b).count() as f64 / a.len() as f64
}

/// Publishes `n` endpoints and waits until the balancer's table has them.
async fn resize(publisher: &mut Publisher, balance: &Balance<Noop>, n: usize) {
    publisher.publish(endpoints(n));
    tokio::time::timeout(Duration::from_secs(10), async {
        while balance.usable_endpoints() != n {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("the table is rebuilt");
}

#[tokio::test]
async fn placement_tells_the_table_size() {
    // Two sizes place the same endpoints almost independently, so the comparisons below can
    // tell which size a balancer built.
    assert!(moved(&fixed(10, 1_031), &fixed(10, 2_053)) > 0.5);
    assert!(moved(&fixed(11, 2_053), &fixed(11, 4_099)) > 0.5);
}

#[tokio::test]
async fn the_size_steps_only_at_the_documented_points() {
    // 1 031 slots serve up to 10 endpoints at 100 slots each; the 11th needs 2 053.
    let boundary = (TABLE_SIZES[0] / SLOTS_PER_ENDPOINT) as usize;
    assert_eq!(boundary, 10);
    let mut publisher = Publisher::new("sized");
    publisher.publish(endpoints(boundary - 1));
    let mut balance = balancer(&publisher, Policy::maglev());
    let before = placement(&mut balance);
    assert_eq!(before, fixed(boundary - 1, 1_031));

    // Within a step: an ordinary Maglev change, about 1 / N of the keys move.
    resize(&mut publisher, &balance, boundary).await;
    let within = placement(&mut balance);
    assert_eq!(within, fixed(boundary, 1_031));
    let share = moved(&before, &within);
    assert!(share < 0.2, "{share}");

    // Across the step: the table is remapped, most keys move.
    resize(&mut publisher, &balance, boundary + 1).await;
    let across = placement(&mut balance);
    assert_eq!(across, fixed(boundary + 1, 2_053));
    let share = moved(&within, &across);
    assert!(share > 0.5, "{share}");
}

#[tokio::test]
async fn n_oscillating_across_a_step_keeps_the_table() {
    let mut publisher = Publisher::new("sized");
    publisher.publish(endpoints(11));
    let mut balance = balancer(&publisher, Policy::maglev());
    let eleven = placement(&mut balance);
    assert_eq!(eleven, fixed(11, 2_053));
    for _ in 0..3 {
        // Down to 10: a fresh balancer would build 1 031 slots; this one keeps 2 053, so only
        // about the removed endpoint's keys move.
        resize(&mut publisher, &balance, 10).await;
        let ten = placement(&mut balance);
        assert_eq!(ten, fixed(10, 2_053));
        let share = moved(&eleven, &ten);
        assert!(share < 0.2, "{share}");
        // Back to 11: exactly the first placement.
        resize(&mut publisher, &balance, 11).await;
        assert_eq!(placement(&mut balance), eleven);
    }
}

#[tokio::test]
async fn the_size_shrinks_once_the_step_two_below_suffices() {
    let mut publisher = Publisher::new("sized");
    publisher.publish(endpoints(41));
    let mut balance = balancer(&publisher, Policy::maglev());
    assert_eq!(maglev::table_size_for(41), 8_209);
    assert_eq!(placement(&mut balance), fixed(41, 8_209));
    // 21 endpoints need 4 099 slots, one step below: kept.
    resize(&mut publisher, &balance, 21).await;
    assert_eq!(placement(&mut balance), fixed(21, 8_209));
    // 20 endpoints fit in 2 053 slots, two steps below: straight down to that size.
    resize(&mut publisher, &balance, 20).await;
    assert_eq!(placement(&mut balance), fixed(20, 2_053));
    // And up again as soon as N needs more.
    resize(&mut publisher, &balance, 21).await;
    assert_eq!(placement(&mut balance), fixed(21, 4_099));
}
