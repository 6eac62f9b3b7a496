//! The fleet's heartbeat rows (`fleet.register`) on real databases: SQLite
//! files and PostgreSQL servers started for each test.

mod common;

use std::time::Duration;

use common::Db;
use turnpike_store::{RegisteredEndpoint, RegisteredTransport, RelayRegistration, StoreError};

on_both!(
    heartbeats_are_upserted_listed_expired_and_withdrawn,
    a_version_1_database_gains_the_table,
    heartbeat_input_is_checked,
);

fn registration(id: &str, allocations: u64) -> RelayRegistration {
    RelayRegistration {
        id: id.to_owned(),
        name: format!("{id}.example.com"),
        addresses: vec!["192.0.2.7".parse().unwrap(), "2001:db8::7".parse().unwrap()],
        endpoints: vec![
            RegisteredEndpoint {
                transport: RegisteredTransport::Udp,
                port: 3478,
            },
            RegisteredEndpoint {
                transport: RegisteredTransport::Tls,
                port: 5349,
            },
        ],
        allocations,
        capacity: Some(1000),
        draining: false,
        version: "0.1.0".to_owned(),
    }
}

/// Makes a row look `by` older, behind the store's back (no sleeping).
fn age_row(db: &Db, id: &str, by: Duration) {
    db.execute_batch(&format!(
        "UPDATE fleet_relays SET last_seen_ms = last_seen_ms - {} WHERE id = '{id}'",
        by.as_millis()
    ));
}

async fn heartbeats_are_upserted_listed_expired_and_withdrawn(db: Db) {
    let store = db.open().await;
    let minute = Duration::from_secs(60);
    assert!(store.registered_relays(minute).await.unwrap().is_empty());
    let a = registration("a", 3);
    let mut b = registration("b", 5);
    b.capacity = None;
    store.heartbeat(&a).await.unwrap();
    store.heartbeat(&b).await.unwrap();

    let listed = store.registered_relays(minute).await.unwrap();
    let rows: Vec<&RelayRegistration> = listed.iter().map(|r| &r.registration).collect();
    assert_eq!(rows, [&a, &b]);
    assert!(
        listed.iter().all(|r| r.age < Duration::from_secs(5)),
        "{listed:?}"
    );

    // The next beat replaces the row: still one per relay.
    b.draining = true;
    b.allocations = 4;
    store.heartbeat(&b).await.unwrap();
    let listed = store.registered_relays(minute).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[1].registration, b);

    // A row not written for longer than the listing's max age is ignored,
    // then deleted by the clean-up, which leaves fresh rows alone.
    age_row(&db, "a", Duration::from_secs(120));
    let listed = store.registered_relays(minute).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].registration.id, "b");
    let all = store
        .registered_relays(Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(all.len(), 2);
    assert!(all[0].age >= Duration::from_secs(120), "{all:?}");
    assert_eq!(store.expire_relays(minute).await.unwrap(), 1);
    assert_eq!(store.expire_relays(minute).await.unwrap(), 0);
    assert_eq!(
        store
            .registered_relays(Duration::from_secs(3600))
            .await
            .unwrap()
            .len(),
        1
    );

    // A clean shutdown deletes its own row.
    assert!(store.withdraw_relay("b").await.unwrap());
    assert!(!store.withdraw_relay("b").await.unwrap());
    assert!(store.registered_relays(minute).await.unwrap().is_empty());
}

async fn a_version_1_database_gains_the_table(db: Db) {
    let store = db.open().await;
    store.heartbeat(&registration("a", 1)).await.unwrap();
    drop(store);
    // As a database written by the previous release.
    db.execute_batch("DROP TABLE fleet_relays");
    db.set_schema_version(1);
    let store = db.open().await;
    assert_eq!(db.schema_version(), 2);
    store.heartbeat(&registration("a", 1)).await.unwrap();
    assert_eq!(
        store
            .registered_relays(Duration::from_secs(60))
            .await
            .unwrap()
            .len(),
        1
    );
}

async fn heartbeat_input_is_checked(db: Db) {
    let store = db.open().await;
    let mut bad = registration("a", 1);
    bad.id = String::new();
    assert_eq!(
        store.heartbeat(&bad).await.unwrap_err().to_string(),
        "relay id must not be empty"
    );
    let mut bad = registration("a", 1);
    bad.allocations = u64::MAX;
    assert!(matches!(
        store.heartbeat(&bad).await,
        Err(StoreError::Invalid(_))
    ));
    assert!(
        store
            .registered_relays(Duration::from_secs(60))
            .await
            .unwrap()
            .is_empty()
    );
}
