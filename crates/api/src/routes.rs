//! The API's routes: one table serves the router, the 405 answers and the OpenAPI check.

use herald_core::Scope;
use lambda_http::http::Method;
use percent_encoding::percent_decode_str;

use crate::problem::Problem;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    OpenApi,
    GetUser(String),
    PutUser(String),
    DeleteUser(String),
}

/// Path templates (OpenAPI style) and the methods each allows.
pub const ROUTES: &[(&str, &[&str])] = &[("/v1/openapi.json", &["GET"]), ("/v1/users/{id}", &["GET", "PUT", "DELETE"])];

impl Route {
    /// Matches a raw (percent-encoded) path. Unknown paths are 404, known paths with
    /// another method 405, before any key is checked, as API Gateway would.
    pub fn parse(method: &Method, raw_path: &str) -> Result<Route, Problem> {
        let segments: Vec<&str> = raw_path.strip_prefix('/').unwrap_or(raw_path).split('/').collect();
        let (template, route) = match segments.as_slice() {
            ["v1", "openapi.json"] => (ROUTES[0], (*method == Method::GET).then_some(Route::OpenApi)),
            ["v1", "users", id] if !id.is_empty() => {
                let id = percent_decode_str(id)
                    .decode_utf8()
                    .map_err(|_| Problem::not_found("The user id in the path is not valid UTF-8"))?
                    .into_owned();
                let route = match *method {
                    Method::GET => Some(Route::GetUser(id)),
                    Method::PUT => Some(Route::PutUser(id)),
                    Method::DELETE => Some(Route::DeleteUser(id)),
                    _ => None,
                };
                (ROUTES[1], route)
            }
            _ => return Err(Problem::not_found(format!("No route for {raw_path}"))),
        };
        route.ok_or_else(|| Problem::method_not_allowed(template.1))
    }

    /// The scope a key needs; None means any valid key will do.
    pub fn scope(&self) -> Option<Scope> {
        match self {
            Route::OpenApi => None,
            Route::GetUser(_) => Some(Scope::ProfilesRead),
            Route::PutUser(_) | Route::DeleteUser(_) => Some(Scope::ProfilesWrite),
        }
    }

    /// A name for logs and metrics that carries no personal data.
    pub fn name(&self) -> &'static str {
        match self {
            Route::OpenApi => "GET /v1/openapi.json",
            Route::GetUser(_) => "GET /v1/users/{id}",
            Route::PutUser(_) => "PUT /v1/users/{id}",
            Route::DeleteUser(_) => "DELETE /v1/users/{id}",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_are_percent_decoded() {
        let route = Route::parse(&Method::GET, "/v1/users/ana%40example.com").unwrap();
        assert_eq!(route, Route::GetUser("ana@example.com".into()));
    }

    #[test]
    fn unknown_paths_are_404() {
        for path in ["/", "/v1", "/v1/users", "/v1/users/", "/v1/users/a/b", "/v2/users/a"] {
            assert_eq!(Route::parse(&Method::GET, path).unwrap_err().status, 404, "{path}");
        }
    }

    #[test]
    fn known_paths_with_another_method_are_405() {
        let problem = Route::parse(&Method::POST, "/v1/users/a").unwrap_err();
        assert_eq!(problem.status, 405);
    }
}
