//! The TOTP second factor (RFC 6238) through the real HTTP console: enrolment, the code step of
//! sign-in, replay, expiry, switching off and an admin's removal; and the lifetime of a temporary
//! password (an admin reset), which needs the same moving clock. Codes are computed by the
//! `totp-rs` library from the `otpauth://` URI the page shows (not by the receiver's own
//! step-matching code), at the receiver's clock, which these tests move forward
//! (`duress_receiver::clock::advance`) instead of waiting for the next 30-second step: so the
//! cases of this binary run one at a time.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::Harness;
use common::console::{PASSWORD, add_user};
use common::sign_in::{Browser, SESSION_COOKIE, STEP_COOKIE, text_of};
use duress_receiver::admin;
use duress_receiver::clock;
use duress_receiver::store::Role;
use totp_rs::TOTP;

/// The cases of this binary move the one process clock: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn unescape(html: &str) -> String {
    html.replace("&amp;", "&")
        .replace("&#x2f;", "/")
        .replace("&#47;", "/")
        .replace("&#x3d;", "=")
}

/// The code for the receiver's clock now.
fn code_now(totp: &TOTP) -> String {
    let now = u64::try_from(clock::receiver_now().unix_timestamp()).unwrap();
    totp.generate(now)
}

/// The next 30-second step: a new code (the one before is used up).
fn next_step() {
    clock::advance(Duration::from_secs(30));
}

async fn signed_in(h: &Harness, username: &str) -> Browser {
    let mut b = Browser::new(h);
    let a = b.login(username, PASSWORD).await;
    assert_eq!((a.status, a.location()), (303, "/"), "{}", a.text);
    b.board().await;
    b
}

/// Enrols `b`'s user: returns the authenticator built from the page's `otpauth://` URI, and
/// the code that switched it on (used up).
async fn enrol(b: &mut Browser) -> (TOTP, String) {
    let off = b.get("/account/totp").await;
    assert_eq!(off.status, 200);
    assert!(off.text.contains("Two-step sign-in is off"), "{}", off.text);
    let page = b.post_signed("/account/totp/enrol", &[]).await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert!(page.text.contains("<svg"), "the QR code is inlined");
    assert!(!page.text.contains("<img"), "no image service");
    let uri = unescape(&text_of(&page.text, "totp-uri"));
    let base32 = text_of(&page.text, "totp-secret");
    assert!(uri.starts_with("otpauth://totp/"), "{uri}");
    assert_eq!(base32.len(), 32, "160 bits");
    let totp = TOTP::from_url(&uri).unwrap();
    assert_eq!(totp.get_secret_base32(), base32);
    assert_eq!((totp.digits, totp.step), (6, 30));
    let wrong = b
        .post_signed("/account/totp/confirm", &[("code", "000000")])
        .await;
    assert_eq!(wrong.status, 422, "a wrong code does not switch it on");
    let used = code_now(&totp);
    let on = b
        .post_signed("/account/totp/confirm", &[("code", &used)])
        .await;
    assert_eq!(on.status, 200, "{}", on.text);
    assert!(on.text.contains("Two-step sign-in is on"));
    assert!(
        !on.text.contains(&base32),
        "the secret is not shown after enrolment"
    );
    let later = b.get("/account/totp").await;
    assert!(!later.text.contains(&base32) && !later.text.contains("otpauth://"));
    (totp, used)
}

