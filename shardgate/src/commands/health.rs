//! `shardgate health`: the container's health check. Asks this process's own admin listener
//! (`SHARDGATE_ADMIN_LISTEN`, the variable gateways and nodes both read) for `/health/ready`
//! and exits non-zero unless it says 200, so that an image needs no `curl` for its
//! `HEALTHCHECK`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The admin listener to ask; an unspecified address (`0.0.0.0`) is asked on loopback.
    #[arg(long, env = "SHARDGATE_ADMIN_LISTEN", default_value = "127.0.0.1:9090")]
    pub admin_listen: SocketAddr,
    /// The path to ask: `/health/ready` (serving) or `/health` (alive).
    #[arg(long, default_value = "/health/ready")]
    pub path: String,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 3)]
    pub timeout_secs: u64,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let url = format!("http://{}{}", reachable(args.admin_listen), args.path);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(args.timeout_secs))
        .build()?;
    let body = super::smoke::get_ok(&client, &url).await?;
    println!("{}", body.trim());
    Ok(())
}

/// Where a listener bound to `addr` is reached from the same host.
fn reachable(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}

#[cfg(test)]
mod tests {
    use super::reachable;

    #[test]
    fn a_listener_on_every_address_is_asked_on_loopback() {
        let r = |s: &str| reachable(s.parse().expect("an address")).to_string();
        assert_eq!(r("0.0.0.0:9090"), "127.0.0.1:9090");
        assert_eq!(r("[::]:9090"), "[::1]:9090");
        assert_eq!(r("10.1.2.3:7102"), "10.1.2.3:7102");
    }
}
