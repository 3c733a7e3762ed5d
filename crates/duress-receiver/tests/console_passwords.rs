//! Local passwords through the real HTTP console: the signed-in user's change and the admin's
//! reset (and its CLI twin), on the backend `DURESS_TEST_DATABASE` names.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::Harness;
use common::console::{PASSWORD, add_user};
use common::sign_in::{Browser, SESSION_COOKIE, STEP_COOKIE, text_of};
use duress_receiver::admin;
use duress_receiver::store::Role;

const NEW_PASSWORD: &str = "a new password, long enough";

async fn signed_in(h: &Harness, username: &str) -> Browser {
    let mut b = Browser::new(h);
    let a = b.login(username, PASSWORD).await;
    assert_eq!(a.status, 303, "{}", a.text);
    assert_eq!(a.location(), "/");
    b.board().await;
    b
}

/// Proves a change needs the right current password (a wrong one is refused and audited),
/// follows the account-creation rule and needs the same new password twice; a change keeps
/// this session, ends the account's other sessions, and only the new password signs in.
#[tokio::test]
async fn a_change_needs_the_current_password_and_ends_the_other_sessions() {
    let h = Harness::start().await;
    add_user(h.data_dir(), "olga", Role::Officer).await;
    add_user(h.data_dir(), "ada", Role::Admin).await;
    let mut here = signed_in(&h, "olga").await;
    let mut elsewhere = signed_in(&h, "olga").await;

    let page = here.get("/account/password").await;
    assert_eq!(page.status, 200);
    assert!(
        page.text
            .contains("<label for=\"pw-current\">Current password</label>")
    );
    assert!(
        here.board()
            .await
            .text
            .contains("href=\"/account/password\""),
        "the header links it"
    );

    let wrong = here
        .post_signed(
            "/account/password",
            &[
                ("current", "not my password"),
                ("password", NEW_PASSWORD),
                ("again", NEW_PASSWORD),
            ],
        )
        .await;
    assert_eq!(wrong.status, 403, "{}", wrong.text);
    assert!(wrong.text.contains("The current password is wrong."));
    for (new, again, why) in [
        ("short one", "short one", "at least 12 characters"),
        (NEW_PASSWORD, "something else entirely", "not the same"),
        (PASSWORD, PASSWORD, "must differ"),
    ] {
        let refused = here
            .post_signed(
                "/account/password",
                &[("current", PASSWORD), ("password", new), ("again", again)],
            )
            .await;
        assert_eq!(refused.status, 422, "{why}");
        assert!(refused.text.contains(why), "{why}: {}", refused.text);
    }
    // Without the CSRF token: refused by the guard, nothing changed.
    let forged = here
        .post(
            "/account/password",
            &[
                ("current", PASSWORD),
                ("password", NEW_PASSWORD),
                ("again", NEW_PASSWORD),
            ],
        )
        .await;
    assert_eq!(forged.status, 403);
    assert_eq!(elsewhere.get("/").await.status, 200, "nothing changed yet");

    let done = here
        .post_signed(
            "/account/password",
            &[
                ("current", PASSWORD),
                ("password", NEW_PASSWORD),
                ("again", NEW_PASSWORD),
            ],
        )
        .await;
    assert_eq!(done.status, 200, "{}", done.text);
    assert!(
        done.text.contains("Your one other session was ended."),
        "{}",
        done.text
    );
    assert_eq!(here.get("/").await.status, 200, "this session stays");
    let gone = elsewhere.get("/").await;
    assert_eq!(gone.status, 303, "the other session ended");
    assert_eq!(gone.location(), "/login");

    let mut old = Browser::new(&h);
    assert_eq!(old.login("olga", PASSWORD).await.status, 401);
    let mut new = Browser::new(&h);
    assert_eq!(new.login("olga", NEW_PASSWORD).await.status, 303);

    let admin = &mut signed_in(&h, "ada").await;
    let audit = admin.get("/audit").await.text;
    assert!(audit.contains("password.change.refused"), "{audit}");
    assert!(audit.contains("password.change<"), "{audit}");
    assert!(!audit.contains(NEW_PASSWORD) && !audit.contains("not my password"));
    h.shutdown().await;
}

