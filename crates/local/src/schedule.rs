//! Plays EventBridge's scheduled rules, which the AWS-compatible endpoint stores but never
//! fires: at each time the rule's expression names, its target input is sent to its
//! target queue, as EventBridge does with a constant `Input`.
//!
//! Expressions played: `rate(N minute|minutes|hour|hours|day|days)` and daily crons
//! `cron(M H * * ? *)`, the forms the template uses; others are refused at start.

use std::time::Duration;

use chrono::{DateTime, NaiveTime, Utc};
use herald_aws::describe;
use serde_norway::Value;
use tokio::task::JoinHandle;

use crate::{errors::LocalError, esm::StopToken, provision::Deployment};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Every {
    Period(Duration),
    /// Once a day at this UTC time.
    DailyAt(NaiveTime),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    /// The rule's logical id.
    pub rule: String,
    pub every: Every,
    pub queue_url: String,
    pub input: String,
}

pub fn parse_expression(expression: &str) -> Result<Every, LocalError> {
    let refuse = || LocalError::Template(format!("the local stack cannot play the schedule {expression:?}"));
    if let Some(rate) = expression.strip_prefix("rate(").and_then(|r| r.strip_suffix(')')) {
        let (n, unit) = rate.split_once(' ').ok_or_else(refuse)?;
        let n: u64 = n.parse().ok().filter(|n| *n > 0).ok_or_else(refuse)?;
        let seconds = match unit {
            "minute" | "minutes" => 60,
            "hour" | "hours" => 3600,
            "day" | "days" => 86_400,
            _ => return Err(refuse()),
        };
        return Ok(Every::Period(Duration::from_secs(n * seconds)));
    }
    let cron = expression.strip_prefix("cron(").and_then(|c| c.strip_suffix(')')).ok_or_else(refuse)?;
    match cron.split_whitespace().collect::<Vec<_>>().as_slice() {
        [minute, hour, "*", "*", "?", "*"] => {
            let time =
                NaiveTime::from_hms_opt(hour.parse().map_err(|_| refuse())?, minute.parse().map_err(|_| refuse())?, 0);
            time.map(Every::DailyAt).ok_or_else(refuse)
        }
        _ => Err(refuse()),
    }
}

impl Every {
    /// How long from `now` until the next firing.
    pub fn wait_from(&self, now: DateTime<Utc>) -> Duration {
        match self {
            Every::Period(period) => *period,
            Every::DailyAt(time) => {
                let today = now.date_naive().and_time(*time).and_utc();
                let next = if today > now { today } else { today + chrono::Duration::days(1) };
                (next - now).to_std().unwrap_or_default()
            }
        }
    }
}

/// Every scheduled rule of the template with a queue target.
pub fn schedules(deployment: &Deployment) -> Result<Vec<Schedule>, LocalError> {
    let template = &deployment.template;
    let mut schedules = Vec::new();
    for rule in template.resources_of_type("AWS::Events::Rule") {
        let Some(expression) = rule.properties.get("ScheduleExpression").and_then(Value::as_str) else { continue };
        let every = parse_expression(expression).map_err(|e| e.context(&rule.logical_id))?;
        for target in rule.properties.get("Targets").and_then(Value::as_sequence).into_iter().flatten() {
            let resolve = |name: &str| {
                target
                    .get(name)
                    .map(|v| template.resolve(v, &deployment.physical, &deployment.stack_name))
                    .transpose()
                    .map_err(|e| e.context(&rule.logical_id))
            };
            let arn = resolve("Arn")?.unwrap_or_default();
            let queue_url =
                deployment.physical.by_arn(&arn).and_then(|id| deployment.queue_url(id)).ok_or_else(|| {
                    LocalError::Template(format!(
                        "{}: the target {arn} is not one of the template's queues",
                        rule.logical_id
                    ))
                })?;
            let input = resolve("Input")?.ok_or_else(|| {
                LocalError::Template(format!("{}: the local stack plays only targets with an Input", rule.logical_id))
            })?;
            schedules.push(Schedule {
                rule: rule.logical_id.clone(),
                every: every.clone(),
                queue_url: queue_url.to_owned(),
                input,
            });
        }
    }
    Ok(schedules)
}

pub async fn fire(sqs: &aws_sdk_sqs::Client, schedule: &Schedule) -> Result<(), LocalError> {
    sqs.send_message()
        .queue_url(&schedule.queue_url)
        .message_body(&schedule.input)
        .send()
        .await
        .map_err(|e| LocalError::Aws(format!("firing {}: {}", schedule.rule, describe(&e))))?;
    Ok(())
}

/// Fires `schedule` at each of its times until `stop`.
pub fn spawn(sqs: aws_sdk_sqs::Client, schedule: Schedule, mut stop: StopToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            stop.sleep(schedule.every.wait_from(Utc::now())).await;
            if stop.is_stopped() {
                return;
            }
            if let Err(e) = fire(&sqs, &schedule).await {
                tracing::warn!(rule = %schedule.rule, error = %e, "a scheduled rule did not fire");
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_daily_crons_are_played() {
        assert_eq!(parse_expression("rate(5 minutes)").unwrap(), Every::Period(Duration::from_secs(300)));
        assert_eq!(parse_expression("rate(1 day)").unwrap(), Every::Period(Duration::from_secs(86_400)));
        let daily = parse_expression("cron(1 0 * * ? *)").unwrap();
        assert_eq!(daily, Every::DailyAt(NaiveTime::from_hms_opt(0, 1, 0).unwrap()));
    }

    #[test]
    fn other_expressions_are_refused() {
        for expression in ["rate(0 minutes)", "rate(5 weeks)", "cron(0 12 ? * MON-FRI *)", "at(2026-01-01T00:00:00)"] {
            assert!(parse_expression(expression).is_err(), "{expression}");
        }
    }

    #[test]
    fn a_daily_schedule_waits_until_its_next_time() {
        let daily = Every::DailyAt(NaiveTime::from_hms_opt(0, 1, 0).unwrap());
        let before = "2026-11-24T00:00:30Z".parse().unwrap();
        assert_eq!(daily.wait_from(before), Duration::from_secs(30));
        let after = "2026-11-24T00:02:00Z".parse().unwrap();
        assert_eq!(daily.wait_from(after), Duration::from_secs(86_400 - 60));
    }
}
