//! The API's routes: one table serves the router, the 405 answers and the OpenAPI check.

use herald_core::keys::Scope;
use lambda_http::http::Method;
use percent_encoding::percent_decode_str;

use crate::problem::Problem;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    OpenApi,
    GetUser(String),
    PutUser(String),
    DeleteUser(String),
    GetPreferences(String),
    PutPreferences(String),
    PostNotification,
    GetNotification(String),
    GetTemplate(String),
    PutTemplate(String),
    PostEvents,
    ListSegments,
    PostSegment,
    GetSegment(String),
    PutSegment(String),
    DeleteSegment(String),
    GetSegmentMembers(String),
    GetUserSegments(String),
    ListImports,
    GetImport(String),
    PostCampaign,
    GetCampaign(String),
    CancelCampaign(String),
    /// Public: an open pixel, click redirect or unsubscribe link from an email.
    Track(String),
}

/// Path templates (OpenAPI style) and the methods each allows.
pub const ROUTES: &[(&str, &[&str])] = &[
    ("/v1/openapi.json", &["GET"]),
    ("/v1/users/{id}", &["GET", "PUT", "DELETE"]),
    ("/v1/users/{id}/preferences", &["GET", "PUT"]),
    ("/v1/users/{id}/segments", &["GET"]),
    ("/v1/notifications", &["POST"]),
    ("/v1/notifications/{id}", &["GET"]),
    ("/v1/templates/{id}", &["GET", "PUT"]),
    ("/v1/events", &["POST"]),
    ("/v1/segments", &["GET", "POST"]),
    ("/v1/segments/{id}", &["GET", "PUT", "DELETE"]),
    ("/v1/segments/{id}/members", &["GET"]),
    ("/v1/imports", &["GET"]),
    ("/v1/imports/{id}", &["GET"]),
    ("/v1/campaigns", &["POST"]),
    ("/v1/campaigns/{id}", &["GET"]),
    ("/v1/campaigns/{id}/cancel", &["POST"]),
    ("/v1/t/{token}", &["GET"]),
];

fn decode(segment: &str) -> Result<String, Problem> {
    percent_decode_str(segment)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| Problem::not_found("A path parameter is not valid UTF-8"))
}

/// The route among `choices` for `method`, or 405 naming the methods the path allows.
fn pick(method: &Method, mut choices: Vec<(Method, Route)>) -> Result<Route, Problem> {
    if let Some(i) = choices.iter().position(|(m, _)| m == method) {
        return Ok(choices.swap_remove(i).1);
    }
    let allow: Vec<&str> = choices.iter().map(|(m, _)| m.as_str()).collect();
    Err(Problem::method_not_allowed(&allow))
}

impl Route {
    /// Matches a raw (percent-encoded) path. Unknown paths are 404, known paths with
    /// another method 405, before any key is checked, as API Gateway would.
    pub fn parse(method: &Method, raw_path: &str) -> Result<Route, Problem> {
        let segments: Vec<&str> = raw_path.strip_prefix('/').unwrap_or(raw_path).split('/').collect();
        match segments.as_slice() {
            ["v1", "openapi.json"] => pick(method, vec![(Method::GET, Route::OpenApi)]),
            ["v1", "users", id] if !id.is_empty() => {
                let id = decode(id)?;
                pick(
                    method,
                    vec![
                        (Method::GET, Route::GetUser(id.clone())),
                        (Method::PUT, Route::PutUser(id.clone())),
                        (Method::DELETE, Route::DeleteUser(id)),
                    ],
                )
            }
            ["v1", "users", id, "preferences"] if !id.is_empty() => {
                let id = decode(id)?;
                pick(
                    method,
                    vec![(Method::GET, Route::GetPreferences(id.clone())), (Method::PUT, Route::PutPreferences(id))],
                )
            }
            ["v1", "users", id, "segments"] if !id.is_empty() => {
                pick(method, vec![(Method::GET, Route::GetUserSegments(decode(id)?))])
            }
            ["v1", "notifications"] => pick(method, vec![(Method::POST, Route::PostNotification)]),
            ["v1", "notifications", id] if !id.is_empty() => {
                pick(method, vec![(Method::GET, Route::GetNotification(decode(id)?))])
            }
            ["v1", "templates", id] if !id.is_empty() => {
                let id = decode(id)?;
                pick(method, vec![(Method::GET, Route::GetTemplate(id.clone())), (Method::PUT, Route::PutTemplate(id))])
            }
            ["v1", "events"] => pick(method, vec![(Method::POST, Route::PostEvents)]),
            ["v1", "segments"] => {
                pick(method, vec![(Method::GET, Route::ListSegments), (Method::POST, Route::PostSegment)])
            }
            ["v1", "segments", id] if !id.is_empty() => {
                let id = decode(id)?;
                pick(
                    method,
                    vec![
                        (Method::GET, Route::GetSegment(id.clone())),
                        (Method::PUT, Route::PutSegment(id.clone())),
                        (Method::DELETE, Route::DeleteSegment(id)),
                    ],
                )
            }
            ["v1", "segments", id, "members"] if !id.is_empty() => {
                pick(method, vec![(Method::GET, Route::GetSegmentMembers(decode(id)?))])
            }
            ["v1", "imports"] => pick(method, vec![(Method::GET, Route::ListImports)]),
            ["v1", "imports", id] if !id.is_empty() => pick(method, vec![(Method::GET, Route::GetImport(decode(id)?))]),
            ["v1", "campaigns"] => pick(method, vec![(Method::POST, Route::PostCampaign)]),
            ["v1", "campaigns", id] if !id.is_empty() => {
                pick(method, vec![(Method::GET, Route::GetCampaign(decode(id)?))])
            }
            ["v1", "campaigns", id, "cancel"] if !id.is_empty() => {
                pick(method, vec![(Method::POST, Route::CancelCampaign(decode(id)?))])
            }
            ["v1", "t", token] if !token.is_empty() => pick(method, vec![(Method::GET, Route::Track(decode(token)?))]),
            _ => Err(Problem::not_found(format!("No route for {raw_path}"))),
        }
    }