/// Proves enrolment (URI, base32, inline QR; switched on only by a current code), that sign-in
/// then needs the code after the password — no session and no page before it — that a wrong
/// code and a replayed code are refused and audited, that a code one step old is accepted
/// (±1 step), that the user can switch it off only with a current code, and that an admin's
/// removal (a lost phone) is audited and makes the password alone enough again.
#[tokio::test]
async fn enrolment_sign_in_with_a_code_replay_refused_and_removal() {
    let _serial = SERIAL.lock().await;
    let h = Harness::start().await;
    add_user(h.data_dir(), "tina", Role::Officer).await;
    add_user(h.data_dir(), "ada", Role::Admin).await;
    let mut tina = signed_in(&h, "tina").await;
    let (totp, used) = enrol(&mut tina).await;
    assert_eq!(tina.get("/").await.status, 200, "her session stays");

    // The password alone no longer gives a session.
    let mut b = Browser::new(&h);
    let step = b.login("tina", PASSWORD).await;
    assert_eq!((step.status, step.location()), (303, "/login/code"));
    assert!(b.cookie(STEP_COOKIE).is_some());
    assert!(b.cookie(SESSION_COOKIE).is_none());
    for page in ["/", "/account/totp", "/login/new-password"] {
        let r = b.get(page).await;
        assert_eq!(r.status, 303, "{page}");
        assert_ne!(r.location(), page);
    }
    let form = b.get("/login/code").await;
    assert_eq!(form.status, 200);
    assert!(form.text.contains("autocomplete=\"one-time-code\""));
    let wrong = b.post("/login/code", &[("code", "123456")]).await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.text.contains("Wrong code"));
    // The code that switched it on was used: a replay.
    let replay = b.post("/login/code", &[("code", &used)]).await;
    assert_eq!(replay.status, 401, "{}", replay.text);
    assert!(replay.text.contains("already used"), "{}", replay.text);
    assert!(b.cookie(SESSION_COOKIE).is_none());

    next_step();
    let code = code_now(&totp);
    let spaced = format!("{} {}", &code[..3], &code[3..]);
    let ok = b.post("/login/code", &[("code", &spaced)]).await;
    assert_eq!((ok.status, ok.location()), (303, "/"), "{}", ok.text);
    assert!(b.cookie(SESSION_COOKIE).is_some());
    assert!(b.cookie(STEP_COOKIE).is_none());
    b.board().await;

    // The same code again, in a fresh sign-in: refused (accepted once).
    let mut again = Browser::new(&h);
    assert_eq!(
        again.login("tina", PASSWORD).await.location(),
        "/login/code"
    );
    let replay = again.post("/login/code", &[("code", &code)]).await;
    assert_eq!(replay.status, 401);
    assert!(replay.text.contains("already used"));
    // Two steps later that code is outside the window; the previous step's code, never used,
    // is accepted (one step of tolerance).
    next_step();
    next_step();
    let old = again.post("/login/code", &[("code", &code)]).await;
    assert_eq!(old.status, 401);
    assert!(old.text.contains("Wrong code"), "{}", old.text);
    let previous = {
        let now = u64::try_from(clock::receiver_now().unix_timestamp()).unwrap();
        totp.generate(now - 30)
    };
    let ok = again.post("/login/code", &[("code", &previous)]).await;
    assert_eq!(ok.status, 303, "one step of tolerance: {}", ok.text);

    // Switching off needs a current (unused) code.
    let refused = b
        .post_signed("/account/totp/disable", &[("code", "999999")])
        .await;
    assert_eq!(refused.status, 422);
    next_step();
    let off = b
        .post_signed("/account/totp/disable", &[("code", &code_now(&totp))])
        .await;
    assert_eq!(off.status, 200, "{}", off.text);
    assert!(off.text.contains("Two-step sign-in is off"));
    let mut plain = Browser::new(&h);
    assert_eq!(plain.login("tina", PASSWORD).await.location(), "/");

    // Enrolled again, then removed by an admin (lost phone).
    enrol(&mut b).await;
    let mut admin_b = signed_in(&h, "ada").await;
    let users = admin_b.get("/admin/users").await.text;
    assert!(
        users.contains("action=\"/admin/users/tina/totp/remove\""),
        "{users}"
    );
    let removed = admin_b
        .post_signed("/admin/users/tina/totp/remove", &[])
        .await;
    assert_eq!((removed.status, removed.location()), (303, "/admin/users"));
    let none = admin_b
        .post_signed("/admin/users/tina/totp/remove", &[])
        .await;
    assert_eq!(none.status, 404);
    let mut after = Browser::new(&h);
    assert_eq!(after.login("tina", PASSWORD).await.location(), "/");

    let audit = admin_b.get("/audit").await.text;
    for action in [
        "totp.enable",
        "totp.disable",
        "totp.remove",
        "login.failure",
    ] {
        assert!(audit.contains(&format!(">{action}<")), "{action}");
    }
    assert!(audit.contains("code already used") && audit.contains("wrong code"));
    h.shutdown().await;
}

