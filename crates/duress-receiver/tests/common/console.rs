//! Console helpers: users, a signed-in HTTP client that keeps its session cookie by hand and
//! never follows redirects (so tests see exactly what the receiver answered).

use std::path::Path;
use std::time::Duration;

use duress_receiver::admin;
use duress_receiver::console::cameras::percent_encode;
use duress_receiver::store::{Role, StoreLocation};

use super::{Answer, Harness};

pub const PASSWORD: &str = "correct horse battery staple";

pub async fn add_user(at: impl Into<StoreLocation>, username: &str, role: Role) {
    admin::add_user(at, username, role, PASSWORD).await.unwrap();
}

/// A client that trusts the receiver's certificate and does not follow redirects.
pub fn raw_client(cert: &Path) -> reqwest::Client {
    super::trusting_builder(cert)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

pub fn form(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// A browser-like console session.
pub struct Console {
    pub client: reqwest::Client,
    pub base: String,
    pub cookie: Option<String>,
    pub csrf: String,
}

impl Console {
    pub fn anonymous(h: &Harness) -> Self {
        Console {
            client: raw_client(&h.receiver.cert_pem_path),
            // The console's own listener when it has one (`--console-listen`).
            base: h.receiver.console_url.clone(),
            cookie: None,
            csrf: String::new(),
        }
    }

    /// Signs in and reads the CSRF token from the board.
    pub async fn sign_in(h: &Harness, username: &str) -> Self {
        let mut c = Self::anonymous(h);
        let a = c.login(username, PASSWORD).await;
        assert_eq!(a.status, 303, "{}", a.text());
        let board = c.get("/").await;
        assert_eq!(board.status, 200, "{}", board.text());
        c.csrf = meta_csrf(&board.text());
        c
    }

    /// POSTs the sign-in form; keeps the session cookie if one is set.
    pub async fn login(&mut self, username: &str, password: &str) -> Answer {
        let resp = self
            .client
            .post(format!("{}/login", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(&[("username", username), ("password", password)]))
            .send()
            .await
            .unwrap();
        if let Some(set) = resp.headers().get("set-cookie") {
            let set = set.to_str().unwrap().to_owned();
            self.cookie = Some(set.split(';').next().unwrap().to_owned());
        }
        Answer::read(resp).await
    }

    fn with_cookie(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.cookie {
            Some(c) => rb.header("cookie", c),
            None => rb,
        }
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.get_response(path).await.0
    }

    /// The answer and its headers.
    pub async fn get_response(&self, path: &str) -> (Answer, reqwest::header::HeaderMap) {
        let resp = self
            .with_cookie(self.client.get(format!("{}{path}", self.base)))
            .send()
            .await
            .unwrap();
        let headers = resp.headers().clone();
        (Answer::read(resp).await, headers)
    }

    /// POSTs a form with this session's CSRF token added.
    pub async fn post_form(&self, path: &str, fields: &[(&str, &str)]) -> Answer {
        let mut all = vec![("csrf", self.csrf.as_str())];
        all.extend_from_slice(fields);
        self.post_raw(path, &form(&all)).await
    }

    /// POSTs a form body exactly as given (no token added).
    pub async fn post_raw(&self, path: &str, body: &str) -> Answer {
        let resp = self
            .with_cookie(self.client.post(format!("{}{path}", self.base)))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        Answer::read(resp).await
    }

    pub async fn request(&self, method: reqwest::Method, path: &str) -> reqwest::Response {
        self.with_cookie(self.client.request(method, format!("{}{path}", self.base)))
            .header("content-type", "application/x-www-form-urlencoded")
            .send()
            .await
            .unwrap()
    }
}

/// The token in `<meta name="csrf-token" content="…">`.
pub fn meta_csrf(html: &str) -> String {
    let start = html
        .find("name=\"csrf-token\" content=\"")
        .expect("csrf meta tag")
        + 27;
    html[start..].split('"').next().unwrap().to_owned()
}
