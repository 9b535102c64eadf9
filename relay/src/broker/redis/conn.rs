//! Where Redis is and how to talk to it: the URL forms, the command connection (one multiplexed
//! connection, or a cluster connection that routes by slot) and the Pub/Sub connection.

use std::time::Duration;

use ::redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, PubSub};
use ::redis::cluster::ClusterClientBuilder;
use ::redis::cluster_async::ClusterConnection;
use ::redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

/// Where Redis is, parsed from `--redis`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Target {
    /// Redis Cluster (route every key by its slot) rather than one server.
    pub cluster: bool,
    /// `redis://` URLs: the server, or the cluster's seed nodes.
    pub nodes: Vec<String>,
}

/// `url` with its password replaced by `***`, for logs and errors.
pub(super) fn redact(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, rest)), Some(_)) => {
            let (auth, hosts) = rest.rsplit_once('@').unwrap_or(("", rest));
            let user = auth.split_once(':').map_or(auth, |(user, _)| user);
            format!("{scheme}://{user}:***@{hosts}")
        }
        _ => url.to_owned(),
    }
}

/// Parses `redis://[user:pass@]host:port[/db]` (one server) or
/// `redis+cluster://[user:pass@]host:port[,host:port…]` (a cluster, by its seed nodes).
/// `cluster` forces cluster mode for a `redis://` URL, whose host list may then hold several
/// comma-separated seed nodes too.
pub(super) fn parse_target(url: &str, cluster: bool) -> Result<Target, String> {
    let (scheme, rest) = url.split_once("://").ok_or_else(|| {
        format!(
            "invalid Redis URL {:?}: expected redis://host:port",
            redact(url)
        )
    })?;
    // `rediss`: TLS (rustls), the server's certificate checked against the system's roots.
    let (cluster, node_scheme) = match scheme {
        "redis+cluster" => (true, "redis"),
        "redis" => (cluster, "redis"),
        "rediss+cluster" => (true, "rediss"),
        "rediss" => (cluster, "rediss"),
        other => return Err(format!("unsupported Redis URL scheme {other:?}")),
    };
    let (auth, hosts) = match rest.rsplit_once('@') {
        Some((auth, hosts)) => (format!("{auth}@"), hosts),
        None => (String::new(), rest),
    };
    let (hosts, path) = match hosts.split_once('/') {
        Some((h, p)) => (h, format!("/{p}")),
        None => (hosts, String::new()),
    };
    if cluster && !matches!(path.as_str(), "" | "/" | "/0") {
        return Err("Redis Cluster has no databases: drop the /db from the URL".into());
    }
    let nodes: Vec<String> = hosts
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(|h| format!("{node_scheme}://{auth}{h}{path}"))
        .collect();
    if nodes.is_empty() {
        return Err(format!("invalid Redis URL {:?}: no host", redact(url)));
    }
    if !cluster && nodes.len() > 1 {
        return Err("several hosts need redis+cluster:// (or --redis-cluster)".into());
    }
    for node in &nodes {
        ::redis::Client::open(node.as_str()).map_err(|e| format!("invalid Redis URL: {e}"))?;
    }
    Ok(Target { cluster, nodes })
}

/// The command connection. Both kinds reconnect by themselves after an error; a command sent
/// while the server is unreachable fails fast (or after the response timeout) instead of waiting.
#[derive(Clone)]
pub(super) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Single(_) => "Conn::Single",
            Self::Cluster(_) => "Conn::Cluster",
        })
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(cmd, offset, count),
            Self::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// Opens the command connection; fails when Redis cannot be reached now, or within `timeout`.
pub(super) async fn connect(target: &Target, timeout: Duration) -> RedisResult<Conn> {
    within(timeout, open(target, timeout)).await
}

async fn open(target: &Target, timeout: Duration) -> RedisResult<Conn> {
    if target.cluster {
        let client = ClusterClientBuilder::new(target.nodes.clone())
            .connection_timeout(timeout)
            .response_timeout(timeout)
            .retries(2)
            .min_retry_wait(50)
            .max_retry_wait(500)
            .build()?;
        Ok(Conn::Cluster(client.get_async_connection().await?))
    } else {
        let client = ::redis::Client::open(target.nodes[0].as_str())?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(2));
        Ok(Conn::Single(
            ConnectionManager::new_with_config(client, config).await?,
        ))
    }
}

/// Opens a Pub/Sub connection to node `attempt % nodes`. On a cluster any node will do: a
/// `PUBLISH` on one node reaches the subscribers of every node.
pub(super) async fn connect_pubsub(
    target: &Target,
    attempt: usize,
    timeout: Duration,
) -> RedisResult<PubSub> {
    let node = &target.nodes[attempt % target.nodes.len()];
    let client = ::redis::Client::open(node.as_str())?;
    within(timeout, client.get_async_pubsub()).await
}

/// `connecting`, failing as a timed-out I/O error when it takes longer than `timeout`.
async fn within<T>(
    timeout: Duration,
    connecting: impl Future<Output = RedisResult<T>>,
) -> RedisResult<T> {
    tokio::time::timeout(timeout, connecting)
        .await
        .unwrap_or_else(|_| {
            Err(::redis::RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "connecting to Redis timed out",
            )))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_url_forms() {
        let t = parse_target("redis://127.0.0.1:6379/2", false).unwrap();
        assert_eq!(
            t,
            Target {
                cluster: false,
                nodes: vec!["redis://127.0.0.1:6379/2".into()]
            }
        );
        let t = parse_target("redis+cluster://u:p@10.0.0.1:7000,10.0.0.2:7001", false).unwrap();
        assert!(t.cluster);
        assert_eq!(
            t.nodes,
            ["redis://u:p@10.0.0.1:7000", "redis://u:p@10.0.0.2:7001"]
        );
        let t = parse_target("redis://h:7000", true).unwrap();
        assert!(t.cluster);
        assert!(parse_target("redis://a:1,b:2", false).is_err());
        assert_eq!(
            parse_target("rediss://:pw@h:1/2", false).unwrap().nodes,
            ["rediss://:pw@h:1/2"]
        );
        assert_eq!(
            parse_target("rediss+cluster://h:1,h:2", false)
                .unwrap()
                .nodes,
            ["rediss://h:1", "rediss://h:2"]
        );
        assert!(parse_target("http://h:1", false).is_err());
        assert!(parse_target("redis+cluster://h:1/3", false).is_err());
        assert!(parse_target("localhost:6379", false).is_err());
        assert_eq!(redact("redis://u:secret@h:1"), "redis://u:***@h:1");
        assert_eq!(redact("redis://:secret@h:1/2"), "redis://:***@h:1/2");
        assert_eq!(redact("redis://h:1"), "redis://h:1");
        let err = parse_target("redis+cluster://u:pw@", false).unwrap_err();
        assert!(!err.contains("pw"), "{err}");
    }
}
