//! DNS SRV discovery: the three SRV names of a domain, then the targets'
//! addresses, through hickory's stub resolver. Also [`DnsTracker`], the
//! pure bookkeeping of rounds and outages behind [`crate::DnsStatus`] (one
//! log line when an outage starts, one when it ends).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use tokio::task::JoinSet;

use crate::srv::{SrvRecord, relays_from_srv};
use crate::{DnsStatus, Relay, Transport};

/// The SRV names under a base domain, with what each one offers.
pub const SRV_NAMES: [(&str, Transport); 3] = [
    ("_turn._udp", Transport::Udp),
    ("_turn._tcp", Transport::Tcp),
    ("_turns._tcp", Transport::Tls),
];

/// Builds the resolver: the given name servers (UDP, and TCP on the same
/// port for truncated answers), or the system's resolv.conf when none are
/// given. No cache (a change in DNS shows at the next round), no hosts file
/// (discovery is about what the zone says), one attempt per round (the next
/// round is the retry, and the last good set is kept meanwhile).
pub(crate) fn resolver(
    name_servers: &[SocketAddr],
    timeout: Duration,
) -> Result<TokioResolver, String> {
    let provider = TokioRuntimeProvider::default();
    let mut builder = if name_servers.is_empty() {
        TokioResolver::builder(provider)
            .map_err(|e| format!("cannot read the system's DNS configuration: {e}"))?
    } else {
        let servers = name_servers
            .iter()
            .map(|addr| {
                let mut udp = ConnectionConfig::udp();
                udp.port = addr.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = addr.port();
                NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
            })
            .collect();
        TokioResolver::builder_with_config(ResolverConfig::from_name_servers(servers), provider)
    };
    let options: &mut ResolverOpts = builder.options_mut();
    options.cache_size = 0;
    options.use_hosts_file = ResolveHosts::Never;
    options.attempts = 1;
    options.timeout = timeout;
    builder
        .build()
        .map_err(|e| format!("cannot set up the DNS resolver: {e}"))
}

/// One discovery round's result.
#[derive(Debug)]
pub(crate) struct Discovered {
    pub relays: Vec<Relay>,
    /// Targets beyond [`crate::MAX_RELAYS`], left out.
    pub dropped: usize,
    /// SRV names whose lookup failed (their records were taken from
    /// `previous`), with why.
    pub partial_failures: Vec<String>,
}

/// One round: the three SRV names, then the targets' addresses. Fails only
/// when all three SRV lookups fail; a name that fails alone keeps its
/// records from `previous` (the last good set), and so does a target whose
/// address lookups fail.
pub(crate) async fn discover(
    resolver: &TokioResolver,
    domain: &str,
    previous: &[Relay],
) -> Result<Discovered, String> {
    let mut lookups = JoinSet::new();
    for (prefix, transport) in SRV_NAMES {
        let resolver = resolver.clone();
        let fqdn = format!("{prefix}.{}.", domain.trim_end_matches('.'));
        lookups.spawn(async move {
            let result = match Name::from_ascii(&fqdn) {
                Ok(name) => classify(resolver.lookup(name, RecordType::SRV).await),
                Err(e) => Err(format!("not a DNS name: {e}")),
            };
            (fqdn, transport, result)
        });
    }
    let mut records = Vec::new();
    let mut additional: HashMap<String, Vec<IpAddr>> = HashMap::new();
    let mut failures = Vec::new();
    while let Some(joined) = lookups.join_next().await {
        let Ok((fqdn, transport, result)) = joined else {
            failures.push("an SRV lookup task ended abnormally".to_owned());
            continue;
        };
        match result {
            Ok(Some(lookup)) => {
                for record in lookup.answers() {
                    if let RData::SRV(srv) = &record.data {
                        records.push(SrvRecord {
                            transport,
                            target: name_text(&srv.target),
                            port: srv.port,
                            priority: srv.priority,
                            weight: srv.weight,
                        });
                    }
                }
                for record in lookup.additionals() {
                    let ip = match &record.data {
                        RData::A(a) => IpAddr::V4(a.0),
                        RData::AAAA(aaaa) => IpAddr::V6(aaaa.0),
                        _ => continue,
                    };
                    let ips = additional.entry(name_text(&record.name)).or_default();
                    if !ips.contains(&ip) {
                        ips.push(ip);
                    }
                }
            }
            // NXDOMAIN or no SRV records: this name offers nothing.
            Ok(None) => {}
            Err(e) => {
                failures.push(format!("{fqdn}: {e}"));
                // Keep what the last good round knew for this transport.
                for relay in previous {
                    for e in relay.endpoints.iter().filter(|e| e.transport == transport) {
                        records.push(SrvRecord {
                            transport,
                            target: relay.name.clone(),
                            port: e.port,
                            priority: e.priority,
                            weight: e.weight,
                        });
                    }
                }
            }
        }
    }
    if failures.len() == SRV_NAMES.len() {
        return Err(failures.join("; "));
    }

    // Addresses of the targets the additional section did not carry.
    // The target "." means "no service here" (RFC 2782): nothing to resolve.
    let mut targets: Vec<&str> = records
        .iter()
        .map(|r| r.target.as_str())
        .filter(|t| !t.is_empty())
        .collect();
    targets.sort_unstable();
    targets.dedup();
    targets.truncate(crate::MAX_RELAYS);
    let mut address_lookups = JoinSet::new();
    for target in targets.iter().filter(|t| !additional.contains_key(**t)) {
        let resolver = resolver.clone();
        let target = (*target).to_owned();
        address_lookups.spawn(async move {
            let addrs = addresses(&resolver, &target).await;
            (target, addrs)
        });
    }
    while let Some(joined) = address_lookups.join_next().await {
        let Ok((target, result)) = joined else {
            continue;
        };
        let addrs = match result {
            Ok(addrs) => addrs,
            Err(e) => {
                tracing::debug!(target = %target, error = %e, "address lookup failed; keeping the last known addresses");
                previous
                    .iter()
                    .find(|r| r.name == target)
                    .map(|r| r.addresses.clone())
                    .unwrap_or_default()
            }
        };
        additional.insert(target, addrs);
    }
    let (relays, dropped) = relays_from_srv(&records, &|name| {
        additional.get(name).cloned().unwrap_or_default()
    });
    Ok(Discovered {
        relays,
        dropped,
        partial_failures: failures,
    })
}

