//! `fault-proxy --upstream HOST:PORT`: proxies TCP to the upstream and prints one line,
//! `proxy http://127.0.0.1:P control http://127.0.0.1:C`.

use std::net::SocketAddr;

use clap::Parser;
use runwire_fault_proxy::{Proxy, control, serve};
use tokio::net::TcpListener;

#[derive(Parser)]
struct Args {
    /// Where connections go.
    #[arg(long)]
    upstream: SocketAddr,
    /// Where the proxy listens.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Where the control API listens.
    #[arg(long, default_value = "127.0.0.1:0")]
    control: SocketAddr,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let proxy = Proxy::new(args.upstream);
    let listener = TcpListener::bind(args.listen).await?;
    let control_listener = TcpListener::bind(args.control).await?;
    println!(
        "proxy http://{} control http://{}",
        listener.local_addr()?,
        control_listener.local_addr()?
    );
    tokio::spawn(serve(listener, proxy.clone()));
    axum::serve(control_listener, control(proxy)).await
}
