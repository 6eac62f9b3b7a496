//! DNS SRV semantics, pure: RFC 2782's ordering (lower priority first,
//! weighted random within a priority) and the assembly of the three SRV
//! answers into relays. No I/O here; [`crate::dns`] does the lookups.

use std::collections::BTreeMap;
use std::net::IpAddr;

use rand::Rng;

use crate::{Endpoint, Relay, Source, Transport};

/// Most relays the fleet tracks; more are logged and ignored, so that a
/// mistaken zone cannot make every ICE answer (and every probe round) huge.
pub const MAX_RELAYS: usize = 256;

/// Most addresses kept per relay (A and AAAA together).
pub const MAX_ADDRESSES: usize = 16;

/// Orders `items` as RFC 2782 says a client tries SRV targets: ascending
/// priority; within one priority, a weighted random order where an item of
/// weight `w` comes next with probability `w / (sum of the weights left)`.
///
/// Items of weight 0 are left out altogether (as Wire's SFT discovery does:
/// weight 0 marks a target not to be used), so the result may be shorter.
/// `priority_weight` gives an item's (priority, weight).
pub fn shuffle<T, R: Rng + ?Sized>(
    items: Vec<T>,
    priority_weight: impl Fn(&T) -> (u16, u16),
    rng: &mut R,
) -> Vec<T> {
    shuffle_weighted(
        items,
        |item| {
            let (priority, weight) = priority_weight(item);
            (priority, u64::from(weight))
        },
        rng,
    )
}

/// [`shuffle`] with wider weights, for orders that weigh more than an SRV
/// weight (the ICE endpoint multiplies it by a relay's spare room). The
/// weights of one priority must not sum beyond `u64::MAX`.
pub fn shuffle_weighted<T, R: Rng + ?Sized>(
    items: Vec<T>,
    priority_weight: impl Fn(&T) -> (u16, u64),
    rng: &mut R,
) -> Vec<T> {
    let mut groups: BTreeMap<u16, Vec<(u64, T)>> = BTreeMap::new();
    for item in items {
        let (priority, weight) = priority_weight(&item);
        if weight > 0 {
            groups.entry(priority).or_default().push((weight, item));
        }
    }
    let mut out = Vec::new();
    for (_, mut group) in groups {
        let mut total: u64 = group.iter().map(|(w, _)| w).sum();
        while !group.is_empty() {
            // total >= 1: every weight left is >= 1.
            let pick = rng.random_range(1..=total);
            let mut running = 0;
            let mut chosen = group.len() - 1;
            for (i, (w, _)) in group.iter().enumerate() {
                running += w;
                if running >= pick {
                    chosen = i;
                    break;
                }
            }
            let (w, item) = group.swap_remove(chosen);
            total -= w;
            out.push(item);
        }
    }
    out
}

/// One SRV record as [`relays_from_srv`] needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SrvRecord {
    /// Which of the three names listed it.
    pub transport: Transport,
    /// Target without the trailing dot, lower-cased.
    pub target: String,
    pub port: u16,
    pub priority: u16,
    pub weight: u16,
}

