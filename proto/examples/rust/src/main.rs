//! `operon-example-handler`: serves the example handlers until SIGTERM/SIGINT.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    operon_example_handler::run(operon_example_handler::Cli::parse()).await
}
