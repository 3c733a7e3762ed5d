//! Every route of the receiver in one table: path, method, who may use it, handler. The
//! router is built from this table only, and `tests/console_access.rs` walks the same table,
//! so a protected route cannot be added without being tested to refuse anonymous requests.

use axum::Router;
use axum::http::Method;
use axum::middleware;
use axum::routing::{MethodRouter, get, post};

use super::{
    WebState, admin_pages, audit, auth, board, bulk_resolve, cluster, display_pages, floor_plans,
    guard, incident_actions, incident_page, oidc, passwords, phones, reports, sign_in_steps, sse,
    static_files, stations, totp_pages,
};

// Defined beside the guard that enforces it (routes depend on the guard, never the reverse).
pub use super::guard::Access;

/// A route as the access test sees it.
#[derive(Debug, Clone)]
pub struct RouteSpec {
    pub method: Method,
    /// axum syntax: `/incidents/{id}`.
    pub path: &'static str,
    pub access: Access,
}

struct Route {
    spec: RouteSpec,
    handler: MethodRouter<WebState>,
    /// A console route (pages, sign-in, static files, live stream), not the agent API.
    console: bool,
}

/// Which routes a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serves {
    /// Agent API and console (no `--console-listen`).
    Both,
    /// The agent API (`/v1/…`, `/healthz`) alone: `--listen` when the console has its own.
    Api,
    /// The console alone: `--console-listen`.
    Console,
}

