//! `shutdown-app`: a stand-in for an application's shutdown micro-service
//! ([`operon_e2e::shutdown_app`]), for trying the shutdown hook by hand.
//!
//! ```text
//! shutdown-app [--listen 127.0.0.1:0] [--ledger FILE] stop-after SECS | never | wrong-token [SECS] | gone
//! ```
//! Prints `listening on ADDR`, then serves `PUT /shutdown/...` until killed.

use std::io::Write as _;

use anyhow::Context as _;
use operon_e2e::shutdown_app::{AppMode, ShutdownApp};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut listen = "127.0.0.1:0".to_owned();
    let mut ledger = None;
    let mut rest = Vec::new();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => listen = args.next().context("--listen ADDR")?,
            "--ledger" => {
                ledger = Some(std::path::PathBuf::from(
                    args.next().context("--ledger FILE")?,
                ))
            }
            _ => rest.push(arg),
        }
    }
    let mode = AppMode::parse(
        rest.first().map(String::as_str).unwrap_or("stop-after"),
        rest.get(1).map(String::as_str),
    )?;
    let app = ShutdownApp::start(listen.parse()?, mode, ledger.as_deref()).await?;
    println!("listening on {}", app.addr());
    std::io::stdout().flush()?;
    tokio::signal::ctrl_c().await?;
    Ok(())
}