/// Proves the code step cannot outlive five minutes, takes at most five wrong codes (then the
/// password must be given again), and that codes count against the sign-in limit like
/// passwords. Also the CLI's removal.
#[tokio::test]
async fn the_code_step_expires_is_bounded_and_throttled() {
    let _serial = SERIAL.lock().await;
    let h = Harness::start_with(|s| {
        s.console.login_failures_per_address = 8;
        s.console.login_failure_window = Duration::from_secs(3600);
    })
    .await;
    add_user(h.data_dir(), "uma", Role::Officer).await;
    add_user(h.data_dir(), "vic", Role::Officer).await;
    let mut uma = signed_in(&h, "uma").await;
    let (totp, _) = enrol(&mut uma).await;
    next_step();

    // Expiry: the password step was right, but five minutes pass.
    let mut slow = Browser::new(&h);
    assert_eq!(slow.login("uma", PASSWORD).await.location(), "/login/code");
    clock::advance(Duration::from_secs(5 * 60 + 1));
    let late = slow
        .post("/login/code", &[("code", &code_now(&totp))])
        .await;
    assert_eq!(late.status, 401);
    assert!(late.text.contains("expired"), "{}", late.text);
    assert!(slow.cookie(SESSION_COOKIE).is_none());
    assert!(slow.cookie(STEP_COOKIE).is_none(), "cleared");

    // Five wrong codes end the step: the right code is then too late.
    let mut guesser = Browser::new(&h);
    assert_eq!(
        guesser.login("uma", PASSWORD).await.location(),
        "/login/code"
    );
    for n in 0..4 {
        let r = guesser.post("/login/code", &[("code", "000001")]).await;
        assert_eq!(r.status, 401, "{n}");
        assert!(r.text.contains("Wrong code"));
    }
    let fifth = guesser.post("/login/code", &[("code", "000001")]).await;
    assert!(
        fifth.text.contains("Too many wrong codes"),
        "{}",
        fifth.text
    );
    let right = guesser
        .post("/login/code", &[("code", &code_now(&totp))])
        .await;
    assert_eq!(right.status, 401);
    assert!(right.text.contains("expired"));

    // Codes and passwords share the address window (8): 5 wrong codes, then 3 more
    // guesses use it up; the next attempt of anyone from this address waits.
    let mut more = Browser::new(&h);
    assert_eq!(more.login("uma", PASSWORD).await.location(), "/login/code");
    for _ in 0..3 {
        assert_eq!(
            more.post("/login/code", &[("code", "000002")]).await.status,
            401
        );
    }
    let held = more
        .post("/login/code", &[("code", &code_now(&totp))])
        .await;
    assert_eq!(held.status, 429, "{}", held.text);
    let mut other = Browser::new(&h);
    assert_eq!(other.login("vic", PASSWORD).await.status, 429);

    // The CLI removes it (lost phone).
    assert!(admin::remove_totp(h.data_dir(), "uma").await.unwrap());
    assert!(!admin::remove_totp(h.data_dir(), "uma").await.unwrap());
    h.shutdown().await;
}

/// Proves a temporary password (an admin reset) signs in only within its lifetime
/// (`console::passwords::TEMPORARY_PASSWORD_LIFETIME`, three days): a day after the reset it
/// still leads to the new-password step; past three days it is refused (401, no session, no
/// step; audited as a `login.failure`, "temporary password expired"), and a new reset helps.
#[tokio::test]
async fn a_temporary_password_expires() {
    let _serial = SERIAL.lock().await;
    let h = Harness::start().await;
    add_user(h.data_dir(), "wes", Role::Officer).await;
    let (first, _) = admin::reset_password(h.data_dir(), "wes").await.unwrap();
    clock::advance(Duration::from_secs(24 * 3600));
    let mut b = Browser::new(&h);
    let step = b.login("wes", &first).await;
    assert_eq!((step.status, step.location()), (303, "/login/new-password"));

    clock::advance(Duration::from_secs(2 * 24 * 3600 + 60));
    let mut late = Browser::new(&h);
    let refused = late.login("wes", &first).await;
    assert_eq!(refused.status, 401, "{}", refused.text);
    assert!(
        refused.text.contains("This temporary password has expired"),
        "{}",
        refused.text
    );
    assert!(late.cookie(SESSION_COOKIE).is_none());
    assert!(late.cookie(STEP_COOKIE).is_none());
    let audit = admin::with_store(h.data_dir(), async |store| Ok(store.audit_log().await?))
        .await
        .unwrap();
    assert!(
        audit.iter().any(|e| e.action == "login.failure"
            && e.subject == "wes"
            && e.detail == "temporary password expired"),
        "audited"
    );

    let (second, _) = admin::reset_password(h.data_dir(), "wes").await.unwrap();
    let mut again = Browser::new(&h);
    let step = again.login("wes", &second).await;
    assert_eq!((step.status, step.location()), (303, "/login/new-password"));
    h.shutdown().await;
}