    /// The scope a key needs; None means any valid key will do.
    pub fn scope(&self) -> Option<Scope> {
        match self {
            Route::OpenApi => None,
            Route::GetUser(_) | Route::GetPreferences(_) => Some(Scope::ProfilesRead),
            Route::PutUser(_) | Route::DeleteUser(_) | Route::PutPreferences(_) => Some(Scope::ProfilesWrite),
            Route::PostNotification => Some(Scope::NotificationsSend),
            Route::GetNotification(_) => Some(Scope::NotificationsRead),
            Route::GetTemplate(_) => Some(Scope::TemplatesRead),
            Route::PutTemplate(_) => Some(Scope::TemplatesWrite),
            Route::PostEvents => Some(Scope::EventsWrite),
            Route::ListSegments | Route::GetSegment(_) | Route::GetSegmentMembers(_) | Route::GetUserSegments(_) => {
                Some(Scope::SegmentsRead)
            }
            Route::PostSegment | Route::PutSegment(_) | Route::DeleteSegment(_) => Some(Scope::SegmentsWrite),
            Route::ListImports | Route::GetImport(_) => Some(Scope::ImportsRead),
            Route::GetCampaign(_) => Some(Scope::CampaignsRead),
            Route::PostCampaign | Route::CancelCampaign(_) => Some(Scope::CampaignsWrite),
            Route::Track(_) => None,
        }
    }

    /// A name for logs and metrics that carries no personal data.
    pub fn name(&self) -> &'static str {
        match self {
            Route::OpenApi => "GET /v1/openapi.json",
            Route::GetUser(_) => "GET /v1/users/{id}",
            Route::PutUser(_) => "PUT /v1/users/{id}",
            Route::DeleteUser(_) => "DELETE /v1/users/{id}",
            Route::GetPreferences(_) => "GET /v1/users/{id}/preferences",
            Route::PutPreferences(_) => "PUT /v1/users/{id}/preferences",
            Route::PostNotification => "POST /v1/notifications",
            Route::GetNotification(_) => "GET /v1/notifications/{id}",
            Route::GetTemplate(_) => "GET /v1/templates/{id}",
            Route::PutTemplate(_) => "PUT /v1/templates/{id}",
            Route::PostEvents => "POST /v1/events",
            Route::ListSegments => "GET /v1/segments",
            Route::PostSegment => "POST /v1/segments",
            Route::GetSegment(_) => "GET /v1/segments/{id}",
            Route::PutSegment(_) => "PUT /v1/segments/{id}",
            Route::DeleteSegment(_) => "DELETE /v1/segments/{id}",
            Route::GetSegmentMembers(_) => "GET /v1/segments/{id}/members",
            Route::GetUserSegments(_) => "GET /v1/users/{id}/segments",
            Route::ListImports => "GET /v1/imports",
            Route::GetImport(_) => "GET /v1/imports/{id}",
            Route::PostCampaign => "POST /v1/campaigns",
            Route::GetCampaign(_) => "GET /v1/campaigns/{id}",
            Route::CancelCampaign(_) => "POST /v1/campaigns/{id}/cancel",
            Route::Track(_) => "GET /v1/t/{token}",
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
        let paths = [
            "/",
            "/v1",
            "/v1/users",
            "/v1/users/",
            "/v1/users/a/b",
            "/v2/users/a",
            "/v1/templates",
            "/v1/segments/",
            "/v1/segments/a/b",
            "/v1/segments//members",
            "/v1/events/x",
            "/v1/imports/",
            "/v1/imports/a/b",
        ];
        for path in paths {
            assert_eq!(Route::parse(&Method::GET, path).unwrap_err().status, 404, "{path}");
        }
    }

