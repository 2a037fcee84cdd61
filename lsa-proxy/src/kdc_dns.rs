//! Finding a realm's KDCs in DNS: the SRV records `_kerberos._udp.REALM` and
//! `_kerberos._tcp.REALM` (RFC 4120 7.2.3.2; `_kpasswd._udp`/`_kpasswd._tcp` for password
//! changes), in the order RFC 2782 gives them, and the addresses of their targets (A, AAAA) from
//! the same servers: in Active Directory the targets are DCs that often only the domain's own DNS
//! knows.
//!
//! hickory-proto builds and parses the messages; the exchange is a few lines on tokio here (UDP,
//! TCP when the reply is truncated). hickory-resolver was not taken: on top of hickory-proto it
//! brings its own runtime glue and cache (hickory-net, moka, crossbeam, parking_lot: 15 more
//! crates) for the handful of queries the proxy makes.
//!
//! Every answer is hostile. A reply is read only if it answers the query (id, question; on UDP
//! only from the server asked), only records that answer the question (or give an SRV target's
//! address) are used, counts, names, TTLs and times are bounded, and the worst a forged answer can
//! do is make the proxy try other addresses, whose replies the enclave checks like any KDC's.

use std::collections::HashMap;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use ring::rand::SecureRandom;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tracing::debug;

/// The DNS port.
pub const DNS_PORT: u16 = 53;
/// Where the system's resolver is configured (its `nameserver` lines are the default servers).
pub const RESOLV_CONF: &str = "/etc/resolv.conf";
/// How long one server may take to answer one query (over UDP, and again over TCP after a
/// truncated reply).
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// Servers asked at most (glibc's resolver asks 3).
pub const MAX_SERVERS: usize = 4;
/// SRV records taken from one answer.
const MAX_SRV: usize = 16;
/// Targets resolved per service.
const MAX_TARGETS: usize = 8;
/// Addresses taken per target and address family.
const MAX_ADDRS: usize = 4;
/// CNAMEs followed within one answer.
const MAX_CNAMES: usize = 8;
/// Datagrams that do not answer the query read from one server before giving up on it.
const MAX_STRAY_REPLIES: usize = 8;
/// Answers cached at most.
const MAX_CACHED: usize = 256;
/// Longest time an answer is cached, whatever its TTL says.
const MAX_TTL: u32 = 3600;
/// Longest time "no such record" is cached.
const MAX_NEGATIVE_TTL: u32 = 60;
/// Longest host name taken from an answer.
const MAX_HOST_LEN: usize = 253;
/// Largest resolv.conf read.
const MAX_RESOLV_CONF_LEN: u64 = 64 * 1024;

/// One SRV record (RFC 2782); its target a lowercase host name without the final dot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Srv {
    /// Lower is tried first.
    pub priority: u16,
    /// Share of the draw among records of the same priority.
    pub weight: u16,
    /// The service's port on the target.
    pub port: u16,
    /// The host.
    pub target: String,
}

/// A server a service lookup found, in the order to try it, with the addresses the DNS servers
/// gave for its name (empty if they gave none: the system resolver then gets its chance).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Its host name.
    pub host: String,
    /// Its port.
    pub port: u16,
    /// Its addresses, IPv4 first.
    pub addrs: Vec<IpAddr>,
}

/// Why a lookup failed: the name asked and what each server did.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DnsError(pub String);

#[derive(Debug, Clone)]
enum Answer {
    Srv(Vec<Srv>),
    Addrs(Vec<IpAddr>),
}

type CacheKey = (String, RecordType);

/// A DNS client for the proxy's few queries, with a small cache.
pub struct DnsResolver {
    servers: Option<Vec<SocketAddr>>,
    timeout: Duration,
    cache: Mutex<HashMap<CacheKey, (Instant, Answer)>>,
}

/// A DNS server as the configuration gives it: `ip:port`, `[v6]:port`, or an address alone
/// (port 53).
pub fn parse_server(s: &str) -> Option<SocketAddr> {
    s.parse::<SocketAddr>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, DNS_PORT)))
        .filter(|a| a.port() != 0)
}

/// The `nameserver` lines of a resolv.conf (a zone index on a link-local address is dropped).
pub fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            if words.next()? != "nameserver" {
                return None;
            }
            let ip = words.next()?.split('%').next()?.parse::<IpAddr>().ok()?;
            Some(SocketAddr::new(ip, DNS_PORT))
        })
        .take(MAX_SERVERS)
        .collect()
}

impl DnsResolver {
    /// A client asking `servers`, or the nameservers of /etc/resolv.conf (read at each lookup
    /// that misses the cache) when `None`.
    pub fn new(servers: Option<Vec<SocketAddr>>) -> Self {
        DnsResolver {
            servers,
            timeout: QUERY_TIMEOUT,
            cache: Mutex::default(),
        }
    }