/// A and AAAA of one target, IPv4 first. No records of either kind is an
/// empty list, not an error.
async fn addresses(resolver: &TokioResolver, target: &str) -> Result<Vec<IpAddr>, String> {
    let name = Name::from_ascii(format!("{target}.")).map_err(|e| e.to_string())?;
    let (v4, v6) = tokio::join!(
        resolver.lookup(name.clone(), RecordType::A),
        resolver.lookup(name, RecordType::AAAA)
    );
    let mut out = Vec::new();
    for result in [v4, v6] {
        let Some(lookup) = classify(result)? else {
            continue;
        };
        for record in lookup.answers() {
            let ip = match &record.data {
                RData::A(a) => IpAddr::V4(a.0),
                RData::AAAA(aaaa) => IpAddr::V6(aaaa.0),
                _ => continue,
            };
            if !out.contains(&ip) {
                out.push(ip);
            }
        }
    }
    Ok(out)
}

/// NXDOMAIN and NODATA are answers (nothing there); a timeout, SERVFAIL,
/// REFUSED or a network error is a failure.
fn classify<T>(result: Result<T, NetError>) -> Result<Option<T>, String> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(e) if e.is_no_records_found() => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// A name as the fleet keys it: lower case, no trailing dot.
fn name_text(name: &Name) -> String {
    name.to_ascii().trim_end_matches('.').to_ascii_lowercase()
}

/// How an outage of DNS discovery changed, for one log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outage {
    Started,
    Ended { lasted: Duration },
}

/// Counts rounds and tracks outages: [`DnsStatus`] and its transitions.
#[derive(Debug, Clone, Default)]
pub(crate) struct DnsTracker {
    pub status: DnsStatus,
}

impl DnsTracker {
    pub fn success(&mut self, now: SystemTime) -> Option<Outage> {
        self.status.lookups += 1;
        self.status.last_success = Some(now);
        self.status.failing_since.take().map(|since| Outage::Ended {
            lasted: now.duration_since(since).unwrap_or_default(),
        })
    }

    pub fn failure(&mut self, now: SystemTime) -> Option<Outage> {
        self.status.lookups += 1;
        self.status.failures += 1;
        if self.status.failing_since.is_none() {
            self.status.failing_since = Some(now);
            Some(Outage::Started)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_is_one_start_and_one_end() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let mut tracker = DnsTracker::default();
        assert_eq!(tracker.success(t0), None);
        assert_eq!(
            tracker.failure(t0 + Duration::from_secs(60)),
            Some(Outage::Started)
        );
        assert_eq!(tracker.failure(t0 + Duration::from_secs(120)), None);
        assert_eq!(tracker.failure(t0 + Duration::from_secs(180)), None);
        assert_eq!(
            tracker.status.failing_since,
            Some(t0 + Duration::from_secs(60))
        );
        assert_eq!(
            tracker.success(t0 + Duration::from_secs(240)),
            Some(Outage::Ended {
                lasted: Duration::from_secs(180)
            })
        );
        assert_eq!(tracker.success(t0 + Duration::from_secs(300)), None);
        let s = &tracker.status;
        assert_eq!((s.lookups, s.failures, s.failing_since), (6, 3, None));
        assert_eq!(s.last_success, Some(t0 + Duration::from_secs(300)));
    }
}
