//! Message templates rendered with minijinja: HTML auto-escaping for email bodies, and
//! strict undefined variables, so a missing parameter is a clear error at send time
//! instead of a message with a hole in it.

use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde::{Deserialize, Serialize};

/// One channel's content of a template.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelContent {
    /// Email subject, push title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Plain text: the SMS, the push body, the email's text part, the webhook text.
    pub body: String,
    /// The email's HTML part; parameters inserted into it are HTML-escaped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Rendered {
    pub subject: Option<String>,
    pub body: String,
    pub html: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("template {part} could not be rendered: {message}")]
pub struct RenderError {
    pub part: &'static str,
    pub message: String,
}

const HTML: &str = "html";
const TEXT: &str = "text";

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|name| if name == HTML { AutoEscape::Html } else { AutoEscape::None });
    env
}

fn render_part(
    env: &Environment<'_>,
    part: &'static str,
    kind: &str,
    source: &str,
    params: &serde_json::Value,
) -> Result<String, RenderError> {
    let error = |e: minijinja::Error| RenderError { part, message: e.to_string() };
    let template = env.template_from_named_str(kind, source).map_err(error)?;
    template.render(minijinja::value::Serde(params)).map_err(error)
}

/// Checks that every part of `content` parses, without rendering it.
pub fn check(content: &ChannelContent) -> Result<(), RenderError> {
    let env = environment();
    let parts = [
        ("subject", content.subject.as_deref()),
        ("body", Some(content.body.as_str())),
        ("html", content.html.as_deref()),
    ];
    for (part, source) in parts {
        if let Some(source) = source {
            env.template_from_str(source).map_err(|e| RenderError { part, message: e.to_string() })?;
        }
    }
    Ok(())
}

pub fn render(content: &ChannelContent, params: &serde_json::Value) -> Result<Rendered, RenderError> {
    let env = environment();
    Ok(Rendered {
        subject: content.subject.as_deref().map(|s| render_part(&env, "subject", TEXT, s, params)).transpose()?,
        body: render_part(&env, "body", TEXT, &content.body, params)?,
        html: content.html.as_deref().map(|h| render_part(&env, "html", HTML, h, params)).transpose()?,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn content(body: &str, html: Option<&str>) -> ChannelContent {
        ChannelContent { subject: Some("Hi {{ name }}".into()), body: body.into(), html: html.map(Into::into) }
    }

    #[test]
    fn parameters_fill_every_part() {
        let out = render(
            &content("You owe {{ amount }}", Some("<p>{{ amount }}</p>")),
            &json!({"name": "Ana", "amount": "12 €"}),
        )
        .unwrap();
        assert_eq!(out.subject.as_deref(), Some("Hi Ana"));
        assert_eq!(out.body, "You owe 12 €");
        assert_eq!(out.html.as_deref(), Some("<p>12 €</p>"));
    }

    #[test]
    fn html_parts_escape_parameters_and_text_parts_do_not() {
        let out =
            render(&content("{{ name }}", Some("<b>{{ name }}</b>")), &json!({"name": "<script>x</script>"})).unwrap();
        assert_eq!(out.html.as_deref(), Some("<b>&lt;script&gt;x&lt;&#x2f;script&gt;</b>"));
        assert_eq!(out.body, "<script>x</script>");
    }

    #[test]
    fn a_missing_parameter_is_an_error_naming_the_part() {
        let err = render(&content("Due {{ due_date }}", None), &json!({"name": "Ana"})).unwrap_err();
        assert_eq!(err.part, "body");
        assert!(err.message.contains("undefined"), "{}", err.message);
    }

    #[test]
    fn check_refuses_a_template_that_does_not_parse() {
        let err = check(&content("{{ unclosed", None)).unwrap_err();
        assert_eq!(err.part, "body");
        assert!(check(&content("fine {{ x }}", Some("<p>{% if x %}y{% endif %}</p>"))).is_ok());
    }
}