/// Proves the change form cannot be used to guess the current password past the sign-in
/// limits: its attempts count in the same per-address window as sign-ins, so once the window
/// is used up both the change and a sign-in from that address get 429.
#[tokio::test]
async fn change_attempts_count_against_the_sign_in_limit() {
    let h = Harness::start_with(|s| {
        s.console.login_failures_per_username = 3;
        s.console.login_failures_per_address = 4;
        s.console.login_failure_window = Duration::from_secs(600);
    })
    .await;
    add_user(h.data_dir(), "olga", Role::Officer).await;
    add_user(h.data_dir(), "petra", Role::Officer).await;
    let mut b = signed_in(&h, "olga").await;
    let guess = |n: usize| format!("guess number {n} of many");
    for n in 0..4 {
        let g = guess(n);
        let r = b
            .post_signed(
                "/account/password",
                &[
                    ("current", &g),
                    ("password", NEW_PASSWORD),
                    ("again", NEW_PASSWORD),
                ],
            )
            .await;
        assert_eq!(r.status, 403, "guess {n}");
    }
    let held = b
        .post_signed(
            "/account/password",
            &[
                ("current", PASSWORD),
                ("password", NEW_PASSWORD),
                ("again", NEW_PASSWORD),
            ],
        )
        .await;
    assert_eq!(held.status, 429, "{}", held.text);
    assert!(held.headers.contains_key("retry-after"));
    let mut other = Browser::new(&h);
    assert_eq!(
        other.login("petra", PASSWORD).await.status,
        429,
        "the same address window as sign-ins"
    );
    h.shutdown().await;
}

/// Proves an admin's reset: the temporary password is shown once (in that answer only, not
/// cached, not on the users page, not in the audit log), every session of the user ends at
/// once, the old password stops working, and signing in with the temporary one leads only to
/// choosing a new password — no page is reachable before — after which the temporary one is
/// worthless. The reset is audited with who reset whom. The CLI does the same.
#[tokio::test]
async fn an_admin_reset_is_shown_once_ends_sessions_and_forces_a_new_password() {
    let h = Harness::start().await;
    add_user(h.data_dir(), "ada", Role::Admin).await;
    add_user(h.data_dir(), "olga", Role::Officer).await;
    let mut admin = signed_in(&h, "ada").await;
    let mut olga = signed_in(&h, "olga").await;

    let users = admin.get("/admin/users").await.text;
    assert!(
        users.contains("action=\"/admin/users/olga/reset-password\""),
        "{users}"
    );
    let own = admin
        .post_signed("/admin/users/ada/reset-password", &[])
        .await;
    assert_eq!(own.status, 409, "not one's own");
    let unknown = admin
        .post_signed("/admin/users/nobody/reset-password", &[])
        .await;
    assert_eq!(unknown.status, 404);

    let reset = admin
        .post_signed("/admin/users/olga/reset-password", &[])
        .await;
    assert_eq!(reset.status, 200, "{}", reset.text);
    assert_eq!(reset.headers["cache-control"], "no-store");
    let temporary = text_of(&reset.text, "temporary-password");
    assert_eq!(temporary.len(), 20, "{temporary}");
    assert!(reset.text.contains("Their one open session was ended."));

    assert_eq!(
        olga.get("/").await.status,
        303,
        "her session ended at the reset"
    );
    let users = admin.get("/admin/users").await.text;
    assert!(!users.contains(&temporary), "never shown again");
    let audit = admin.get("/audit").await.text;
    assert!(audit.contains("password.reset"), "{audit}");
    assert!(!audit.contains(&temporary), "never in the audit log");

    let mut stale = Browser::new(&h);
    assert_eq!(stale.login("olga", PASSWORD).await.status, 401);

    let mut b = Browser::new(&h);
    let step = b.login("olga", &temporary).await;
    assert_eq!(step.status, 303);
    assert_eq!(step.location(), "/login/new-password");
    assert!(b.cookie(STEP_COOKIE).is_some());
    assert!(
        b.cookie(SESSION_COOKIE).is_none(),
        "no session before the new password"
    );
    for page in ["/", "/stations", "/account/password"] {
        let r = b.get(page).await;
        assert_eq!((r.status, r.location()), (303, "/login"), "{page}");
    }
    let form = b.get("/login/new-password").await;
    assert_eq!(form.status, 200);
    assert!(
        form.text
            .contains("reset the password of <strong>olga</strong>")
    );
    let same = b
        .post(
            "/login/new-password",
            &[("password", &temporary), ("again", &temporary)],
        )
        .await;
    assert_eq!(same.status, 422);
    assert!(same.text.contains("not the temporary one"));
    let mismatch = b
        .post(
            "/login/new-password",
            &[
                ("password", NEW_PASSWORD),
                ("again", "another new password"),
            ],
        )
        .await;
    assert_eq!(mismatch.status, 422);
    let done = b
        .post(
            "/login/new-password",
            &[("password", NEW_PASSWORD), ("again", NEW_PASSWORD)],
        )
        .await;
    assert_eq!((done.status, done.location()), (303, "/"), "{}", done.text);
    assert!(b.cookie(SESSION_COOKIE).is_some());
    assert!(
        b.cookie(STEP_COOKIE).is_none(),
        "the step cookie is cleared"
    );
    b.board().await;

    let mut again = Browser::new(&h);
    assert_eq!(
        again.login("olga", &temporary).await.status,
        401,
        "the temporary password worked once"
    );
    let direct = again.login("olga", NEW_PASSWORD).await;
    assert_eq!((direct.status, direct.location()), (303, "/"));

    // The CLI's reset: the same forced change, audited as the CLI.
    let (cli_temporary, ended) = admin::reset_password(h.data_dir(), "olga").await.unwrap();
    assert_eq!(ended, 2, "both of her sessions");
    assert_eq!(b.get("/").await.status, 303);
    let mut c = Browser::new(&h);
    let step = c.login("olga", &cli_temporary).await;
    assert_eq!(step.location(), "/login/new-password");
    assert!(
        admin::reset_password(h.data_dir(), "nobody").await.is_err(),
        "unknown user"
    );
    h.shutdown().await;
}