fn table() -> Vec<Route> {
    use Access::{Admin, Officer, Public, View};
    let r = |method: Method,
             path: &'static str,
             access: Access,
             handler: MethodRouter<WebState>| Route {
        spec: RouteSpec {
            method,
            path,
            access,
        },
        handler,
        console: true,
    };
    let mut routes: Vec<Route> = crate::api::routes::<WebState>()
        .into_iter()
        // The integration API (issue 14): each handler checks its Bearer API key itself.
        .chain(crate::integration::routes())
        .map(|(method, path, handler)| Route {
            console: false,
            ..r(method, path, Public, handler)
        })
        .collect();
    // The desk phones' endpoints, served with the agent API (docs/integrations.md).
    routes.extend(crate::phones::routes::<WebState>().into_iter().map(
        |(method, path, handler)| Route {
            console: false,
            ..r(method, path, Public, handler)
        },
    ));
    routes.extend([
        r(Method::GET, "/login", Public, get(auth::login_page)),
        r(Method::POST, "/login", Public, post(auth::login)),
        r(Method::GET, "/login/oidc", Public, get(oidc::start)),
        r(
            Method::GET,
            "/login/oidc/callback",
            Public,
            get(oidc::callback),
        ),
        r(
            Method::GET,
            "/static/{file}",
            Public,
            get(static_files::serve),
        ),
        r(
            Method::GET,
            "/manifest.webmanifest",
            Public,
            get(static_files::manifest),
        ),
        r(Method::GET, "/display", Public, get(display_pages::page)),
        r(
            Method::POST,
            "/display/pair",
            Public,
            post(display_pages::start),
        ),
        r(
            Method::GET,
            "/display/status",
            Public,
            get(display_pages::status),
        ),
        r(
            Method::GET,
            "/admin/displays",
            Admin,
            get(display_pages::admin),
        ),
        r(
            Method::POST,
            "/admin/displays",
            Admin,
            post(display_pages::pair),
        ),
        r(
            Method::POST,
            "/admin/displays/{id}/revoke",
            Admin,
            post(display_pages::revoke),
        ),
        // The steps of a sign-in after its password (no session yet: their own cookie).
        r(
            Method::GET,
            "/login/code",
            Public,
            get(sign_in_steps::code_page),
        ),
        r(
            Method::POST,
            "/login/code",
            Public,
            post(sign_in_steps::code),
        ),
        r(
            Method::GET,
            "/login/new-password",
            Public,
            get(sign_in_steps::new_password_page),
        ),
        r(
            Method::POST,
            "/login/new-password",
            Public,
            post(sign_in_steps::new_password),
        ),
        r(
            Method::GET,
            "/account/password",
            Officer,
            get(passwords::page),
        ),
        r(
            Method::POST,
            "/account/password",
            Officer,
            post(passwords::change),
        ),
        r(Method::GET, "/account/totp", Officer, get(totp_pages::page)),
        r(
            Method::POST,
            "/account/totp/enrol",
            Officer,
            post(totp_pages::enrol),
        ),
        r(
            Method::POST,
            "/account/totp/confirm",
            Officer,
            post(totp_pages::confirm),
        ),
        r(
            Method::POST,
            "/account/totp/disable",
            Officer,
            post(totp_pages::disable),
        ),
        r(Method::POST, "/logout", Officer, post(auth::logout)),
        r(Method::POST, "/session/extend", Officer, post(auth::extend)),
        r(Method::GET, "/", View, get(board::page)),
        r(Method::GET, "/api/board", View, get(board::list_fragment)),
        r(Method::GET, "/api/alarm", View, get(board::alarm_state)),
        r(Method::GET, "/events", View, get(sse::stream)),
        r(
            Method::GET,
            "/incidents/{id}",
            View,
            get(incident_page::page),
        ),
        r(
            Method::GET,
            "/api/incidents/{id}/live",
            View,
            get(incident_page::live_fragment),
        ),
        r(
            Method::GET,
            "/incidents/{id}/print",
            Officer,
            get(reports::print_incident),
        ),
        r(
            Method::GET,
            "/reports/print",
            Officer,
            get(reports::print_report),
        ),
        r(
            Method::GET,
            "/incidents/resolve-several",
            Officer,
            get(bulk_resolve::page),
        ),
        r(
            Method::POST,
            "/incidents/resolve-several",
            Officer,
            post(bulk_resolve::resolve),
        ),
        r(
            Method::POST,
            "/incidents/{id}/claim",
            Officer,
            post(incident_actions::claim),
        ),
        r(
            Method::POST,
            "/incidents/{id}/notes",
            Officer,
            post(incident_actions::note),
        ),
        r(
            Method::POST,
            "/incidents/{id}/level",
            Officer,
            post(incident_actions::level),
        ),
        r(
            Method::POST,
            "/incidents/{id}/called-911",
            Officer,
            post(incident_actions::called_911),
        ),
        r(
            Method::POST,
            "/incidents/{id}/resolve",
            Officer,
            post(incident_actions::resolve),
        ),
        r(
            Method::POST,
            "/incidents/{id}/reopen",
            Officer,
            post(incident_actions::reopen),
        ),
        r(Method::GET, "/stations", Officer, get(stations::page)),
        r(
            Method::POST,
            "/stations/{device_id}/status",
            Admin,
            post(stations::set_status),
        ),
        r(
            Method::POST,
            "/stations/{device_id}/resolve-open",
            Admin,
            post(stations::resolve_open),
        ),
        r(
            Method::POST,
            "/stations/{device_id}/approve",
            Admin,
            post(stations::approve),
        ),
        r(
            Method::POST,
            "/stations/{device_id}/location",
            Admin,
            post(stations::set_location),
        ),
        r(
            Method::POST,
            "/stations/{device_id}/retire",
            Admin,
            post(stations::retire),
        ),
        r(
            Method::POST,
            "/stations/tokens",
            Admin,
            post(stations::create_token),
        ),
        r(
            Method::POST,
            "/stations/tokens/{token_hash}/revoke",
            Admin,
            post(stations::revoke_token),
        ),
        r(Method::GET, "/reports", Officer, get(reports::page)),
        r(
            Method::GET,
            "/reports/incidents.csv",
            Officer,
            get(reports::csv),
        ),
        r(
            Method::GET,
            "/reports/chart.svg",
            Officer,
            get(reports::chart),
        ),
        r(Method::GET, "/audit", Admin, get(audit::page)),
        r(Method::GET, "/admin/cluster", Admin, get(cluster::page)),
        r(Method::GET, "/admin/users", Admin, get(admin_pages::users)),
        r(
            Method::POST,
            "/admin/users",
            Admin,
            post(admin_pages::add_user),
        ),
        r(
            Method::POST,
            "/admin/users/{username}/disable",
            Admin,
            post(admin_pages::disable_user),
        ),
        r(
            Method::POST,
            "/admin/users/{username}/reset-password",
            Admin,
            post(passwords::admin_reset),
        ),
        r(
            Method::POST,
            "/admin/users/{username}/totp/remove",
            Admin,
            post(totp_pages::admin_remove),
        ),
        r(
            Method::GET,
            "/admin/cameras",
            Admin,
            get(admin_pages::cameras),
        ),
        r(
            Method::GET,
            "/admin/channels",
            Admin,
            get(admin_pages::channels),
        ),
        r(
            Method::POST,
            "/admin/cameras",
            Admin,
            post(admin_pages::add_camera),
        ),
        r(
            Method::POST,
            "/admin/cameras/{id}/delete",
            Admin,
            post(admin_pages::delete_camera),
        ),
        r(
            Method::GET,
            "/admin/subnets",
            Admin,
            get(admin_pages::subnets),
        ),
        r(
            Method::POST,
            "/admin/subnets",
            Admin,
            post(admin_pages::add_subnet),
        ),
        r(
            Method::POST,
            "/admin/subnets/remove",
            Admin,
            post(admin_pages::remove_subnet),
        ),
        r(
            Method::GET,
            "/admin/apikeys",
            Admin,
            get(crate::integration::pages::list),
        ),
        r(
            Method::POST,
            "/admin/apikeys",
            Admin,
            post(crate::integration::pages::create),
        ),
        r(
            Method::POST,
            "/admin/apikeys/{id}/revoke",
            Admin,
            post(crate::integration::pages::revoke),
        ),
        r(
            Method::GET,
            "/admin/floorplans",
            Admin,
            get(floor_plans::list),
        ),
        r(
            Method::POST,
            "/api/admin/floorplans",
            Admin,
            post(floor_plans::upload),
        ),
        r(
            Method::POST,
            "/admin/floorplans/{id}/places",
            Admin,
            post(floor_plans::place),
        ),
        r(
            Method::POST,
            "/admin/floorplans/{id}/places/remove",
            Admin,
            post(floor_plans::unplace),
        ),
        r(
            Method::POST,
            "/admin/floorplans/{id}/delete",
            Admin,
            post(floor_plans::delete),
        ),
        r(
            Method::GET,
            "/floorplans/{id}/image",
            View,
            get(floor_plans::image),
        ),
        r(Method::GET, "/admin/phones", Admin, get(phones::page)),
        r(Method::POST, "/admin/phones", Admin, post(phones::put)),
        r(
            Method::POST,
            "/admin/phones/{device_name}/remove",
            Admin,
            post(phones::remove),
        ),
    ]);
    routes
}