    /// The same with another per-query timeout (tests).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The servers asked, in order: the configured ones, else resolv.conf's, else 127.0.0.1
    /// (glibc's default when resolv.conf names none).
    pub fn servers(&self) -> Vec<SocketAddr> {
        if let Some(servers) = &self.servers {
            return servers.iter().copied().take(MAX_SERVERS).collect();
        }
        let mut text = String::new();
        let read = std::fs::File::open(RESOLV_CONF).and_then(|f| f.take(MAX_RESOLV_CONF_LEN).read_to_string(&mut text));
        let found = read.map(|_| parse_resolv_conf(&text)).unwrap_or_default();
        if found.is_empty() {
            vec![SocketAddr::new(Ipv4Addr::LOCALHOST.into(), DNS_PORT)]
        } else {
            found
        }
    }

    /// The servers of `service` (`_kerberos`, `_kpasswd`) for `realm`: its `_udp` records, then
    /// those `_tcp` records whose target and port `_udp` did not list (the proxy tries both
    /// transports with every server), each in RFC 2782 order, each target with its addresses.
    /// An empty list if the realm has no such records; an error if it has none and a lookup
    /// failed.
    pub async fn service(&self, service: &str, realm: &str) -> Result<Vec<Target>, DnsError> {
        let servers = self.servers();
        let (udp_name, tcp_name) = (format!("{service}._udp.{realm}"), format!("{service}._tcp.{realm}"));
        let (udp, tcp) = tokio::join!(self.srv(&servers, &udp_name), self.srv(&servers, &tcp_name));
        let failed: Vec<String> = [&udp, &tcp]
            .into_iter()
            .filter_map(|r| r.as_ref().err())
            .map(ToString::to_string)
            .collect();
        let mut records = rfc2782_order(udp.unwrap_or_default(), random_draw);
        for r in rfc2782_order(tcp.unwrap_or_default(), random_draw) {
            if !records.iter().any(|a| a.target == r.target && a.port == r.port) {
                records.push(r);
            }
        }
        // No records and a failure: the failure is the answer, not "no such records".
        if records.is_empty() && !failed.is_empty() {
            return Err(DnsError(failed.join("; ")));
        }
        let targets = records.into_iter().take(MAX_TARGETS).map(|r| {
            let servers = &servers;
            async move {
                let addrs = self.addrs(servers, &r.target).await;
                Target {
                    host: r.target,
                    port: r.port,
                    addrs,
                }
            }
        });
        Ok(futures_util::future::join_all(targets).await)
    }

    /// The SRV records of `name` (cached), in the answer's order.
    async fn srv(&self, servers: &[SocketAddr], name: &str) -> Result<Vec<Srv>, DnsError> {
        let name = dns_name(name)?;
        if let Some(Answer::Srv(records)) = self.cached(&name, RecordType::SRV) {
            return Ok(records);
        }
        let reply = query(servers, &name, RecordType::SRV, self.timeout).await?;
        let (records, ttl) = srv_records(&reply, &owners(&reply, &name));
        // The additional section may carry the targets' addresses: saved, they spare queries.
        for r in &records {
            for rtype in [RecordType::A, RecordType::AAAA] {
                if let Ok(target) = dns_name(&r.target) {
                    let (addrs, ttl) = addresses(&reply.additionals, std::slice::from_ref(&target), rtype);
                    if !addrs.is_empty() {
                        self.store(&target, rtype, ttl, Answer::Addrs(addrs));
                    }
                }
            }
        }
        let ttl = if records.is_empty() { negative_ttl(&reply) } else { ttl };
        self.store(&name, RecordType::SRV, ttl, Answer::Srv(records.clone()));
        Ok(records)
    }

    /// The addresses of `host` (A then AAAA, cached); none if the servers give none.
    async fn addrs(&self, servers: &[SocketAddr], host: &str) -> Vec<IpAddr> {
        let Ok(name) = dns_name(host) else {
            return Vec::new();
        };
        let (v4, v6) = tokio::join!(
            self.addrs_of(servers, &name, RecordType::A),
            self.addrs_of(servers, &name, RecordType::AAAA)
        );
        let mut out = Vec::new();
        for found in [v4, v6] {
            match found {
                Ok(addrs) => out.extend(addrs),
                Err(e) => debug!(host, error = %e, "an SRV target's addresses were not found"),
            }
        }
        out
    }

    async fn addrs_of(&self, servers: &[SocketAddr], name: &Name, rtype: RecordType) -> Result<Vec<IpAddr>, DnsError> {
        if let Some(Answer::Addrs(addrs)) = self.cached(name, rtype) {
            return Ok(addrs);
        }
        let reply = query(servers, name, rtype, self.timeout).await?;
        let (addrs, ttl) = addresses(&reply.answers, &owners(&reply, name), rtype);
        let ttl = if addrs.is_empty() { negative_ttl(&reply) } else { ttl };
        self.store(name, rtype, ttl, Answer::Addrs(addrs.clone()));
        Ok(addrs)
    }

