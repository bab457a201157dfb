//! The imports API: the jobs of bulk profile imports (files dropped under `imports/` in
//! the imports bucket), as `GET /v1/imports` and `GET /v1/imports/{id}` show them.

use axum::{
    extract::{Path, State},
    http::StatusCode,
    response::Response,
};
use chrono::{DateTime, Utc};
use herald_core::{
    imports::{ImportJob, ImportJobsPage, ImportState},
    keys::Scope,
    validation::ValidationErrors,
};
use serde::Serialize;

use crate::{
    AppState, Routes,
    extract::{Query, json},
    problem::Problem,
};

pub fn routes() -> Routes {
    Routes::new().get("/v1/imports", Scope::ImportsRead, list).get("/v1/imports/{id}", Scope::ImportsRead, get)
}

/// A page of jobs, newest first: `?limit=` (1 to 100) and the `?cursor=` of the previous page.
async fn list(State(app): State<AppState>, Query(query): Query) -> Result<Response, Problem> {
    let (limit, cursor) =
        list_parameters(query.first("limit"), query.first("cursor"), herald_aws::dynamo::import_jobs::is_valid_cursor)?;
    let page = app.import_jobs.list(limit, cursor).await?;
    Ok(json(StatusCode::OK, &ImportList::from(page)))
}

async fn get(State(app): State<AppState>, Path(id): Path<String>) -> Result<Response, Problem> {
    // An id that could not name a job is not looked up.
    let job = if is_job_id(&id) { app.import_jobs.get(&id).await? } else { None };
    let job = job.ok_or_else(|| Problem::not_found("No such import"))?;
    Ok(json(StatusCode::OK, &ImportView::from(job)))
}

/// Jobs a page of `GET /v1/imports` holds unless `limit` says otherwise, and the most.
pub const DEFAULT_IMPORTS_LIMIT: u32 = 20;
pub const MAX_IMPORTS_LIMIT: u32 = 100;

/// A job as the API shows it: its progress and outcome, never its checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ImportView {
    pub job_id: String,
    pub bucket: String,
    pub key: String,
    pub state: ImportState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    pub gzip: bool,
    pub rows_read: u64,
    pub imported: u64,
    pub unchanged: u64,
    pub rejected: u64,
    pub bytes_done: u64,
    pub bytes_total: u64,
    /// `bytes_done / bytes_total`, from 0 to 1; 1 once done.
    pub progress: f64,
    pub unknown_columns: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    pub started_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
}

impl From<ImportJob> for ImportView {
    fn from(job: ImportJob) -> Self {
        let progress = progress(&job);
        Self {
            job_id: job.job_id,
            bucket: job.bucket,
            key: job.key,
            state: job.state,
            format: job.format,
            gzip: job.gzip,
            rows_read: job.rows_read,
            imported: job.imported,
            unchanged: job.unchanged,
            rejected: job.rejected,
            bytes_done: job.bytes_done,
            bytes_total: job.bytes_total,
            progress,
            unknown_columns: job.unknown_columns,
            errors_key: job.errors_key,
            failure: job.failure,
            started_at: job.started_at,
            updated_at: job.updated_at,
            finished_at: job.finished_at,
        }
    }
}

/// How far the job is through its file, from 0 to 1 (1 when done; an empty file is
/// 0 until then).
pub fn progress(job: &ImportJob) -> f64 {
    if job.state == ImportState::Done {
        return 1.0;
    }
    if job.bytes_total == 0 {
        return 0.0;
    }
    (job.bytes_done as f64 / job.bytes_total as f64).clamp(0.0, 1.0)
}