/// Every route: what the access test walks.
pub fn specs() -> Vec<RouteSpec> {
    table().into_iter().map(|r| r.spec).collect()
}

/// The receiver's whole router: API + console, each protected route behind [`guard::guard`].
pub fn router(state: WebState) -> Router {
    router_for(state, Serves::Both)
}

/// The router of one listener: the routes it does not serve answer 404 there, like any
/// unknown path. Every console route is behind the allow-list first (before the session
/// guard), and carries HSTS once a real certificate is configured.
pub fn router_for(state: WebState, serves: Serves) -> Router {
    let allow = std::sync::Arc::new(state.console.settings.allow.clone());
    let hsts = state.console.settings.hsts;
    let mut router = Router::new();
    for route in table() {
        let wanted = match serves {
            Serves::Both => true,
            Serves::Api => !route.console,
            Serves::Console => route.console,
        };
        if !wanted {
            continue;
        }
        let mut handler = match route.spec.access {
            Access::Public => route.handler,
            access => route.handler.route_layer(middleware::from_fn_with_state(
                (state.clone(), access),
                guard::guard,
            )),
        };
        if route.console {
            if hsts {
                handler = handler.route_layer(middleware::map_response(guard::hsts));
            }
            // Added last, so it runs first.
            handler = handler.route_layer(middleware::from_fn_with_state(
                allow.clone(),
                guard::allow_list,
            ));
        }
        router = router.route(route.spec.path, handler);
    }
    crate::api::with_layers(router)
        .layer(middleware::map_response(guard::security_headers))
        .with_state(state)
}