    fn cached(&self, name: &Name, rtype: RecordType) -> Option<Answer> {
        let cache = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (expires, answer) = cache.get(&(cache_name(name), rtype))?;
        (*expires > Instant::now()).then(|| answer.clone())
    }

    /// Caches `answer` for `ttl` seconds (at most [`MAX_TTL`]); when full, expired answers go
    /// first, then the one closest to expiry.
    fn store(&self, name: &Name, rtype: RecordType, ttl: u32, answer: Answer) {
        let ttl = ttl.min(MAX_TTL);
        if ttl == 0 {
            return;
        }
        let now = Instant::now();
        let key = (cache_name(name), rtype);
        let mut cache = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        cache.retain(|_, (expires, _)| *expires > now);
        if cache.len() >= MAX_CACHED && !cache.contains_key(&key) {
            let soonest = cache
                .iter()
                .min_by_key(|(_, (expires, _))| *expires)
                .map(|(k, _)| k.clone());
            if let Some(k) = soonest {
                cache.remove(&k);
            }
        }
        cache.insert(key, (now + Duration::from_secs(ttl.into()), answer));
    }
}

fn cache_name(name: &Name) -> String {
    name.to_ascii().to_ascii_lowercase()
}

/// `name` as an absolute DNS name, if it is a plain host name (letters, digits, `-`, `_`, `.`).
fn dns_name(name: &str) -> Result<Name, DnsError> {
    let bare = name.strip_suffix('.').unwrap_or(name);
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if bare.is_empty() || bare.len() > MAX_HOST_LEN || !bare.chars().all(plain) || bare.contains("..") {
        return Err(DnsError(format!("{name:?} is not a DNS name")));
    }
    Name::from_ascii(format!("{bare}.")).map_err(|e| DnsError(format!("{name:?} is not a DNS name: {e}")))
}

/// A name from an answer as a lowercase host name without the final dot; `None` for the root
/// (an SRV target "." says the service is not offered) and for names no host has.
fn host_name(name: &Name) -> Option<String> {
    if name.is_root() {
        return None;
    }
    let text = name.to_ascii().to_ascii_lowercase();
    let text = text.strip_suffix('.').unwrap_or(&text);
    dns_name(text).ok().map(|_| text.to_string())
}

/// The names the answer's records for `qname` may carry: `qname` and the CNAME chain from it.
fn owners(reply: &Message, qname: &Name) -> Vec<Name> {
    let mut names = vec![qname.clone()];
    for _ in 0..MAX_CNAMES {
        let Some(last) = names.last() else { break };
        let next = reply.answers.iter().find_map(|r| match &r.data {
            RData::CNAME(c) if r.name == *last => Some(c.0.clone()),
            _ => None,
        });
        match next {
            Some(n) if !names.contains(&n) => names.push(n),
            _ => break,
        }
    }
    names
}

/// The SRV records among the answers owned by `owners` (bounded, without duplicates, none with
/// port 0 or an odd target) and the smallest TTL among them.
fn srv_records(reply: &Message, owners: &[Name]) -> (Vec<Srv>, u32) {
    let mut out: Vec<Srv> = Vec::new();
    let mut ttl = MAX_TTL;
    for r in reply.answers.iter().filter(|r| owners.contains(&r.name)) {
        let RData::SRV(s) = &r.data else { continue };
        let Some(target) = host_name(&s.target) else { continue };
        if s.port == 0 || out.len() >= MAX_SRV || out.iter().any(|o| o.target == target && o.port == s.port) {
            continue;
        }
        ttl = ttl.min(r.ttl);
        out.push(Srv {
            priority: s.priority,
            weight: s.weight,
            port: s.port,
            target,
        });
    }
    (out, ttl)
}

/// The addresses of type `rtype` among `records` owned by `owners` (bounded, without
/// duplicates) and the smallest TTL among them.
fn addresses(records: &[Record], owners: &[Name], rtype: RecordType) -> (Vec<IpAddr>, u32) {
    let mut out = Vec::new();
    let mut ttl = MAX_TTL;
    for r in records.iter().filter(|r| owners.contains(&r.name)) {
        let ip: IpAddr = match (&r.data, rtype) {
            (RData::A(a), RecordType::A) => a.0.into(),
            (RData::AAAA(a), RecordType::AAAA) => a.0.into(),
            _ => continue,
        };
        if out.len() < MAX_ADDRS && !out.contains(&ip) {
            ttl = ttl.min(r.ttl);
            out.push(ip);
        }
    }
    (out, ttl)
}

