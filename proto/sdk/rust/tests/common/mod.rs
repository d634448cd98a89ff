//! What the integration tests share: an operator served on 127.0.0.1 and a channel to it.

use std::time::Duration;

use operon_handler::{Operator, Running, ServeConfig};
use tonic::transport::Channel;

/// Serves `operator` on a free port of 127.0.0.1 (no telemetry) and connects to it.
pub(crate) async fn start(operator: Operator) -> (Running, Channel) {
    let config = ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        telemetry: false,
        shutdown_grace: Duration::from_secs(5),
        ..ServeConfig::default()
    };
    let running = operator.start(config).await.expect("the service starts");
    let channel = Channel::from_shared(format!("http://{}", running.addr()))
        .unwrap()
        .connect()
        .await
        .expect("a connection");
    (running, channel)
}
