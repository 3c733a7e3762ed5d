//! Sign-ins with more than one step (TOTP code, new password after a reset): a browser-like
//! client that keeps every cookie the receiver sets (the session and the sign-in step), and
//! reads answers with their headers.

use reqwest::header::HeaderMap;

use super::Harness;
use super::console::{form, meta_csrf, raw_client};

pub const SESSION_COOKIE: &str = "__Host-duress_session";
pub const STEP_COOKIE: &str = "__Host-duress_sign_in";

/// An answer with its headers.
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
}

impl Reply {
    pub fn location(&self) -> &str {
        self.headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// A browser: cookies by name, set and cleared as the receiver says.
pub struct Browser {
    pub client: reqwest::Client,
    pub base: String,
    pub cookies: Vec<(String, String)>,
    pub csrf: String,
}

impl Browser {
    pub fn new(h: &Harness) -> Self {
        Browser {
            client: raw_client(&h.receiver.cert_pem_path),
            base: h.receiver.console_url.clone(),
            cookies: Vec::new(),
            csrf: String::new(),
        }
    }

    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.cookies
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn header(&self) -> String {
        self.cookies
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn read(&mut self, resp: reqwest::Response) -> Reply {
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        for set in headers.get_all("set-cookie") {
            let set = set.to_str().unwrap();
            let pair = set.split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            self.cookies.retain(|(n, _)| n != name);
            if !value.is_empty() && !set.contains("Max-Age=0") {
                self.cookies.push((name.to_owned(), value.to_owned()));
            }
        }
        let text = resp.text().await.unwrap();
        Reply {
            status,
            headers,
            text,
        }
    }

    pub async fn get(&mut self, path: &str) -> Reply {
        let resp = self
            .client
            .get(format!("{}{path}", self.base))
            .header("cookie", self.header())
            .send()
            .await
            .unwrap();
        self.read(resp).await
    }

    /// POSTs a form as given (add `csrf` yourself for signed-in forms: [`Browser::post_signed`]).
    pub async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Reply {
        let resp = self
            .client
            .post(format!("{}{path}", self.base))
            .header("cookie", self.header())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(fields))
            .send()
            .await
            .unwrap();
        self.read(resp).await
    }

    /// POSTs a form with the session's CSRF token.
    pub async fn post_signed(&mut self, path: &str, fields: &[(&str, &str)]) -> Reply {
        let csrf = self.csrf.clone();
        let mut all = vec![("csrf", csrf.as_str())];
        all.extend_from_slice(fields);
        self.post(path, &all).await
    }

    /// The password step: `POST /login`.
    pub async fn login(&mut self, username: &str, password: &str) -> Reply {
        self.post("/login", &[("username", username), ("password", password)])
            .await
    }

    /// Loads the board and keeps its CSRF token (the session must be complete).
    pub async fn board(&mut self) -> Reply {
        let board = self.get("/").await;
        assert_eq!(board.status, 200, "{}", board.text);
        self.csrf = meta_csrf(&board.text);
        board
    }
}

/// The text of the element with `id="ID"` (its first text node).
pub fn text_of(html: &str, id: &str) -> String {
    let at = html
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in {html}"));
    let rest = &html[at..];
    let start = rest.find('>').unwrap() + 1;
    rest[start..].split('<').next().unwrap().to_owned()
}