/// How long "no such record" may be cached: the SOA's TTL and minimum (RFC 2308), at most
/// [`MAX_NEGATIVE_TTL`]; not at all without a SOA.
fn negative_ttl(reply: &Message) -> u32 {
    reply
        .authorities
        .iter()
        .find_map(|r| match &r.data {
            RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
            _ => None,
        })
        .map_or(0, |ttl| ttl.min(MAX_NEGATIVE_TTL))
}

/// Asks `servers` in turn for `name`/`rtype`; the first answer (records or "no such name") is
/// returned, a server that fails or answers SERVFAIL/REFUSED passes to the next.
async fn query(servers: &[SocketAddr], name: &Name, rtype: RecordType, timeout: Duration) -> Result<Message, DnsError> {
    let mut q = Message::query();
    q.metadata.recursion_desired = true;
    q.add_query(Query::query(name.clone(), rtype));
    let bytes = q.to_vec().map_err(|e| DnsError(format!("{name} {rtype}: {e}")))?;
    let mut failures = Vec::new();
    for &server in servers.iter().take(MAX_SERVERS) {
        match exchange(server, &q, &bytes, timeout).await {
            Ok(r) if matches!(r.metadata.response_code, ResponseCode::NoError | ResponseCode::NXDomain) => {
                return Ok(r);
            }
            Ok(r) => failures.push(format!("{server} answered {}", r.metadata.response_code)),
            Err(e) => failures.push(format!("{server}: {e}")),
        }
    }
    if failures.is_empty() {
        failures.push("no DNS server to ask".into());
    }
    Err(DnsError(format!("{name} {rtype}: {}", failures.join(", "))))
}

async fn exchange(server: SocketAddr, q: &Message, bytes: &[u8], timeout: Duration) -> Result<Message, String> {
    let reply = tokio::time::timeout(timeout, udp(server, q, bytes))
        .await
        .map_err(|_| "no answer (timed out)".to_string())??;
    if !reply.metadata.truncation {
        return Ok(reply);
    }
    tokio::time::timeout(timeout, tcp(server, q, bytes))
        .await
        .map_err(|_| "a truncated answer over UDP and none over TCP (timed out)".to_string())?
}

fn is_reply_to(q: &Message, r: &Message) -> bool {
    r.metadata.id == q.metadata.id && r.metadata.message_type == MessageType::Response && r.queries == q.queries
}

async fn udp(server: SocketAddr, q: &Message, bytes: &[u8]) -> Result<Message, String> {
    let io = |e: std::io::Error| e.to_string();
    let bind: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(bind).await.map_err(io)?;
    // Connected: datagrams from anywhere but the server are not even read.
    sock.connect(server).await.map_err(io)?;
    sock.send(bytes).await.map_err(io)?;
    let mut buf = vec![0u8; 65_535];
    for _ in 0..MAX_STRAY_REPLIES {
        let n = sock.recv(&mut buf).await.map_err(io)?;
        if let Ok(reply) = Message::from_vec(&buf[..n])
            && is_reply_to(q, &reply)
        {
            return Ok(reply);
        }
    }
    Err("only datagrams that do not answer the query".into())
}

async fn tcp(server: SocketAddr, q: &Message, bytes: &[u8]) -> Result<Message, String> {
    let io = |e: std::io::Error| e.to_string();
    let len = u16::try_from(bytes.len()).map_err(|_| "query too long".to_string())?;
    let mut s = TcpStream::connect(server).await.map_err(io)?;
    let mut msg = Vec::with_capacity(2 + bytes.len());
    msg.extend_from_slice(&len.to_be_bytes());
    msg.extend_from_slice(bytes);
    s.write_all(&msg).await.map_err(io)?;
    let mut len = [0u8; 2];
    s.read_exact(&mut len).await.map_err(io)?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut buf).await.map_err(io)?;
    let reply = Message::from_vec(&buf).map_err(|e| format!("a malformed answer over TCP: {e}"))?;
    if !is_reply_to(q, &reply) {
        return Err("an answer over TCP to another query".into());
    }
    Ok(reply)
}

/// Orders SRV records as RFC 2782 says: by priority, lowest first; within one priority by a
/// weighted draw without replacement, `draw(total)` giving a number in `0..=total` (records of
/// weight 0 are placed first, so they come first only when the draw is 0).
pub fn rfc2782_order(mut records: Vec<Srv>, mut draw: impl FnMut(u32) -> u32) -> Vec<Srv> {
    records.sort_by_key(|r| r.priority);
    let mut out = Vec::with_capacity(records.len());
    for group in records.chunk_by(|a, b| a.priority == b.priority) {
        let (zero, weighted): (Vec<&Srv>, Vec<&Srv>) = group.iter().partition(|r| r.weight == 0);
        let mut left: Vec<Srv> = zero.into_iter().chain(weighted).cloned().collect();
        while !left.is_empty() {
            let total: u32 = left.iter().map(|r| u32::from(r.weight)).sum();
            let pick = draw(total).min(total);
            let mut sum = 0;
            let at = left
                .iter()
                .position(|r| {
                    sum += u32::from(r.weight);
                    sum >= pick
                })
                .unwrap_or(0);
            out.push(left.remove(at));
        }
    }
    out
}