    #[test]
    fn known_paths_with_another_method_are_405() {
        let problem = Route::parse(&Method::POST, "/v1/users/a").unwrap_err();
        assert_eq!(problem.status, 405);
        assert_eq!(Route::parse(&Method::GET, "/v1/notifications").unwrap_err().status, 405);
        assert_eq!(Route::parse(&Method::GET, "/v1/events").unwrap_err().status, 405);
        let problem = Route::parse(&Method::PATCH, "/v1/segments/s").unwrap_err();
        assert_eq!(problem.status, 405);
        assert_eq!(problem.detail, "This resource allows GET, PUT, DELETE");
    }

    #[test]
    fn segment_routes_name_their_ids() {
        assert_eq!(
            Route::parse(&Method::GET, "/v1/segments/vip/members").unwrap(),
            Route::GetSegmentMembers("vip".into())
        );
        assert_eq!(
            Route::parse(&Method::GET, "/v1/users/a%40b/segments").unwrap(),
            Route::GetUserSegments("a@b".into())
        );
        assert_eq!(Route::parse(&Method::POST, "/v1/segments").unwrap(), Route::PostSegment);
    }

    #[test]
    fn import_routes_are_read_only_and_need_imports_read() {
        assert_eq!(Route::parse(&Method::GET, "/v1/imports").unwrap(), Route::ListImports);
        let route = Route::parse(&Method::GET, "/v1/imports/imp_1").unwrap();
        assert_eq!(route, Route::GetImport("imp_1".into()));
        assert_eq!(route.scope(), Some(Scope::ImportsRead));
        assert_eq!(Route::ListImports.scope(), Some(Scope::ImportsRead));
        for path in ["/v1/imports", "/v1/imports/imp_1"] {
            let problem = Route::parse(&Method::POST, path).unwrap_err();
            assert_eq!((problem.status, problem.detail.as_str()), (405, "This resource allows GET"), "{path}");
        }
    }

    #[test]
    fn campaign_routes_name_their_ids_and_scopes() {
        assert_eq!(Route::parse(&Method::POST, "/v1/campaigns").unwrap(), Route::PostCampaign);
        let route = Route::parse(&Method::GET, "/v1/campaigns/c_1").unwrap();
        assert_eq!(route, Route::GetCampaign("c_1".into()));
        assert_eq!(route.scope(), Some(Scope::CampaignsRead));
        let route = Route::parse(&Method::POST, "/v1/campaigns/c_1/cancel").unwrap();
        assert_eq!(route, Route::CancelCampaign("c_1".into()));
        assert_eq!(route.scope(), Some(Scope::CampaignsWrite));
        assert_eq!(Route::PostCampaign.scope(), Some(Scope::CampaignsWrite));
        for (method, path, allow) in [
            (Method::GET, "/v1/campaigns", "POST"),
            (Method::DELETE, "/v1/campaigns/c_1", "GET"),
            (Method::GET, "/v1/campaigns/c_1/cancel", "POST"),
        ] {
            let problem = Route::parse(&method, path).unwrap_err();
            assert_eq!((problem.status, problem.detail), (405, format!("This resource allows {allow}")), "{path}");
        }
        for path in ["/v1/campaigns/", "/v1/campaigns//cancel", "/v1/campaigns/c_1/x"] {
            assert_eq!(Route::parse(&Method::POST, path).unwrap_err().status, 404, "{path}");
        }
    }

    #[test]
    fn every_route_in_the_table_parses_with_each_of_its_methods() {
        for (template, methods) in ROUTES {
            let path = template.replace("{id}", "x").replace("{token}", "x");
            for method in *methods {
                let method = Method::from_bytes(method.as_bytes()).unwrap();
                assert!(Route::parse(&method, &path).is_ok(), "{method} {path}");
            }
        }
    }
}