/// Groups SRV records by target into relays, leaving out weight 0 and the
/// "no service" target `.`; relays come sorted by name, endpoints by
/// transport then priority, and at most [`MAX_RELAYS`] (the rest are
/// counted in the second value).
pub(crate) fn relays_from_srv(
    records: &[SrvRecord],
    addresses: &dyn Fn(&str) -> Vec<IpAddr>,
) -> (Vec<Relay>, usize) {
    let mut by_target: BTreeMap<&str, Vec<Endpoint>> = BTreeMap::new();
    for record in records {
        if record.weight == 0 || record.target.is_empty() || record.port == 0 {
            continue;
        }
        let endpoints = by_target.entry(record.target.as_str()).or_default();
        let endpoint = Endpoint {
            transport: record.transport,
            host: record.target.clone(),
            port: record.port,
            priority: record.priority,
            weight: record.weight,
        };
        if !endpoints.contains(&endpoint) {
            endpoints.push(endpoint);
        }
    }
    let dropped = by_target.len().saturating_sub(MAX_RELAYS);
    let relays = by_target
        .into_iter()
        .take(MAX_RELAYS)
        .map(|(name, mut endpoints)| {
            endpoints
                .sort_by_key(|e| (e.transport, e.priority, std::cmp::Reverse(e.weight), e.port));
            let mut addrs = addresses(name);
            // IPv4 first, whatever order the answer had: the first address
            // is the one probed and the one a v4-only answer can use.
            addrs.sort_by_key(IpAddr::is_ipv6);
            addrs.truncate(MAX_ADDRESSES);
            Relay {
                name: name.to_owned(),
                source: Source::Dns,
                endpoints,
                addresses: addrs,
            }
        })
        .collect();
    (relays, dropped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn weight_60_comes_first_about_six_times_in_seven_against_10() {
        let mut rng = StdRng::seed_from_u64(2782);
        let draws = 10_000;
        let mut heavy_first = 0;
        for _ in 0..draws {
            let order = shuffle(
                vec![("light", 0u16, 10u16), ("heavy", 0, 60)],
                |t| (t.1, t.2),
                &mut rng,
            );
            assert_eq!(order.len(), 2);
            if order[0].0 == "heavy" {
                heavy_first += 1;
            }
        }
        // Expected 8571; the binomial standard deviation is 35, so +-200
        // fails only for a broken weighting, not for bad luck.
        let expected = draws * 6 / 7;
        assert!(
            (expected - 200..=expected + 200).contains(&heavy_first),
            "heavy first {heavy_first} of {draws}, expected about {expected}"
        );
    }

    #[test]
    fn equal_weights_are_uniform_over_three() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut first = [0u32; 3];
        for _ in 0..9_000 {
            let order = shuffle(vec![0usize, 1, 2], |_| (5, 1), &mut rng);
            first[order[0]] += 1;
        }
        for count in first {
            assert!((2_700..=3_300).contains(&count), "{first:?}");
        }
    }

    #[test]
    fn lower_priority_always_first_and_zero_weight_never_appears() {
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..1_000 {
            let items = vec![
                ("backup", 20u16, 100u16),
                ("zero", 10, 0),
                ("main-a", 10, 1),
                ("main-b", 10, 1000),
            ];
            let order = shuffle(items, |t| (t.1, t.2), &mut rng);
            let names: Vec<_> = order.iter().map(|t| t.0).collect();
            assert_eq!(names.len(), 3, "{names:?}");
            assert!(!names.contains(&"zero"));
            assert_eq!(names[2], "backup", "{names:?}");
        }
        // Only zero weights: nothing to hand out.
        assert!(shuffle(vec![1, 2, 3], |_| (0, 0), &mut rng).is_empty());
        assert!(shuffle(Vec::<u8>::new(), |_| (0, 1), &mut rng).is_empty());
    }

    #[test]
    fn max_weights_do_not_overflow() {
        let mut rng = StdRng::seed_from_u64(3);
        let items: Vec<u32> = (0..1000).collect();
        let order = shuffle(items, |_| (0, u16::MAX), &mut rng);
        assert_eq!(order.len(), 1000);
    }

    fn rec(transport: Transport, target: &str, port: u16, weight: u16) -> SrvRecord {
        SrvRecord {
            transport,
            target: target.into(),
            port,
            priority: 10,
            weight,
        }
    }

    #[test]
    fn records_group_by_target_and_weight_zero_is_skipped() {
        let records = vec![
            rec(Transport::Tls, "b.example", 5349, 10),
            rec(Transport::Udp, "b.example", 3478, 10),
            rec(Transport::Udp, "a.example", 3478, 60),
            rec(Transport::Tcp, "c.example", 3478, 0),
            rec(Transport::Udp, "b.example", 3478, 10),
        ];
        let (relays, dropped) = relays_from_srv(&records, &|name| {
            if name == "a.example" {
                vec!["192.0.2.1".parse().unwrap()]
            } else {
                vec![]
            }
        });
        assert_eq!(dropped, 0);
        let names: Vec<_> = relays.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["a.example", "b.example"]);
        assert_eq!(
            relays[0].addresses,
            ["192.0.2.1".parse::<IpAddr>().unwrap()]
        );
        let b: Vec<_> = relays[1].endpoints.iter().map(Endpoint::url).collect();
        assert_eq!(
            b,
            [
                "turn:b.example:3478?transport=udp",
                "turns:b.example:5349?transport=tcp"
            ]
        );
        assert!(relays.iter().all(|r| r.source == Source::Dns));
    }

    #[test]
    fn at_most_max_relays() {
        let records: Vec<_> = (0..MAX_RELAYS + 10)
            .map(|i| rec(Transport::Udp, &format!("r{i:04}.example"), 3478, 1))
            .collect();
        let (relays, dropped) = relays_from_srv(&records, &|_| vec![]);
        assert_eq!((relays.len(), dropped), (MAX_RELAYS, 10));
    }
}
