//! `turn.user_quota` against the real server (two workers, so clients land
//! on different shards) and our own client: the time-limited credentials an
//! application mints for one user id, with different expiries, share the
//! user id's quota instead of each having one of their own.

mod support;

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use support::{ServerOptions, TestServer, TurnOptions};
use turnpike_client::{AllocateParams, ClientError, Credentials, TurnClient};
use turnpike_core::ephemeral::{self, Format};

const SECRET: &str = "quota-test-secret";

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// A REST credential (`expiry:user_id`) minted from [`SECRET`].
fn rest_credentials(expiry: u64, user_id: &str) -> Credentials {
    let username = format!("{expiry}:{user_id}");
    let password = ephemeral::password(Format::Rest, SECRET.as_bytes(), &username);
    Credentials::new(username, password)
}

/// An Allocate from a fresh client socket; the client is returned so that
/// its allocation lives as long as the caller keeps it.
async fn allocate(server: SocketAddr, credentials: Credentials) -> Result<TurnClient, ClientError> {
    let mut client = TurnClient::bind(server, credentials)
        .await
        .expect("client socket");
    client.allocate(AllocateParams::default()).await?;
    Ok(client)
}

/// Three REST credentials of user id `alice` with different expiries and
/// `user_quota = 2`: two allocations and one 486; another user id still
/// allocates; once one of alice's allocations is deleted, a fourth
/// credential of hers allocates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_credentials_of_one_user_id_share_the_user_quota() {
    let server = TestServer::start(ServerOptions {
        ipv6: false,
        turn: Some(TurnOptions {
            user_quota: 2,
            secrets: vec![SECRET.to_owned()],
            ..TurnOptions::loopback()
        }),
        ..ServerOptions::default()
    });
    let address = server.v4();
    let expiry = unix_now() + 3600;

    let mut first = allocate(address, rest_credentials(expiry, "alice"))
        .await
        .unwrap_or_else(|e| panic!("alice's first credential: {e}"));
    let _second = allocate(address, rest_credentials(expiry + 60, "alice"))
        .await
        .unwrap_or_else(|e| panic!("alice's second credential: {e}"));
    match allocate(address, rest_credentials(expiry + 120, "alice")).await {
        Err(ClientError::ErrorResponse { code: 486, .. }) => {}
        Err(other) => panic!("alice's third credential: expected 486, got {other}"),
        Ok(_) => panic!(
            "alice's third credential allocated: user_quota = 2 was counted per username, not per user id"
        ),
    }
    let _bob = allocate(address, rest_credentials(expiry, "bob"))
        .await
        .unwrap_or_else(|e| panic!("bob has a quota of his own: {e}"));

    first
        .refresh(0)
        .await
        .unwrap_or_else(|e| panic!("deleting alice's first allocation: {e}"));
    let _fourth = allocate(address, rest_credentials(expiry + 180, "alice"))
        .await
        .unwrap_or_else(|e| panic!("alice's place is free again: {e}"));
}
