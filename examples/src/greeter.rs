//! The greeter: a tonic gRPC service and a client through a waypost channel, to copy into your
//! own service. The `greeter` example runs it from the command line.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use waypost_examples::greeter;
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:50051").await?;
//! tokio::spawn(greeter::serve(listener, "server-a".to_owned(), std::future::pending()));
//!
//! let channel = waypost::Builder::new("static:///127.0.0.1:50051")?.tonic_channel()?;
//! let server = greeter::say_hello(channel, "you").await?;
//! assert_eq!(server, "server-a");
//! # Ok(()) }
//! ```

use tonic::{Request, Response, Status};

/// The code generated from `proto/greeter.proto`.
#[allow(missing_docs, unreachable_pub)]
pub mod proto {
    tonic::include_proto!("greeter.v1");
}

use proto::greeter_client::GreeterClient;
use proto::greeter_server::{Greeter, GreeterServer};
use proto::{HelloReply, HelloRequest};

/// The service: greets the caller and says who answered.
#[derive(Debug, Clone)]
pub struct Hello {
    name: String,
}

impl Hello {
    /// A greeter that answers as `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Hello { name: name.into() }
    }
}

#[tonic::async_trait]
impl Greeter for Hello {
    async fn say_hello(
        &self,
        request: Request<HelloRequest>,
    ) -> Result<Response<HelloReply>, Status> {
        let name = request.into_inner().name;
        Ok(Response::new(HelloReply {
            message: format!("Hello, {name}!"),
            server: self.name.clone(),
        }))
    }
}

/// Serves the greeter and the standard health service (for readiness probes) on `listener`
/// until `shutdown` completes, then drains gracefully: calls in flight finish, clients get a
/// GOAWAY.
pub async fn serve(
    listener: tokio::net::TcpListener,
    name: String,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_serving::<GreeterServer<Hello>>().await;
    tonic::transport::Server::builder()
        .add_service(health)
        .add_service(GreeterServer::new(Hello::new(name)))
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener),
            shutdown,
        )
        .await
}

/// Calls `SayHello` once through `channel`; returns the name of the server that answered.
pub async fn say_hello(channel: waypost::tonic::Channel, name: &str) -> Result<String, Status> {
    let reply = GreeterClient::new(channel)
        .say_hello(HelloRequest {
            name: name.to_owned(),
        })
        .await?;
    Ok(reply.into_inner().server)
}