/// A uniform number in `0..=max` (the draw of [`rfc2782_order`]); 0 if the system has no
/// randomness to give, which only makes the order the answer's.
fn random_draw(max: u32) -> u32 {
    let mut bytes = [0u8; 4];
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        return 0;
    }
    let n = u32::from_be_bytes(bytes);
    max.checked_add(1).map_or(n, |m| n % m)
}

/// A scripted DNS server on loopback for the tests of this module and of [`crate::kdcs`].
#[cfg(test)]
pub(crate) mod fake {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use hickory_proto::op::{Message, MessageType, OpCode};
    use hickory_proto::rr::rdata::{A, AAAA, CNAME, SOA, SRV};
    use hickory_proto::rr::{Name, RData, Record};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, UdpSocket};

    /// Answers a query (and whether it came over TCP) with raw messages: several datagrams over
    /// UDP (none: silence), the first one over TCP.
    pub type Handler = Arc<dyn Fn(&Message, bool) -> Vec<Vec<u8>> + Send + Sync>;

    /// The running server; stopped when dropped.
    pub struct FakeDns {
        pub addr: SocketAddr,
        pub queries: Arc<AtomicUsize>,
        tasks: Vec<tokio::task::JoinHandle<()>>,
    }

    impl Drop for FakeDns {
        fn drop(&mut self) {
            self.tasks.iter().for_each(tokio::task::JoinHandle::abort);
        }
    }

    impl FakeDns {
        pub fn count(&self) -> usize {
            self.queries.load(Ordering::SeqCst)
        }
    }

    /// Starts a server on UDP and TCP of one loopback port.
    pub async fn start(handler: Handler) -> FakeDns {
        let (udp, tcp) = loop {
            let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            if let Ok(tcp) = TcpListener::bind(udp.local_addr().unwrap()).await {
                break (udp, tcp);
            }
        };
        let addr = udp.local_addr().unwrap();
        let queries = Arc::new(AtomicUsize::new(0));
        let (h, n) = (handler.clone(), queries.clone());
        let udp_task = tokio::spawn(async move {
            let mut buf = vec![0u8; 65_535];
            while let Ok((len, from)) = udp.recv_from(&mut buf).await {
                let Ok(q) = Message::from_vec(&buf[..len]) else {
                    continue;
                };
                n.fetch_add(1, Ordering::SeqCst);
                for datagram in h(&q, false) {
                    let _ = udp.send_to(&datagram, from).await;
                }
            }
        });
        let (h, n) = (handler, queries.clone());
        let tcp_task = tokio::spawn(async move {
            while let Ok((mut s, _)) = tcp.accept().await {
                let mut len = [0u8; 2];
                if s.read_exact(&mut len).await.is_err() {
                    continue;
                }
                let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
                if s.read_exact(&mut buf).await.is_err() {
                    continue;
                }
                let Ok(q) = Message::from_vec(&buf) else { continue };
                n.fetch_add(1, Ordering::SeqCst);
                if let Some(reply) = h(&q, true).into_iter().next() {
                    let mut out = (reply.len() as u16).to_be_bytes().to_vec();
                    out.extend_from_slice(&reply);
                    let _ = s.write_all(&out).await;
                }
            }
        });
        FakeDns {
            addr,
            queries,
            tasks: vec![udp_task, tcp_task],
        }
    }

    /// An empty answer to `q` (same id and question).
    pub fn reply(q: &Message) -> Message {
        let mut r = Message::new(q.metadata.id, MessageType::Response, OpCode::Query);
        r.metadata.recursion_desired = true;
        r.metadata.recursion_available = true;
        r.queries = q.queries.clone();
        r
    }

    pub fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    /// The first question's name, lowercase, without the final dot, and its type.
    pub fn question(q: &Message) -> (String, hickory_proto::rr::RecordType) {
        let query = &q.queries[0];
        let n = query.name().to_ascii().to_ascii_lowercase();
        (n.trim_end_matches('.').to_string(), query.query_type())
    }

    pub fn srv(owner: &str, priority: u16, weight: u16, port: u16, target: &str) -> Record {
        Record::from_rdata(
            name(owner),
            300,
            RData::SRV(SRV::new(priority, weight, port, name(target))),
        )
    }

    pub fn a(owner: &str, ip: [u8; 4]) -> Record {
        Record::from_rdata(name(owner), 300, RData::A(A(ip.into())))
    }

    pub fn aaaa(owner: &str, ip: std::net::Ipv6Addr) -> Record {
        Record::from_rdata(name(owner), 300, RData::AAAA(AAAA(ip)))
    }

    pub fn cname(owner: &str, target: &str) -> Record {
        Record::from_rdata(name(owner), 300, RData::CNAME(CNAME(name(target))))
    }

    pub fn soa(zone: &str, ttl: u32) -> Record {
        let data = SOA::new(name(zone), name(zone), 1, 900, 600, 86400, 3600);
        Record::from_rdata(name(zone), ttl, RData::SOA(data))
    }

    /// A handler serving a zone like the Samba DC's: SRV records of `_kerberos` and `_kpasswd`
    /// over UDP and TCP pointing at dc1.corp.test (port 88 and 464), which has `dc1`.
    pub fn corp_zone(dc1: [u8; 4]) -> Handler {
        Arc::new(move |q, _| {
            let mut r = reply(q);
            let (n, _) = question(q);
            match n.as_str() {
                "_kerberos._udp.corp.test" | "_kerberos._tcp.corp.test" => {
                    r.add_answer(srv(&format!("{n}."), 0, 100, 88, "dc1.corp.test."));
                }
                "_kpasswd._udp.corp.test" | "_kpasswd._tcp.corp.test" => {
                    r.add_answer(srv(&format!("{n}."), 0, 100, 464, "dc1.corp.test."));
                }
                "dc1.corp.test" if q.queries[0].query_type() == hickory_proto::rr::RecordType::A => {
                    r.add_answer(a("dc1.corp.test.", dc1));
                }
                _ => {
                    r.metadata.response_code = hickory_proto::op::ResponseCode::NXDomain;
                    r.add_authority(soa("corp.test.", 3600));
                }
            }
            vec![r.to_vec().unwrap()]
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::fake::{self, FakeDns, Handler};
    use super::*;

    fn rec(priority: u16, weight: u16, target: &str) -> Srv {
        Srv {
            priority,
            weight,
            port: 88,
            target: target.into(),
        }
    }

    fn targets(v: &[Srv]) -> Vec<&str> {
        v.iter().map(|r| r.target.as_str()).collect()
    }

    #[test]
    fn srv_records_are_ordered_by_priority_then_weighted_draw() {
        let records = vec![
            rec(10, 0, "c"),
            rec(0, 10, "a1"),
            rec(0, 30, "a2"),
            rec(5, 0, "b"),
            rec(0, 0, "a0"),
        ];
        // Draw 0: the zero-weight record of each priority comes first, then list order.
        assert_eq!(
            targets(&rfc2782_order(records.clone(), |_| 0)),
            ["a0", "a1", "a2", "b", "c"]
        );
        // The largest draw takes the last record of the running sum each time.
        assert_eq!(
            targets(&rfc2782_order(records.clone(), |total| total)),
            ["a2", "a1", "a0", "b", "c"]
        );
        // Draws between: 11 of 0+10+30 falls in a2's share; then 0..=10 among a0, a1 -> 5 is a1's.
        let mut draws = vec![11, 5, 0, 0, 0].into_iter();
        assert_eq!(
            targets(&rfc2782_order(records.clone(), |_| draws.next().unwrap())),
            ["a2", "a1", "a0", "b", "c"]
        );
        // A draw beyond the total (a bad random source) is clamped, never out of bounds.
        assert_eq!(
            targets(&rfc2782_order(records, |_| u32::MAX)),
            ["a2", "a1", "a0", "b", "c"]
        );
        assert!(rfc2782_order(Vec::new(), |_| 0).is_empty());
        // Over many real draws, weight 3:1 shows in who comes first (no time, no exact count).
        let pair = vec![rec(0, 3, "heavy"), rec(0, 1, "light")];
        let heavy_first = (0..2000)
            .filter(|_| rfc2782_order(pair.clone(), random_draw)[0].target == "heavy")
            .count();
        assert!((1200..1900).contains(&heavy_first), "{heavy_first}");
    }

    #[test]
    fn servers_and_names_are_checked() {
        assert_eq!(parse_server("127.0.0.1:53"), Some("127.0.0.1:53".parse().unwrap()));
        assert_eq!(parse_server("10.1.2.3"), Some("10.1.2.3:53".parse().unwrap()));
        assert_eq!(parse_server("::1"), Some("[::1]:53".parse().unwrap()));
        assert_eq!(parse_server("[::1]:5353"), Some("[::1]:5353".parse().unwrap()));
        for bad in ["", "dns.example", "dns.example:53", "1.2.3.4:0", "1.2.3.4:x"] {
            assert_eq!(parse_server(bad), None, "{bad}");
        }
        let conf = "# comment\nsearch corp.test\nnameserver 10.0.0.2\nnameserver fe80::1%eth0\nnameserver bogus\n\
                    options ndots:2\nnameserver 10.0.0.3\nnameserver 10.0.0.4\nnameserver 10.0.0.5\nnameserver 10.0.0.6\n";
        let servers: Vec<String> = parse_resolv_conf(conf).iter().map(ToString::to_string).collect();
        assert_eq!(servers, ["10.0.0.2:53", "[fe80::1]:53", "10.0.0.3:53", "10.0.0.4:53"]);
        assert!(dns_name("_kerberos._udp.CORP.TEST").is_ok());
        let long = format!("{}.test", "a".repeat(64));
        for bad in ["", ".", "a..b", "a b", "a/b", "x@y", "caf\u{e9}.test", long.as_str()] {
            assert!(dns_name(bad).is_err(), "{bad:?}");
        }
        assert!(host_name(&Name::root()).is_none());
        assert_eq!(
            host_name(&fake::name("DC1.Corp.Test.")).as_deref(),
            Some("dc1.corp.test")
        );
        assert!(host_name(&Name::from_labels(vec![&b"a b"[..], b"test"]).unwrap()).is_none());
    }

    fn resolver(servers: &[&FakeDns]) -> DnsResolver {
        DnsResolver::new(Some(servers.iter().map(|s| s.addr).collect())).with_timeout(Duration::from_millis(300))
    }

    #[tokio::test]
    async fn srv_targets_are_resolved_through_the_same_servers_and_cached() {
        let dns = fake::start(fake::corp_zone([127, 0, 0, 7])).await;
        let r = resolver(&[&dns]);
        let found = r.service("_kerberos", "corp.test").await.unwrap();
        assert_eq!(
            found,
            [Target {
                host: "dc1.corp.test".into(),
                port: 88,
                addrs: vec!["127.0.0.7".parse().unwrap()],
            }]
        );
        let asked = dns.count();
        assert_eq!(r.service("_kerberos", "CORP.TEST").await.unwrap(), found);
        assert_eq!(dns.count(), asked, "the second lookup is answered from the cache");
        let kpasswd = r.service("_kpasswd", "corp.test").await.unwrap();
        assert_eq!(kpasswd[0].port, 464);
        // No records: an empty list, not an error.
        assert!(r.service("_kerberos", "other.test").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_lookup_nobody_answers_names_the_name_and_the_servers() {
        let silent = fake::start(Arc::new(|_, _| Vec::new())).await;
        let refusing = fake::start(Arc::new(|q, _| {
            let mut r = fake::reply(q);
            r.metadata.response_code = ResponseCode::Refused;
            vec![r.to_vec().unwrap()]
        }))
        .await;
        let e = resolver(&[&silent, &refusing])
            .service("_kerberos", "corp.test")
            .await
            .unwrap_err();
        let text = e.to_string();
        assert!(text.contains("_kerberos._udp.corp.test."), "{text}");
        assert!(
            text.contains(&format!("{}: no answer (timed out)", silent.addr)),
            "{text}"
        );
        assert!(
            text.contains(&format!("{} answered Query Refused", refusing.addr)),
            "{text}"
        );
        // The next server answers after one that failed.
        let good = fake::start(fake::corp_zone([127, 0, 0, 1])).await;
        let found = resolver(&[&refusing, &silent, &good])
            .service("_kerberos", "corp.test")
            .await
            .unwrap();
        assert_eq!(found[0].addrs, ["127.0.0.1".parse::<IpAddr>().unwrap()]);
    }

    #[tokio::test]
    async fn replies_that_do_not_answer_the_query_are_ignored() {
        let inner = fake::corp_zone([127, 0, 0, 9]);
        let noisy: Handler = Arc::new(move |q, tcp| {
            let good = inner(q, tcp);
            let mut wrong_id = Message::from_vec(&good[0]).unwrap();
            wrong_id.metadata.id = q.metadata.id.wrapping_add(1);
            let mut other_question = fake::reply(q);
            other_question.queries[0].set_name(fake::name("evil.test."));
            other_question.add_answer(fake::srv("evil.test.", 0, 0, 88, "evil.test."));
            let mut a_query = fake::reply(q);
            a_query.metadata.message_type = MessageType::Query;
            let mut out = vec![
                b"garbage".to_vec(),
                Vec::new(),
                wrong_id.to_vec().unwrap(),
                other_question.to_vec().unwrap(),
                a_query.to_vec().unwrap(),
            ];
            out.extend(good);
            out
        });
        let dns = fake::start(noisy).await;
        let found = resolver(&[&dns]).service("_kerberos", "corp.test").await.unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].host, "dc1.corp.test");
        // Only junk, more of it than the server is given the benefit of the doubt for: an error.
        let junk = fake::start(Arc::new(|_, _| vec![b"junk".to_vec(); 20])).await;
        let e = resolver(&[&junk]).service("_kerberos", "corp.test").await.unwrap_err();
        assert!(e.to_string().contains("do not answer the query"), "{e}");
    }

    #[tokio::test]
    async fn a_truncated_answer_is_asked_again_over_tcp() {
        let handler: Handler = Arc::new(|q, tcp| {
            let mut r = fake::reply(q);
            let (n, _) = fake::question(q);
            if !tcp {
                r.metadata.truncation = true;
            } else if n.starts_with("_kerberos") {
                r.add_answer(fake::srv(&format!("{n}."), 0, 0, 88, "kdc.big.test."));
                // The additional section gives the target's address: no A query is needed.
                r.add_additional(fake::a("kdc.big.test.", [127, 0, 0, 5]));
                r.add_additional(fake::a("unrelated.test.", [10, 9, 9, 9]));
            }
            vec![r.to_vec().unwrap()]
        });
        let dns = fake::start(handler).await;
        let r = resolver(&[&dns]);
        let found = r.service("_kerberos", "big.test").await.unwrap();
        assert_eq!(found[0].addrs, ["127.0.0.5".parse::<IpAddr>().unwrap()]);
        assert!(r.cached(&fake::name("kdc.big.test."), RecordType::A).is_some());
        assert!(
            r.cached(&fake::name("unrelated.test."), RecordType::A).is_none(),
            "an address for a name that is no target is not taken"
        );
    }

    #[tokio::test]
    async fn hostile_answers_are_bounded() {
        let handler: Handler = Arc::new(|q, _| {
            let mut r = fake::reply(q);
            let (n, rtype) = fake::question(q);
            let owner = format!("{n}.");
            match rtype {
                RecordType::SRV => {
                    for i in 0..200u16 {
                        r.add_answer(fake::srv(&owner, i % 3, i, 88, &format!("t{i}.hostile.test.")));
                    }
                    r.add_answer(fake::srv(&owner, 0, 0, 0, "port0.hostile.test."));
                    r.add_answer(fake::srv("other.test.", 0, 0, 88, "elsewhere.test."));
                }
                // A CNAME loop, then more addresses than are taken.
                _ => {
                    r.add_answer(fake::cname(&owner, "loop.hostile.test."));
                    r.add_answer(fake::cname("loop.hostile.test.", &owner));
                    for i in 0..50u8 {
                        r.add_answer(fake::a("loop.hostile.test.", [127, 0, 1, i]));
                        r.add_answer(fake::aaaa(&owner, std::net::Ipv6Addr::LOCALHOST));
                    }
                }
            }
            vec![r.to_vec().unwrap()]
        });
        let dns = fake::start(handler).await;
        let found = resolver(&[&dns]).service("_kerberos", "hostile.test").await.unwrap();
        assert_eq!(found.len(), MAX_TARGETS);
        for t in &found {
            assert!(t.host.ends_with(".hostile.test") && t.host.starts_with('t'), "{t:?}");
            assert!(t.addrs.len() <= 2 * MAX_ADDRS, "{t:?}");
            assert!(!t.addrs.is_empty());
        }
        // Priority 0 first: i % 3 == 0.
        assert!(found[0].host[1..].split('.').next().unwrap().parse::<u16>().unwrap() % 3 == 0);
    }

    #[tokio::test]
    async fn the_service_is_not_offered_when_the_target_is_the_root() {
        let handler: Handler = Arc::new(|q, _| {
            let mut r = fake::reply(q);
            let (n, _) = fake::question(q);
            r.add_answer(fake::srv(&format!("{n}."), 0, 0, 88, "."));
            vec![r.to_vec().unwrap()]
        });
        let dns = fake::start(handler).await;
        assert!(
            resolver(&[&dns])
                .service("_kerberos", "none.test")
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn the_cache_is_bounded_and_honours_ttls() {
        let r = DnsResolver::new(Some(Vec::new()));
        let n = fake::name("x.test.");
        r.store(&n, RecordType::A, 0, Answer::Addrs(Vec::new()));
        assert!(r.cached(&n, RecordType::A).is_none(), "TTL 0 is not cached");
        for i in 0..(MAX_CACHED + 50) {
            let name = fake::name(&format!("h{i}.test."));
            r.store(&name, RecordType::A, 100 + i as u32, Answer::Addrs(Vec::new()));
        }
        let cache = r.cache.lock().unwrap();
        assert_eq!(cache.len(), MAX_CACHED);
        assert!(
            cache.contains_key(&("h305.test.".to_string(), RecordType::A)),
            "the newest stays"
        );
        assert!(
            !cache.contains_key(&("h0.test.".to_string(), RecordType::A)),
            "the soonest to expire goes"
        );
        let longest = cache
            .values()
            .map(|(e, _)| e.duration_since(Instant::now()))
            .max()
            .unwrap();
        assert!(longest <= Duration::from_secs(MAX_TTL.into()));
    }
}