/// Proves a single sign-on account has no password to reset: the users page offers no reset
/// button for it and says how it signs in, a reset posted anyway is refused and changes nothing
/// (nor does the CLI's), and the audit log records no reset.
#[tokio::test]
async fn an_sso_account_has_no_password_to_reset() {
    let h = Harness::start().await;
    add_user(h.data_dir(), "ada", Role::Admin).await;
    admin::add_sso_user(h.data_dir(), "sam", Role::Officer)
        .await
        .unwrap();
    let mut admin_browser = signed_in(&h, "ada").await;

    let users = admin_browser.get("/admin/users").await.text;
    assert!(
        !users.contains("action=\"/admin/users/sam/reset-password\""),
        "{users}"
    );
    assert!(
        users.contains("<td>sam</td><td>officer</td><td>active</td><td>single sign-on</td>"),
        "{users}"
    );
    assert!(
        users.contains("<td>ada</td><td>admin</td><td>active</td><td>password</td>"),
        "{users}"
    );
    let reset = admin_browser
        .post_signed("/admin/users/sam/reset-password", &[])
        .await;
    assert_eq!(reset.status, 404, "{}", reset.text);
    assert!(
        reset
            .text
            .contains("signs in with single sign-on and has no password to reset"),
        "{}",
        reset.text
    );
    // The add form: an unknown sign-in kind, or single sign-on on a receiver without [oidc],
    // is refused with a message and creates nothing.
    for (kind, message) in [
        ("bogus", "Sign-in must be password or single sign-on."),
        ("sso", "Single sign-on is not set up"),
    ] {
        let added = admin_browser
            .post_signed(
                "/admin/users",
                &[("username", "tom"), ("role", "officer"), ("sign_in", kind)],
            )
            .await;
        assert_eq!(added.status, 200, "{}", added.text);
        assert!(added.text.contains(message), "{kind}: {}", added.text);
    }
    let cli = admin::reset_password(h.data_dir(), "sam").await;
    assert!(cli.is_err(), "the CLI refuses too");
    let listed = admin::list_users(h.data_dir()).await.unwrap();
    assert!(listed.iter().any(|u| u.username == "sam" && u.sso));
    assert!(listed.iter().any(|u| u.username == "ada" && !u.sso));
    assert!(
        listed.iter().all(|u| u.username != "tom"),
        "nothing created"
    );
    let audit = admin::with_store(h.data_dir(), async |store| Ok(store.audit_log().await?))
        .await
        .unwrap();
    assert!(
        !audit
            .iter()
            .any(|e| e.action == duress_receiver::store::account_security::PASSWORD_RESET_ACTION),
        "no reset was recorded"
    );
    h.shutdown().await;
}