/// Whether `id` could name a job (1 to 128 characters of `A-Z`, `a-z`, `0-9`, `_` and
/// `-`): any other id names none, and is 404 without a look-up.
pub fn is_job_id(id: &str) -> bool {
    (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A page of `GET /v1/imports`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ImportList {
    pub imports: Vec<ImportView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

impl From<ImportJobsPage> for ImportList {
    fn from(page: ImportJobsPage) -> Self {
        Self { imports: page.jobs.into_iter().map(ImportView::from).collect(), next_cursor: page.next }
    }
}

/// The `limit` and `cursor` of `GET /v1/imports`, or 400 naming each one at fault.
/// `valid_cursor` tells a cursor the store could have returned.
pub fn list_parameters<'a>(
    limit: Option<&str>,
    cursor: Option<&'a str>,
    valid_cursor: impl Fn(&str) -> bool,
) -> Result<(u32, Option<&'a str>), Problem> {
    let mut errors = ValidationErrors::default();
    let limit = match limit {
        None => DEFAULT_IMPORTS_LIMIT,
        Some(v) => v.parse::<u32>().ok().filter(|n| (1..=MAX_IMPORTS_LIMIT).contains(n)).unwrap_or_else(|| {
            errors.add("limit", format!("must be a whole number from 1 to {MAX_IMPORTS_LIMIT}"));
            DEFAULT_IMPORTS_LIMIT
        }),
    };
    if let Some(c) = cursor
        && !valid_cursor(c)
    {
        errors.add("cursor", "is not a cursor this API returned: use the next_cursor of the previous page");
    }
    errors.into_result()?;
    Ok((limit, cursor))
}

#[cfg(test)]
mod tests {
    use herald_core::imports::Resume;

    use super::*;

    fn job(state: ImportState, bytes_done: u64, bytes_total: u64) -> ImportJob {
        let at = "2026-11-24T09:00:00Z".parse().unwrap();
        ImportJob {
            job_id: "imp_1".into(),
            bucket: "b".into(),
            key: "imports/users.csv".into(),
            state,
            format: Some("csv".into()),
            gzip: false,
            bytes_total,
            bytes_done,
            rows_read: 3,
            imported: 2,
            unchanged: 0,
            rejected: 1,
            unknown_columns: vec!["colour".into()],
            errors_key: None,
            failure: None,
            started_at: at,
            updated_at: at,
            finished_at: None,
            resume: Resume {
                offset: 77,
                line: 4,
                csv_header: Some(vec!["user_id".into()]),
                checkpoint: 9,
                invocations: 2,
            },
        }
    }

    #[test]
    fn progress_is_the_fraction_of_bytes_done_and_one_when_done() {
        assert_eq!(progress(&job(ImportState::Running, 25, 100)), 0.25);
        assert_eq!(progress(&job(ImportState::Running, 0, 0)), 0.0);
        assert_eq!(progress(&job(ImportState::Running, 150, 100)), 1.0);
        assert_eq!(progress(&job(ImportState::Done, 90, 100)), 1.0);
        assert_eq!(progress(&job(ImportState::Done, 0, 0)), 1.0);
        assert_eq!(progress(&job(ImportState::Failed, 50, 100)), 0.5);
    }

    #[test]
    fn the_view_never_shows_where_to_resume() {
        let view = serde_json::to_value(ImportView::from(job(ImportState::Running, 25, 100))).unwrap();
        assert!(view.get("resume").is_none(), "{view}");
        assert_eq!(view["state"], "running");
        assert_eq!(view["progress"], 0.25);
        assert_eq!(view["unknown_columns"], serde_json::json!(["colour"]));
        assert!(view.get("finished_at").is_none());
        for text in ["77", "checkpoint", "invocations", "csv_header"] {
            assert!(!view.to_string().contains(text), "{text} in {view}");
        }
    }

    #[test]
    fn bad_limits_and_cursors_are_named() {
        let valid = |c: &str| c == "good";
        assert_eq!(list_parameters(None, None, valid).unwrap(), (DEFAULT_IMPORTS_LIMIT, None));
        assert_eq!(list_parameters(Some("100"), Some("good"), valid).unwrap(), (100, Some("good")));
        for limit in ["0", "101", "-1", "x", ""] {
            let problem = list_parameters(Some(limit), None, valid).unwrap_err();
            assert_eq!(problem.status, 400, "{limit}");
            assert!(problem.detail.contains("limit"), "{limit}: {}", problem.detail);
        }
        let problem = list_parameters(Some("0"), Some("bad"), valid).unwrap_err();
        assert!(problem.detail.contains("limit") && problem.detail.contains("cursor"), "{}", problem.detail);
    }
}
