//! Sign-in, sessions and sign-out, and the sign-in rate limits.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::Harness;
use common::console::{Console, PASSWORD, add_user};
use duress_receiver::store::Role;

/// Proves the sign-in form has the labelled fields and button; a good password gives a
/// session cookie that is HttpOnly, Secure, SameSite=Strict; sign-out deletes the session on
/// the server, so the same cookie replayed afterwards is worthless.
#[tokio::test]
async fn logout_invalidates_the_session() {
    let h = Harness::start().await;
    add_user(h.data_dir(), "olivia", Role::Officer).await;
    let mut anon = Console::anonymous(&h);
    let page = anon.get("/login").await.text();
    assert!(page.contains("<label for=\"username\">Username</label>"));
    assert!(page.contains("<label for=\"password\">Password</label>"));
    assert!(page.contains(">Sign in</button>"));

    let resp = anon
        .client
        .post(format!("{}/login", anon.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(common::console::form(&[
            ("username", "olivia"),
            ("password", PASSWORD),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    let cookie = resp.headers()["set-cookie"].to_str().unwrap().to_owned();
    for attr in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    anon.cookie = Some(cookie.split(';').next().unwrap().to_owned());
    let signed_in = anon;
    assert_eq!(signed_in.get("/").await.status, 200);

    let officer = Console::sign_in(&h, "olivia").await;
    let stolen_copy = officer.cookie.clone();
    let out = officer.post_form("/logout", &[]).await;
    assert_eq!(out.status, 303);
    let mut replay = Console::anonymous(&h);
    replay.cookie = stolen_copy;
    let again = replay.get("/").await;
    assert_eq!(again.status, 303, "the session is gone on the server");
    // The other session of the same user is unaffected.
    assert_eq!(signed_in.get("/").await.status, 200);

    // A wrong password signs nobody in.
    let mut wrong = Console::anonymous(&h);
    let a = wrong.login("olivia", "not the password").await;
    assert_eq!(a.status, 401);
    assert!(a.text().contains("Wrong username or password"));
    assert!(wrong.cookie.is_none());
    h.shutdown().await;
}

/// Proves failed sign-ins are limited per username (then even the right password gets 429)
/// and per client address (then another username gets 429 too).
#[tokio::test]
async fn sign_in_is_rate_limited_per_username_and_per_address() {
    let h = Harness::start_with(|s| {
        s.console.login_failures_per_username = 3;
        s.console.login_failures_per_address = 6;
        s.console.login_failure_window = Duration::from_secs(60);
    })
    .await;
    for u in ["alice", "bob", "carol"] {
        add_user(h.data_dir(), u, Role::Officer).await;
    }
    let mut c = Console::anonymous(&h);
    for _ in 0..3 {
        assert_eq!(c.login("alice", "wrong password!").await.status, 401);
    }
    let limited = c.login("alice", PASSWORD).await;
    assert_eq!(limited.status, 429, "{}", limited.text());
    assert!(limited.text().contains("Too many sign-in attempts"));
    // Another user from the same address is still fine…
    assert_eq!(c.login("bob", PASSWORD).await.status, 303);
    // …until the address has used up its own budget.
    for _ in 0..3 {
        assert_eq!(c.login("bob", "wrong password!").await.status, 401);
    }
    assert_eq!(c.login("carol", PASSWORD).await.status, 429);
    h.shutdown().await;
}
